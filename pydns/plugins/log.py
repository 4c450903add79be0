"""log — one line per query, in CoreDNS's Common Log Format.

Syntax::

    log [NAMES...] [FORMAT] {
        class CLASSES...
    }

NAMES limits logging to queries in those zones (default: all).  FORMAT uses CoreDNS's
placeholders (``{remote}``, ``{port}``, ``{>id}``, ``{type}``, ``{class}``, ``{name}``,
``{proto}``, ``{size}``, ``{>do}``, ``{>bufsize}``, ``{rcode}``, ``{>rflags}``,
``{rsize}``, ``{duration}``, ``{>opcode}``, ``{local}``: the address the query was sent
to, ``{/LABEL}``: a *metadata* label such as ``{/kubernetes/client-namespace}``, ``-`` when
the query has none), or the shortcuts ``{common}`` and ``{combined}``.  CLASSES: ``success``, ``denial``,
``error``, ``all`` (default).  A query that gets no reply at all (*acl*'s ``drop``) is
logged as CoreDNS logs it: ``{rcode}`` and ``{>rflags}`` are ``-``, ``{rsize}`` is 0, and
its class is ``error``.

``{name}`` is printed as miekg/dns prints names: special characters escaped with a
backslash (``\\.``, ``\\ ``) and other octets outside printable ASCII as ``\\DDD``
(a newline is ``\\010``), so a query name cannot forge a log line.
"""

from __future__ import annotations

import logging
import re
import time

from pydns.corefile import Directive
from pydns.plugin import NoReply, Plugin, expect_args, register, unknown_option
from pydns.wire import (AA, AD, CD, NOERROR, NXDOMAIN, QR, RA, RD, TC, Answer, Request, class_name, rcode_of,
                        type_name)
from pydns.zones import fqdn, in_wire_zones, to_wire

COMMON = '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}'
COMBINED = COMMON + ' "{>opcode}"'
CLASSES = ("success", "denial", "error", "all")
_PLACEHOLDER = re.compile(r"\{[^{}]+\}")
_FLAG_NAMES = ((QR, "qr"), (AA, "aa"), (TC, "tc"), (RD, "rd"), (RA, "ra"), (AD, "ad"), (CD, "cd"))
_OPCODES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}

querylog = logging.getLogger("querylog")


def classify(answer: Answer | None) -> str:
    if answer is None:  # no reply at all: an error, as CoreDNS classifies a missing response
        return "error"
    if answer.rcode == NOERROR:
        return "success" if answer.an else "denial"
    if answer.rcode == NXDOMAIN:
        return "denial"
    return "error"


def _local_ip(req: Request) -> str:
    """The address the query was sent to: read from the datagram on a UDP listener bound to
    every address, else the listener's own (``dns://127.0.0.1:53``); IPv6 in brackets."""
    ip = getattr(req, "local_ip", None)
    if ip is None and req.local:
        ip = req.local.rpartition(":")[0].partition("//")[2].strip("[]")
    if not ip:
        return "-"
    return f"[{ip}]" if ":" in ip else ip


class _Rule:
    def __init__(self, zones: list[str], fmt: str, classes: set[str]):
        # Matched on wire names: a text name may hold an escaped dot (``a\.b``).
        self.zones, self.classes = frozenset(to_wire(z) for z in zones), classes
        self.fmt = fmt.replace("{common}", COMMON).replace("{combined}", COMBINED)


@register("log")
class Log(Plugin):
    multiple = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.rules: list[_Rule] = []

    def setup(self, d: Directive) -> None:
        args = list(d.args)
        fmt = COMMON
        if args and ("{" in args[-1] or (len(args) > 1 and args[-1].quoted)):
            fmt = args.pop()
        zones = [fqdn(a) for a in args] or ["."]
        classes: set[str] = set()
        for opt in d.options:
            if opt.name != "class":
                raise unknown_option(d, opt)
            for c in expect_args(opt, 1):
                if c not in CLASSES:
                    raise opt.error(f"plugin/log: unknown response class '{c}'", c)
                classes.add(str(c))
        if not classes or "all" in classes:
            classes = {"all"}
        self.rules.append(_Rule(zones, fmt, classes))

    def serve(self, req: Request):
        start = time.perf_counter()
        result = self.next.serve(req)
        if result.__class__ is Answer:
            return self._log(req, result, start)
        return self._later(req, result, start)

    async def _later(self, req: Request, result, start: float) -> Answer:
        try:
            answer = await result
        except NoReply:  # acl's drop: logged as CoreDNS logs a query nothing answered
            self._log(req, None, start)
            raise
        return self._log(req, answer, start)

    def _log(self, req: Request, answer: Answer | None, start: float) -> Answer | None:
        for rule in self.rules:
            if not in_wire_zones(req.key, rule.zones):
                continue
            if "all" not in rule.classes and classify(answer) not in rule.classes:
                continue
            out = req.render(answer) if answer is not None else b""
            duration = time.perf_counter() - start
            querylog.info(self.format(rule.fmt, req, answer, out, duration))
            break
        return answer

    @staticmethod
    def format(fmt: str, req: Request, answer: Answer | None, out: bytes, duration: float) -> str:
        """The log line; ``answer`` None (and ``out`` empty) for a query that gets no reply:
        its rcode and flags are ``-``, its size 0."""
        remote = req.remote[0] if req.remote else "-"
        if ":" in remote:
            remote = f"[{remote}]"
        flags = int.from_bytes(out[2:4], "big") if len(out) >= 4 else None
        values = {
            "{remote}": remote,
            "{port}": str(req.remote[1]) if req.remote else "-",
            "{local}": _local_ip(req),
            "{>id}": str(req.id),
            "{type}": type_name(req.qtype),
            "{class}": class_name(req.qclass),
            "{name}": req.name,  # escaped (presentation format): a name cannot forge a log line
            "{proto}": req.proto,
            "{size}": str(len(req.data)),
            "{>do}": "true" if req.do else "false",
            "{>bufsize}": str(req.edns_size or 512),
            "{rcode}": rcode_of(answer) if answer is not None else "-",
            "{>rflags}": ",".join(n for bit, n in _FLAG_NAMES if flags & bit) if flags is not None else "-",
            "{rsize}": str(len(out)),
            "{duration}": f"{duration:.9f}".rstrip("0").rstrip(".") + "s",
            "{>opcode}": _OPCODES.get(req.opcode, str(req.opcode)),
        }
        def value(m: re.Match) -> str:
            placeholder = m.group(0)
            if placeholder.startswith("{/"):
                return _metadata(req, placeholder[2:-1])
            return values.get(placeholder, "-")

        return _PLACEHOLDER.sub(value, fmt)


def _metadata(req: Request, label: str) -> str:
    """A metadata label's value, ``-`` when the query has none; characters outside printable
    ASCII as ``\\DDD``, so that a value (a pod's label) cannot forge a log line."""
    found = (getattr(req, "metadata", None) or {}).get(label)
    if found is None:
        return "-"
    return "".join(c if " " <= c <= "~" and c != "\\" else f"\\{ord(c):03d}" for c in str(found))
