"""local — answers queries for localhost names and the loopback reverse zones itself.

Syntax::

    local
    local {
        localhost_prefix on|off
    }

The zones ``localhost``, ``0.in-addr.arpa``, ``127.in-addr.arpa`` and ``255.in-addr.arpa``
are answered here and never passed on: ``localhost.`` has A 127.0.0.1 and AAAA ::1, the
zone apexes SOA and NS records, ``1.0.0.127.in-addr.arpa.`` a PTR to ``localhost.``;
anything else in them is NODATA or NXDOMAIN with the zone's SOA (TTL 604800).  Names under
``.localhost.`` and, while ``localhost_prefix`` is ``on`` (the default, kept for older
setups), names starting with ``localhost.`` answer A 127.0.0.1 and AAAA ::1 (other types:
NODATA); each such query is counted in ``coredns_local_localhost_requests_total``.
"""

from __future__ import annotations

from dnslib import AAAA, NS, PTR, RR, SOA, A

from pydns import metrics
from pydns.corefile import Directive
from pydns.plugin import Plugin, expect_args, register, unknown_option
from pydns.wire import NOERROR, NXDOMAIN, Answer, Request, label_from_wire
from pydns.zones import in_wire_zones, wire_lookup, zones_by_wire

ZONES = ["localhost.", "0.in-addr.arpa.", "127.in-addr.arpa.", "255.in-addr.arpa."]
ZONE_BY_WIRE = zones_by_wire(ZONES)
LOCALHOST = b"\x09localhost\x00"
TTL = 604800
TYPE_A, TYPE_NS, TYPE_SOA, TYPE_PTR, TYPE_AAAA = 1, 2, 6, 12, 28
_KEPT_MAX = 10000

localhost_requests = metrics.counter(
    "coredns_local_localhost_requests_total",
    "Counter of localhost.<domain> requests.",
)


def soa(origin) -> RR:
    return RR(origin, TYPE_SOA, ttl=TTL, rdata=SOA("localhost.", "root.localhost.", (1, 0, 0, 0, TTL)))


@register("local")
class Local(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        self.prefix = True
        self._kept: dict[tuple, Answer] = {}

    def setup(self, d: Directive) -> None:
        expect_args(d, 0, 0)
        for opt in d.options:
            if opt.name != "localhost_prefix":
                raise unknown_option(d, opt)
            args = expect_args(opt, 1, 1)
            if args[0] not in ("on", "off"):
                raise opt.error(f"plugin/local: localhost_prefix expects 'on' or 'off', got '{args[0]}'", args[0])
            self.prefix = args[0] == "on"

    def serve(self, req: Request):
        # Compared in wire form, label by label: an escaped dot inside a label is no boundary.
        key = req.key
        special = key != LOCALHOST and (
            in_wire_zones(key, (LOCALHOST,)) or (self.prefix and key[:10] == LOCALHOST[:10]))
        zone = None
        if special:
            localhost_requests.inc()
        else:
            zone = wire_lookup(key, ZONE_BY_WIRE)
            if zone is None:
                return self.next.serve(req)
        kept_as = (key, req.qtype)
        answer = self._kept.get(kept_as)
        if answer is None:
            answer = self._answer(req, req.lname, zone, special)
            if len(self._kept) >= _KEPT_MAX:
                self._kept.clear()
            self._kept[kept_as] = answer
        return answer

    def _answer(self, req: Request, name: str, zone: str | None, special: bool) -> Answer:
        owner = label_from_wire(req.key)
        qtype = req.qtype
        answer, authority, rcode = [], [], NOERROR
        if special or name == "localhost.":
            if qtype == TYPE_A:
                answer = [RR(owner, TYPE_A, ttl=TTL, rdata=A("127.0.0.1"))]
            elif qtype == TYPE_AAAA:
                answer = [RR(owner, TYPE_AAAA, ttl=TTL, rdata=AAAA("::1"))]
        if not special:
            if name in ZONES and qtype == TYPE_SOA:
                answer = [soa(owner)]
            elif name in ZONES and qtype == TYPE_NS:
                answer = [RR(owner, TYPE_NS, ttl=TTL, rdata=NS("localhost."))]
            elif name == "1.0.0.127.in-addr.arpa." and qtype == TYPE_PTR:
                answer = [RR(owner, TYPE_PTR, ttl=TTL, rdata=PTR("localhost."))]
        if not answer:
            if special or name in ZONES:
                authority = [soa(owner)]  # NODATA at a name that exists
            elif name == "1.0.0.127.in-addr.arpa.":
                authority = [soa(zone)]
            else:
                authority, rcode = [soa(zone)], NXDOMAIN
        return Answer.build(owner, qtype, rcode, answer, authority, aa=False, plugin=self.name)
