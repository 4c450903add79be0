"""k8s_external — serves services' external addresses (LoadBalancer ingress, externalIPs) in other zones.

Syntax::

    k8s_external [ZONE...] {
        apex APEX
        ttl TTL
        headless
        fallthrough [ZONES...]
    }

ZONES default to the server block's zones.  The names come from the *kubernetes* plugin of
the same server block (an error at start-up without one), without its ``svc`` label:

* ``svc.ns.ZONE``: A/AAAA of the service's ``spec.externalIPs`` and load balancer ingress
  IPs; a load balancer known by hostname answers with a CNAME to it, followed through the
  server.  SRV for every port (targets ``svc.ns.ZONE``, with the addresses as glue).
* ``_port._proto.svc.ns.ZONE``: SRV (and A/AAAA) for a named port.
* With ``headless``: a headless service without external addresses answers with its ready
  endpoints, and ``endpoint.svc.ns.ZONE`` names one of them (SRV targets are the endpoint
  names).
* PTR for an external address, where ZONES hold a reverse zone (``svc.ns.ZONE``).
* The apex has SOA (``ns1.APEX.ZONE``, ``hostmaster.APEX.ZONE``, serial: the time of the
  cluster's last change) and NS ``ns1.APEX.ZONE``, whose A/AAAA are the external addresses
  of the service in front of this server (else this server's own addresses).  ``APEX``
  defaults to ``dns``; other names under it are NXDOMAIN.
* Other types of a name that exists get NODATA, names that do not NXDOMAIN, with the SOA.

``ttl`` (default 5, 0 to 3600) is the TTL of addresses and the SOA; SRV records and CNAMEs
keep the *kubernetes* plugin's TTL, as in CoreDNS.  ``fallthrough [ZONES...]`` hands
NXDOMAIN names to the next plugin.
"""

from __future__ import annotations

import contextvars

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RR, SOA, SRV, A

from pydns.corefile import Directive
from pydns.parser import presentation
from pydns.plugin import Plugin, expect_args, parse_int, register, unknown_option
from pydns.plugins.kubernetes import external
from pydns.plugins.kubernetes.objects import canonical_ip
from pydns.plugins.kubernetes.packing import ip_of_reverse, wire_labels
from pydns.wire import NOERROR, NXDOMAIN, Answer, Request, label_from_wire
from pydns.zones import in_wire_zones, normalize_zones, to_wire, wire_lookup

CACHE_MAX = 16384  # answers kept until the cluster changes
# The names whose load balancer hostnames are being followed in this task: stops loops.
_following: contextvars.ContextVar[tuple] = contextvars.ContextVar("k8s_external_following", default=())
TYPE_A, TYPE_NS, TYPE_SOA, TYPE_PTR, TYPE_AAAA, TYPE_SRV = 1, 2, 6, 12, 28, 33


@register("k8s_external")
class K8sExternal(Plugin):
    def setup(self, d: Directive) -> None:
        self.directive = d
        # CoreDNS finds out at start-up; a Corefile check (-validate) can tell already.
        if not any(str(other.name) == "kubernetes" for other in self.server.block.directives):
            raise d.error("plugin/k8s_external: kubernetes plugin not loaded")
        self.zones = normalize_zones(d.args, self.server.zones)
        self._zone_by_wire = {to_wire(z): z for z in self.zones}
        self.apex = "dns"
        self.ttl = 5
        self.headless = False
        self.fall: frozenset | None = None
        for opt in d.options:
            name = str(opt.name)
            if name == "ttl":
                (value,) = expect_args(opt, 1, 1, "k8s_external")
                ttl = parse_int(value, "k8s_external", "ttl")
                if not 0 <= ttl <= 3600:
                    raise opt.error(f"plugin/k8s_external: ttl must be in range [0, 3600]: {ttl}", value)
                self.ttl = ttl
            elif name == "apex":
                args = expect_args(opt, 1, None, "k8s_external")
                self.apex = str(args[0]).lower().strip(".")
            elif name == "headless":
                expect_args(opt, 0, 0, "k8s_external")
                self.headless = True
            elif name == "fallthrough":
                self.fall = frozenset(to_wire(z) for z in normalize_zones(opt.args, ["."]))
            else:
                raise unknown_option(d, opt)
        self.kube = None
        self._cache: dict[tuple[bytes, int], Answer] = {}
        self._cached_at = None

    async def start(self) -> None:
        self.kube = self.server.plugin("kubernetes")  # set up with this block: see setup

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        zone = wire_lookup(req.key, self._zone_by_wire)
        if zone is None or self.kube is None:
            return self.next.serve(req)
        index = self.kube.index
        state = (index.generation, index.serial, index.local_ips)
        if state != self._cached_at:
            self._cache.clear()
            self._cached_at = state
        answer = self._cache.get((req.key, req.qtype))
        if answer is not None:
            return answer
        answer, rcode = self._answer(req, zone)
        if answer is None:
            return self.next.serve(req)  # fallthrough
        if isinstance(answer, Answer):
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[(req.key, req.qtype)] = answer
        return answer

    def _answer(self, req: Request, zone: str):
        """(the answer, or None to fall through; an awaitable where a hostname is followed)."""
        key, qtype = req.key, req.qtype
        zone_wire = to_wire(zone)
        rel = wire_labels(key[: len(key) - len(zone_wire)]) if key != zone_wire else []
        if not rel:
            return self._apex(req, zone), NOERROR
        if rel[-1] == self.apex.encode("latin-1"):
            return self._sub_apex(req, zone, rel), NOERROR
        if qtype == TYPE_PTR:
            ip = ip_of_reverse(key)
            if ip is not None:
                targets = external.services_at(self.kube, ip)
                if targets:
                    first = self.zones[0]
                    rrs = [RR(self._qname(req), QTYPE.PTR, ttl=self.ttl,
                              rdata=PTR(presentation(t + to_wire(first)))) for t in targets]
                    return Answer.build(self._qname(req), qtype, answer=rrs, plugin=self.name), NOERROR
                return self._negative(req, zone, NXDOMAIN)
        found, rcode = external.services(self.kube, rel, self.headless)
        if not found:
            return self._negative(req, zone, rcode)
        if qtype in (TYPE_A, TYPE_AAAA):
            return self._addresses(req, zone, found)
        if qtype == TYPE_SRV:
            return self._srv(req, zone, found)
        return self._nodata(req, zone), NOERROR

    def _negative(self, req: Request, zone: str, rcode: int):
        if rcode == NXDOMAIN and self.fall is not None and in_wire_zones(req.key, self.fall):
            return None, rcode
        if rcode == NXDOMAIN:
            return self._soa_nxdomain(req, zone), rcode
        return self._nodata(req, zone), rcode

    def _nodata(self, req: Request, zone: str) -> Answer:
        return Answer.build(self._qname(req), req.qtype, authority=[self._soa(zone)], plugin=self.name)

    def _addresses(self, req: Request, zone: str, found: list):
        qname, want = self._qname(req), req.qtype
        rrs, names, seen = [], [], set()
        for host, _port, _target in found:
            if host in seen:
                continue
            seen.add(host)
            if canonical_ip(host) is None:
                names.append(host)  # a load balancer by hostname: CNAME, then the hostname's records
            elif (":" in host) == (want == TYPE_AAAA):
                rrs.append(RR(qname, want, ttl=self.ttl, rdata=AAAA(host) if want == TYPE_AAAA else A(host)))
        if names:
            return self._follow(req, zone, rrs, names), NOERROR
        if not rrs:
            return self._nodata(req, zone), NOERROR
        return Answer.build(qname, want, answer=rrs, plugin=self.name), NOERROR

    async def _follow(self, req: Request, zone: str, rrs: list, names: list) -> Answer:
        """CNAMEs to load balancers' hostnames, and what the server finds for each (never in a loop)."""
        qname = self._qname(req)
        chain = _following.get() + (req.key,)
        token = _following.set(chain)
        try:
            for host in names:
                rrs.append(RR(qname, QTYPE.CNAME, ttl=self.kube.index.ttl, rdata=CNAME(host + ".")))
                if to_wire(host) not in chain:
                    msg = await self.server.lookup(host + ".", req.qtype)
                    if msg is not None:
                        rrs.extend(msg.rr)
        finally:
            _following.reset(token)
        return Answer.build(qname, req.qtype, answer=rrs, plugin=self.name)

    def _srv(self, req: Request, zone: str, found: list):
        """SRV records (the kubernetes TTL), weights sharing 100 out, the addresses as glue (this TTL)."""
        qname, zone_wire = self._qname(req), to_wire(zone)
        weight = max(1, (100 * 100) // (100 * len(found)))
        records, extra, dup = [], [], set()
        for host, port, target in found:
            if port < 0 or canonical_ip(host) is None:
                continue
            target_name = presentation(target + zone_wire)
            if (target_name, port) not in dup:
                dup.add((target_name, port))
                records.append(RR(qname, QTYPE.SRV, ttl=self.kube.index.ttl,
                                  rdata=SRV(0, weight, port & 0xFFFF, target_name)))
            if (target_name, host) not in dup:
                dup.add((target_name, host))
                v6 = ":" in host
                extra.append(RR(target_name, QTYPE.AAAA if v6 else QTYPE.A, ttl=self.ttl,
                                rdata=AAAA(host) if v6 else A(host)))
        if not records:
            return self._nodata(req, zone), NOERROR
        return Answer.build(qname, req.qtype, answer=records, additional=extra, plugin=self.name), NOERROR

    # ------------------------------------------------------------------ the apex and its own names
    def _apex(self, req: Request, zone: str) -> Answer:
        qname = self._qname(req)
        if req.qtype == TYPE_SOA:
            return Answer.build(qname, req.qtype, answer=[self._soa(zone)], plugin=self.name)
        if req.qtype == TYPE_NS:
            ns1 = f"ns1.{self.apex}.{zone}"
            glue = [RR(ns1, QTYPE.AAAA if ":" in ip else QTYPE.A, ttl=self.ttl, rdata=AAAA(ip) if ":" in ip else A(ip))
                    for ip in external.addresses(self.kube, self.headless)]
            return Answer.build(qname, req.qtype, answer=[RR(zone, QTYPE.NS, ttl=self.ttl, rdata=NS(ns1))],
                                additional=glue, plugin=self.name)
        return self._nodata(req, zone)

    def _sub_apex(self, req: Request, zone: str, rel: list[bytes]) -> Answer:
        """``APEX.ZONE`` exists (NODATA); ``ns1.APEX.ZONE`` has the server's addresses; nothing else does."""
        if len(rel) == 1:
            return self._nodata(req, zone)
        if len(rel) != 2 or rel[0] != b"ns1":
            return self._soa_nxdomain(req, zone)
        qname = self._qname(req)
        rrs = [RR(qname, req.qtype, ttl=self.ttl, rdata=AAAA(ip) if ":" in ip else A(ip))
               for ip in external.addresses(self.kube, self.headless)
               if (req.qtype == TYPE_AAAA and ":" in ip) or (req.qtype == TYPE_A and ":" not in ip)]
        if not rrs:
            return self._nodata(req, zone)
        return Answer.build(qname, req.qtype, answer=rrs, plugin=self.name)

    def _soa_nxdomain(self, req: Request, zone: str) -> Answer:
        return Answer.build(self._qname(req), req.qtype, NXDOMAIN, authority=[self._soa(zone)], plugin=self.name)

    def _soa(self, zone: str) -> RR:
        apex = f"{self.apex}.{zone}"
        return RR(zone, QTYPE.SOA, ttl=self.ttl,
                  rdata=SOA(f"ns1.{apex}", f"hostmaster.{apex}",
                            (self.kube.index.serial & 0xFFFFFFFF, 7200, 1800, 86400, self.ttl)))

    @staticmethod
    def _qname(req: Request):
        return label_from_wire(req.key)
