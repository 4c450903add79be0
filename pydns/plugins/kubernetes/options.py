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
    zonal: bool = False
    multicluster: list[str] = field(default_factory=list)
    snapshot: tuple[str, float] | None = None  # (path, interval)
    drift_check: float = 0.0  # seconds between drift checks; 0: none
    ipv6: str = "on"


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


def _positive_duration(opt: Directive, value: Token) -> float:
    try:
        seconds = parse_duration(value)
    except CorefileError as exc:
        raise opt.error(f"{PREFIX}{opt.name}: invalid interval '{value}': {exc.message}", value) from None
    if seconds <= 0:
        raise opt.error(f"{PREFIX}{opt.name}: the interval must be greater than 0, got '{value}'", value)
    return seconds


def _snapshot(opt: Directive, opts: Options) -> None:
    """``snapshot PATH [INTERVAL]``: the file's folder must exist (the file need not)."""
    from .snapshot import DEFAULT_INTERVAL

    args = _args(opt, 1, 2)
    path = _resolve(str(args[0]), args[0].file)
    if not os.path.isdir(os.path.dirname(path)):
        raise opt.error(f"{PREFIX}snapshot: no such directory: '{os.path.dirname(path)}'", args[0])
    if os.path.isdir(path):
        raise opt.error(f"{PREFIX}snapshot: '{args[0]}' is a directory, not a file", args[0])
    opts.snapshot = (path, _positive_duration(opt, args[1]) if len(args) == 2 else DEFAULT_INTERVAL)


def _drift_check(opt: Directive, opts: Options) -> None:
    opts.drift_check = _positive_duration(opt, _args(opt, 1, 1)[0])


def _ipv6(opt: Directive, opts: Options) -> None:
    (mode,) = _args(opt, 1, 1)
    if mode not in IPV6_MODES:
        raise opt.error(f"{PREFIX}wrong value for ipv6: {mode}, must be one of: {', '.join(IPV6_MODES)}", mode)
    opts.ipv6 = str(mode)


IPV6_MODES = ("auto", "on", "off")
# Options beyond CoreDNS's.
BEYOND = {"snapshot": _snapshot, "drift_check": _drift_check, "ipv6": _ipv6}


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
        elif name == "zonal":
            _args(opt, 0, 0)
            opts.zonal = True
        elif name == "multicluster":
            opts.multicluster = normalize_zones(_args(opt, 0), [])  # none: no multi-cluster zone, as CoreDNS
        elif name in BEYOND:
            BEYOND[name](opt, opts)
        else:
            raise opt.error(f"{PREFIX}unknown property '{name}'")
    for zone in opts.multicluster:
        if zone not in opts.zones:
            raise given["multicluster"].error(f"{PREFIX}is not authoritative for the multicluster zone {zone} "
                                              f"(authoritative zones: {' '.join(opts.zones)})")
    if opts.zonal and opts.noendpoints:
        raise given["zonal"].error(f"{PREFIX}zonal requires the endpoint cache; remove noendpoints")
    if opts.namespaces and opts.namespace_labels is not None:
        raise given["namespace_labels"].error(f"{PREFIX}namespaces and namespace_labels cannot both be set")
    if opts.manifests:
        for name in CONNECTION_OPTIONS + ("snapshot", "drift_check"):
            if name in given:
                raise given[name].error(f"{PREFIX}'{name}' cannot be combined with 'manifests': the objects come "
                                        f"from the files")
    return opts
