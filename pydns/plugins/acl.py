"""acl — allows, blocks, filters or drops queries by type and by the client's address.

Syntax::

    acl [ZONES...] {
        ACTION [type QTYPE...] [net SOURCE...]
    }

ZONES default to the server block's zones.  ACTION is ``allow``, ``block`` (REFUSED),
``filter`` (an empty NOERROR reply) or ``drop`` (no reply at all).  ``type`` lists query
types (``*``: every type, the default); ``net`` lists client addresses or CIDRs (``*``:
every address, the default).  Within a block the first policy that matches the query's
type and source decides; no match allows the query.  Several ``acl`` lines are checked in
order, each for the queries in its zones, until one allows, blocks, filters or drops.

Blocked and filtered replies carry an extended DNS error (RFC 8914) for clients that sent an
EDNS0 OPT record: INFO-CODE 15 (Blocked) and 17 (Filtered), without extra text.  A dropped
query gets no reply, over UDP and over TCP alike; its TCP connection stays open and answers
the client's next queries, as CoreDNS's does.  Outcomes are counted in
``coredns_acl_blocked_requests_total``, ``coredns_acl_filtered_requests_total``,
``coredns_acl_dropped_requests_total`` and ``coredns_acl_allowed_requests_total``.
"""

from __future__ import annotations

import ipaddress

from dnslib import QTYPE

from pydns import metrics
from pydns.corefile import Directive
from pydns.edns import EDE_BLOCKED, EDE_FILTERED, extended_error, with_options
from pydns.plugin import NoReply, Plugin, register
from pydns.wire import NOERROR, REFUSED, Answer, Request
from pydns.zones import normalize_zones, wire_lookup, zones_by_wire

ACTIONS = ("allow", "block", "filter", "drop")
_KEPT_MAX = 10000

# Counted as plain integers per (metric, server, [zone,] view); read at scrape time.
METRICS = {
    "block": "coredns_acl_blocked_requests_total",
    "filter": "coredns_acl_filtered_requests_total",
    "drop": "coredns_acl_dropped_requests_total",
    "allow": "coredns_acl_allowed_requests_total",
}
COUNTS = metrics.plain_counters("acl", {
    "coredns_acl_blocked_requests_total": ("Counter of DNS requests being blocked.", ["server", "zone", "view"]),
    "coredns_acl_filtered_requests_total": ("Counter of DNS requests being filtered.", ["server", "zone", "view"]),
    "coredns_acl_dropped_requests_total": ("Counter of DNS requests being dropped.", ["server", "zone", "view"]),
    "coredns_acl_allowed_requests_total": ("Counter of DNS requests being allowed.", ["server", "view"]),
})

# Clients that sent an OPT record see why: extended DNS errors 15 (Blocked), 17 (Filtered).
BLOCKED = with_options(Answer(REFUSED, aa=False, plugin="acl"), extended_error(EDE_BLOCKED))
FILTERED = with_options(Answer(NOERROR, aa=False, plugin="acl"), extended_error(EDE_FILTERED))


class Policy:
    def __init__(self, action: str, qtypes: set[int] | None, nets: list | None):
        self.action, self.qtypes, self.nets = action, qtypes, nets

    def matches(self, qtype: int, ip) -> bool:
        if self.qtypes is not None and qtype not in self.qtypes:
            return False
        return self.nets is None or any(ip in net for net in self.nets)


class Rule:
    def __init__(self, zones: list[str], policies: list[Policy]):
        self.zones, self.policies = zones_by_wire(zones), policies


async def _no_reply(req: Request) -> Answer:
    # An answer the listeners never send: the client times out (UDP) or waits while the
    # connection serves its next query (TCP), as CoreDNS does.
    if req.trace is not None:
        req.trace.note("acl", "dropped", "a drop policy matched: the client gets no reply")
    raise NoReply


def parse_policy(d: Directive, opt: Directive) -> Policy:
    action = str(opt.name).lower()
    if action not in ACTIONS:
        raise opt.error(f"plugin/acl: unexpected token '{opt.name}'; expect 'allow', 'block', 'filter' or 'drop'")
    given: dict[str, list] = {}  # 'type' / 'net' -> the tokens after it
    section = None
    for tok in opt.args:
        word = str(tok)
        if word in ("type", "net"):
            section = word
            given.setdefault(section, [])
        elif section is None:
            raise opt.error(f"plugin/acl: unexpected token '{word}'; expect 'type | net'", tok)
        else:
            given[section].append(tok)
    for section, values in given.items():
        if not values:
            raise opt.error(f"plugin/acl: no {'QTYPE' if section == 'type' else 'SOURCE'} given after '{section}'")
    qtypes = None
    types = given.get("type", [])
    if types and "*" not in types:
        qtypes = set()
        for tok in types:
            try:
                qtypes.add(int(getattr(QTYPE, str(tok).upper())))
            except Exception:  # dnslib's lookup error is its own DNSError
                raise opt.error(f"plugin/acl: unexpected token '{tok}'; expect legal QTYPE", tok) from None
    nets = None
    sources = given.get("net", [])
    if sources and "*" not in sources:
        nets = []
        for tok in sources:
            word = str(tok)
            try:
                nets.append(ipaddress.ip_network(word if "/" in word else f"{word}/{128 if ':' in word else 32}",
                                                 strict=False))
            except ValueError:
                raise opt.error(f"plugin/acl: illegal CIDR notation '{word}'", tok) from None
    return Policy(action, qtypes, nets)


@register("acl")
class Acl(Plugin):
    multiple = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.rules: list[Rule] = []
        self._decided: dict[tuple, tuple[str, str]] = {}

    def setup(self, d: Directive) -> None:
        zones = normalize_zones(d.args, self.server.zones)
        policies = [parse_policy(d, opt) for opt in d.options]
        if d.block is not None and not policies:
            raise d.error("plugin/acl: the block holds no policy")
        self.rules.append(Rule(zones, policies))

    def serve(self, req: Request):
        host = req.remote[0] if req.remote else ""
        key = (req.key, req.qtype, host)
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decide(req, host)
            if len(self._decided) >= _KEPT_MAX:
                self._decided.clear()
            self._decided[key] = decided
        action, zone = decided
        server = req.server.label if req.server is not None else ""
        COUNTS.bump((METRICS[action], server, "") if action == "allow" else (METRICS[action], server, zone, ""))
        if action == "allow":
            return self.next.serve(req)
        if action == "block":
            return BLOCKED
        if action == "filter":
            return FILTERED
        return _no_reply(req)

    def _decide(self, req: Request, host: str) -> tuple[str, str]:
        try:
            ip = ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            self.log.error("Blocking request. Unable to parse source address: %s", host)
            return "block", wire_lookup(req.key, self.rules[0].zones) or "."
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        for rule in self.rules:
            zone = wire_lookup(req.key, rule.zones)
            if zone is None:
                continue
            for policy in rule.policies:
                if policy.matches(req.qtype, ip):
                    # CoreDNS counts allowed queries per server only, without their zone.
                    return policy.action, "" if policy.action == "allow" else zone
        return "allow", ""
