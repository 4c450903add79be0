"""Reading the ``kubernetes`` directive: zones and options, with CoreDNS's defaults and errors."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from pydns.corefile import CorefileError, Directive, Token
from pydns.plugin import parse_duration
from pydns.zones import normalize_zones

from .selector import Selector, SelectorError

log = logging.getLogger("plugin/kubernetes")

PREFIX = "plugin/kubernetes: "
POD_MODES = ("disabled", "verified", "insecure")
# Options CoreDNS documents that this implementation does not offer: refused, never ignored.
UNSUPPORTED = {
    "multicluster": "multicluster (MCS-API ServiceImports) is not supported",
    "zonal": "zone-scoped names are not supported",
}
CONNECTION_OPTIONS = ("endpoint", "tls", "kubeconfig", "apiserver_qps", "apiserver_burst", "apiserver_max_inflight")


@dataclass
class Options:
    zones: list[str]
    endpoint: str | None = None
    tls: tuple[str, str, str] | None = None
    kubeconfig: tuple[str, str | None] | None = None
    qps: float | None = None
    burst: int | None = None
    max_inflight: int = 0
    namespaces: set[str] = field(default_factory=set)
    labels: Selector | None = None
    namespace_labels: Selector | None = None
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = 5
    noendpoints: bool = False
    fallthrough: list[str] | None = None
    ignore_empty_service: bool = False
    startup_timeout: float = 5.0
    manifests: list[str] = field(default_factory=list)


def _arg_error(opt: Directive) -> CorefileError:
    last = opt.args[-1] if opt.args else opt.name
    return opt.error(f"{PREFIX}wrong argument count or unexpected line ending after '{last}'", last)


def _args(opt: Directive, low: int, high: int | None = None) -> list[Token]:
    if opt.block is not None:
        raise opt.error(f"{PREFIX}'{opt.name}' takes no block")
    if len(opt.args) < low or (high is not None and len(opt.args) > high):
        raise _arg_error(opt)
    return opt.args


def _selector(opt: Directive, what: str) -> Selector:
    text = " ".join(_args(opt, 1))
    try:
        return Selector(text)
    except SelectorError as exc:
        raise opt.error(f"{PREFIX}unable to parse {what} selector value: '{text}': {exc}", opt.args[0]) from None


def _not_negative(opt: Directive, convert, what: str):
    """The one argument of ``opt`` as a number >= 0 (CoreDNS's apiserver_* checks and messages)."""
    value = _args(opt, 1, 1)[0]
    try:
        number = convert(str(value))
    except ValueError:
        raise opt.error(f'{PREFIX}invalid {opt.name} "{value}": not {what}', value) from None
    if number < 0:
        raise opt.error(f"{PREFIX}{opt.name} must be >= 0", value)
    return number


def _resolve(path: str, corefile: str) -> str:
    """A relative manifests path is taken from the Corefile's directory."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(corefile)), path)


def parse(d: Directive, server_zones: list[str]) -> Options:
    opts = Options(zones=normalize_zones(d.args, server_zones))
    if all(z.endswith(("in-addr.arpa.", "ip6.arpa.")) for z in opts.zones):
        raise d.error(f"{PREFIX}non-reverse zone name must be used")
    given: dict[str, Directive] = {}
    for opt in d.options:
        name = str(opt.name)
        given[name] = opt
        if name == "endpoint_pod_names":
            _args(opt, 0, 0)
            opts.endpoint_pod_names = True
        elif name == "pods":
            (mode,) = _args(opt, 1, 1)
            if mode not in POD_MODES:
                raise opt.error(f"{PREFIX}wrong value for pods: {mode},  must be one of: disabled, verified, insecure",
                                mode)
            opts.pods = str(mode)
        elif name == "namespaces":
            opts.namespaces.update(str(a) for a in _args(opt, 1))
        elif name == "endpoint":
            args = _args(opt, 1)
            if len(args) > 1:
                log.warning("Multiple endpoints have been deprecated, only the first specified endpoint '%s' is used",
                            args[0])
            opts.endpoint = str(args[0])
        elif name == "tls":
            cert, key, ca = _args(opt, 3, 3)
            opts.tls = (str(cert), str(key), str(ca))
        elif name == "labels":
            opts.labels = _selector(opt, "label")
        elif name == "namespace_labels":
            opts.namespace_labels = _selector(opt, "namespace_label")
        elif name == "fallthrough":
            opts.fallthrough = normalize_zones(_args(opt, 0), ["."])
        elif name == "ttl":
            value = _args(opt, 1, 1)[0]
            try:
                ttl = int(str(value))
            except ValueError:
                raise opt.error(f"{PREFIX}ttl must be an integer, got '{value}'", value) from None
            if ttl < 0 or ttl > 3600:
                raise opt.error(f"{PREFIX}ttl must be in range [0, 3600]: {ttl}", value)
            opts.ttl = ttl
        elif name == "noendpoints":
            _args(opt, 0, 0)
            opts.noendpoints = True
        elif name == "ignore":
            value = _args(opt, 1, 1)[0]
            if value != "empty_service":
                raise opt.error(f"{PREFIX}unable to parse ignore value: '{value}'", value)
            opts.ignore_empty_service = True
        elif name == "kubeconfig":
            args = _args(opt, 1, 2)
            path = os.path.expanduser(str(args[0]))
            if not os.path.exists(path):
                raise opt.error(f"{PREFIX}unable to load kubeconfig '{args[0]}': no such file or directory", args[0])
            opts.kubeconfig = (path, str(args[1]) if len(args) == 2 else None)
        elif name == "startup_timeout":
            value = _args(opt, 1, 1)[0]
            try:
                opts.startup_timeout = parse_duration(value)
            except CorefileError as exc:
                raise opt.error(f"{PREFIX}failed to parse startup_timeout: {value}, {exc.message}", value) from None
        elif name == "apiserver_qps":
            opts.qps = _not_negative(opt, float, "a number")
        elif name == "apiserver_burst":
            opts.burst = _not_negative(opt, int, "an integer")
        elif name == "apiserver_max_inflight":
            opts.max_inflight = _not_negative(opt, int, "an integer")
        elif name == "manifests":
            for arg in _args(opt, 1):
                path = _resolve(str(arg), arg.file)
                if not os.path.exists(path):
                    raise opt.error(f"{PREFIX}manifests: no such file or directory: '{arg}'", arg)
                opts.manifests.append(path)
        elif name in UNSUPPORTED:
            raise opt.error(f"{PREFIX}option '{name}' is not supported: {UNSUPPORTED[name]}")
        else:
            raise opt.error(f"{PREFIX}unknown property '{name}'")
    if opts.namespaces and opts.namespace_labels is not None:
        raise given["namespace_labels"].error(f"{PREFIX}namespaces and namespace_labels cannot both be set")
    if opts.manifests:
        for name in CONNECTION_OPTIONS:
            if name in given:
                raise given[name].error(f"{PREFIX}'{name}' cannot be combined with 'manifests': the objects come "
                                        f"from the files")
    return opts
