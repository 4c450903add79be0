"""Plugins: the base class, the registry and the fixed execution order.

A plugin module under ``pydns/plugins/`` defines a subclass of ``Plugin`` decorated with
``@register("name")``.  For each server block that names it, one instance is made; its
``setup`` reads the directive(s) and raises ``CorefileError`` (via ``directive.error``) for
bad options.  In the chain, ``serve(req)`` returns an ``Answer``, an awaitable of one, or
hands the query on with ``self.next.serve(req)``.  Plugins run in ``ORDER`` (CoreDNS's
plugin.cfg), whatever their order in the Corefile.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import pkgutil
import re
from typing import Any, Awaitable, Callable, Union

from pydns.corefile import CorefileError, Directive, Token
from pydns.wire import SERVFAIL, Answer, Request, status

# CoreDNS's plugin.cfg: the order plugins run in.  Names here that this build does not
# register are reported as "not available" rather than "unknown".  ``explain`` is pydns's
# own (an HTTP endpoint beside ready's; it serves no queries, so its place is only a name).
ORDER = (
    "root metadata geoip cancel proxyproto quic grpc_server https https3 timeouts multisocket reload "
    "nsid bufsize bind debug trace ready explain health pprof shed prometheus errors log dnstap local dns64 "
    "any chaos loadbalance tsig rewrite autopath acl cache header dnssec tls minimal template "
    "transfer hosts route53 azure clouddns k8s_external kubernetes file auto secondary etcd loop "
    "forward grpc erratic whoami on sign view nomad"
).split()

# Plugins that only a distribution's own CoreDNS build has: named in the error, so that an
# operator knows the line is not a typo but a plugin pydns (like upstream CoreDNS) lacks.
FOREIGN = {
    "ocp_dnsnameresolver": "OpenShift-specific (OpenShift's own CoreDNS build adds it for DNSNameResolver "
                           "objects); neither CoreDNS nor pydns has it: remove this block to run pydns",
}

Result = Union[Answer, Awaitable[Answer]]

REGISTRY: dict[str, type["Plugin"]] = {}


class DNSError(Exception):
    """An expected failure that answers with ``rcode`` (the errors plugin logs it)."""

    def __init__(self, rcode: int, message: str):
        super().__init__(message)
        self.rcode = rcode


class NoReply(asyncio.CancelledError):
    """Raised by an awaitable answer whose query gets no reply at all (acl's ``drop``).

    A cancellation, so that the plugins it passes on its way out (which turn an ``Exception``
    into SERVFAIL) let it through; ``pydns.transport.settle`` makes it None, and the listeners
    send nothing and serve the next query.  The plugin notes why in ``req.trace``.
    """


def register(name: str) -> Callable[[type["Plugin"]], type["Plugin"]]:
    if name not in ORDER:
        raise ValueError(f"plugin {name!r} has no place in the order table")

    def deco(cls: type[Plugin]) -> type[Plugin]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


_loaded = False


def load_plugins() -> dict[str, type["Plugin"]]:
    """Import every module of ``pydns.plugins`` so that each registers itself."""
    global _loaded
    if not _loaded:
        import pydns.plugins as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
        _loaded = True
    return REGISTRY


class Plugin:
    """Base of every plugin.  Subclasses override ``setup`` and usually ``serve``."""

    name = "plugin"
    #: may the directive appear more than once in a server block (each line goes to setup)
    multiple = False
    #: does ``ready()`` matter to the ready plugin
    reports_ready = False
    #: may a UDP listener keep this plugin's replies by the query's bytes (pydns.replies):
    #: its part in a reply depends only on those bytes and on state whose every change it
    #: reports with ``pydns.replies.changed()``, and any effect it has per query is listed
    #: in ``req.memo_hooks``.  A plugin that answers then sets ``req.memo_until`` from
    #: ``keeps``; one that passes a query on vetoes with ``req.memo_until = 0.0`` where it
    #: did something per query.
    memoizable = False
    #: set when the chain is built: ``math.inf`` when this plugin and every one before it in
    #: the chain are memoizable (its replies may be kept), else 0.0
    keeps = 0.0

    def __init__(self, server: "Any") -> None:
        # ``server`` is the ServerConfig of the block: zones, port, shared services.
        self.server = server
        self.next: Plugin | None = None
        self.log = logging.getLogger(f"plugin/{self.name}")

    def setup(self, directive: Directive) -> None:
        """Read the directive's arguments and options; the default takes none."""
        expect_args(directive, 0, 0)
        expect_no_block(directive)

    def serve(self, req: Request) -> Result:
        return self.next.serve(req)

    async def start(self) -> None:
        """Called before the server takes queries (open connections, listeners, watches)."""

    async def started(self) -> None:
        """Called once the listeners are open and this configuration is serving."""

    async def lameduck(self) -> None:
        """Called on shutdown while the listeners still answer (health's lameduck waits here)."""

    async def stop(self) -> None:
        """Called when the configuration is replaced or the server stops."""

    def ready(self) -> bool:
        return True

    def explain(self, req: Request, answer: Answer) -> tuple[str, dict] | None:
        """Why this plugin gave ``answer`` to ``req``, for ``pydns explain``: (reason in words,
        fields), or None when it has nothing to add.  Asked right after it answered."""
        return None


class EndOfChain(Plugin):
    """What a query meets when every plugin passed it on: SERVFAIL, as in CoreDNS."""

    name = "(end)"

    def serve(self, req: Request) -> Result:
        answer = status(SERVFAIL)
        return answer


# ---------------------------------------------------------------- chaining results


def then(result: Result, fn: Callable[[Answer], Result]) -> Result:
    """Apply ``fn`` to an answer that may still be on its way."""
    if isinstance(result, Answer):
        return fn(result)
    return _then_async(result, fn)


async def _then_async(result: Awaitable[Answer], fn: Callable[[Answer], Result]) -> Answer:
    out = fn(await result)
    if not isinstance(out, Answer) and inspect.isawaitable(out):
        out = await out
    return out


class PerAnswer:
    """What a plugin made of ready answers (a shortened or re-flagged copy), kept per answer
    object: the plugins after it return the same answer to every query for a name, so the
    copy is made once.  At most ``limit`` are kept; the table is emptied when full."""

    __slots__ = ("_kept", "_limit")

    def __init__(self, limit: int = 10000):
        self._kept: dict[int, tuple[Answer, Answer]] = {}
        self._limit = limit

    def get(self, answer: Answer) -> Answer | None:
        kept = self._kept.get(id(answer))
        # The answer itself is held, so its id cannot be reused while the entry lives.
        return kept[1] if kept is not None and kept[0] is answer else None

    def keep(self, answer: Answer, made: Answer) -> Answer:
        if len(self._kept) >= self._limit:
            self._kept.clear()
        self._kept[id(answer)] = (answer, made)
        return made


async def resolve(result: Result) -> Answer:
    return result if isinstance(result, Answer) else await result


# ---------------------------------------------------------------- argument helpers


def expect_args(d: Directive, low: int, high: int | None = None, plugin: str | None = None) -> list[Token]:
    """The arguments of ``d``, or an error if there are not ``low`` to ``high`` of them.

    ``d`` is a plugin's directive, or (naming the ``plugin``) one option line of its block.
    """
    n = len(d.args)
    if n < low or (high is not None and n > high):
        if plugin is None:
            prefix = f"plugin/{d.name}:"
            if high == 0:
                raise d.error(f"{prefix} takes no arguments, found '{d.args[0]}'", d.args[0])
        else:
            prefix = f"plugin/{plugin}: {d.name}:"
        if high is None:
            want = f"at least {low}"
        elif high == 0:
            want = "none"
        elif low == high:
            want = f"exactly {low}"
        else:
            want = f"{low} to {high}"
        where = d.args[high] if high is not None and n > high else d.name
        raise d.error(f"{prefix} wrong argument count: want {want}, got {n}", where)
    return d.args


def expect_no_block(d: Directive) -> None:
    if d.block:
        opt = d.block[0]
        raise opt.error(f"plugin/{d.name}: unknown property '{opt.name}'")


def unknown_option(d: Directive, option: Directive) -> CorefileError:
    return option.error(f"plugin/{d.name}: unknown property '{option.name}'")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(tok: Token, plugin: str = "", negative: str | None = None) -> float:
    """A Go duration (``5s``, ``1m30s``, ``250ms``) in seconds.

    ``negative`` is the error for a negative duration (by default it is just invalid).
    """
    text = str(tok)
    prefix = f"plugin/{plugin}: " if plugin else ""
    if negative is not None and text.startswith("-"):
        raise tok.error(f"{prefix}{negative}")
    if text in ("0",):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise tok.error(f"{prefix}invalid duration '{text}'")
    return total


_INT = re.compile(r"[+-]?\d+\Z")  # what Go's strconv.Atoi takes


def is_int(text: str) -> bool:
    """Is ``text`` a whole number, as Go's ``strconv.Atoi`` reads one?"""
    return _INT.match(text) is not None


def parse_int(tok: Token, plugin: str, what: str = "value") -> int:
    """A whole number, as Go's ``strconv.Atoi`` reads one."""
    if not is_int(str(tok)):
        raise tok.error(f"plugin/{plugin}: {what} must be an integer, got '{tok}'")
    return int(str(tok))
