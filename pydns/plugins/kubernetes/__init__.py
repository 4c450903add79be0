"""kubernetes — serves a Kubernetes cluster's services and pods (DNS-Based Service Discovery 1.1.0).

Syntax::

    kubernetes [ZONES...] {
        endpoint URL
        tls CERT KEY CACERT
        kubeconfig KUBECONFIG [CONTEXT]
        apiserver_qps QPS
        apiserver_burst BURST
        apiserver_max_inflight MAX
        namespaces NAMESPACE...
        namespace_labels EXPRESSION
        labels EXPRESSION
        pods disabled|insecure|verified
        endpoint_pod_names
        ttl TTL
        noendpoints
        fallthrough [ZONES...]
        ignore empty_service
        startup_timeout DURATION
        manifests PATH...
    }

ZONES default to the server block's zones; at least one must be a forward zone (the first
one names PTR targets).  The records are CoreDNS's:

* ``svc.ns.svc.ZONE``: A/AAAA of a ClusterIP service's cluster IPs (dual-stack), or of
  every ready endpoint of a headless service; SRV for each port.
* ``_port._proto.svc.ns.svc.ZONE``: SRV (and A/AAAA) for a named port.
* ``endpoint.svc.ns.svc.ZONE``: an endpoint by hostname, or by its dashed address
  (``172-0-0-2``, ``5678-abcd--1``), under headless and ClusterIP services alike.
* ExternalName services: a CNAME; A and AAAA queries follow it through the server.
* PTR for every cluster IP and endpoint address (in ``in-addr.arpa``/``ip6.arpa`` zones).
* ``1-2-3-4.ns.pod.ZONE``: with ``pods insecure`` for any address, with ``pods verified``
  only for pods that exist in that namespace; ``pods disabled`` (the default) answers
  NXDOMAIN.  Finished pods (Succeeded, Failed) do not count, from manifests as from the
  API.  ``pods verified`` also gives *autopath @kubernetes* a client's namespace.
* ``dns-version.ZONE`` TXT ``1.1.0``; SOA and NS at the apex (``ns.dns.ZONE``,
  ``hostmaster.ZONE``); names that exist without the asked type get NODATA with the SOA,
  names that do not (including services of a namespace that does not exist) NXDOMAIN.

Options: ``endpoint`` (an API server URL, with ``tls`` client files), ``kubeconfig`` (a
file and context; it wins over ``endpoint``), else the in-cluster service account;
``apiserver_qps``/``apiserver_burst`` shape requests, ``apiserver_max_inflight`` caps those
in flight (0, the default: no cap).  ``namespaces`` and
``namespace_labels`` (exclusive) limit the namespaces served, ``labels`` the services,
endpoint slices and pods.  ``endpoint_pod_names`` names endpoints without a hostname after
their pod.  ``ttl`` (default 5, 0 to 3600).  ``noendpoints`` stops watching endpoints (no
headless or endpoint names).  ``fallthrough [ZONES...]`` hands names that do not exist to
the next plugin.  ``ignore empty_service`` answers NXDOMAIN for ClusterIP services
without ready endpoints.  ``startup_timeout`` (default 5s) is how long start-up waits for
the first full sync; until that sync, names already known answer, names that would get
NXDOMAIN or NODATA get SERVFAIL, and *ready* reports not ready.

``manifests PATH...`` (beyond CoreDNS) reads the cluster from YAML/JSON files or folders
(relative to the Corefile's folder) instead of an API server: Namespaces, Services,
EndpointSlices, Endpoints and Pods, multi-document or ``kind: List``.  A Service without an
EndpointSlice gets one derived from its Endpoints, or from the Pods its selector matches, as
the cluster's controllers would.  Edits are served within two seconds; a broken file is
logged and keeps its last good objects.

CoreDNS's ``multicluster`` and ``zonal`` are refused at start-up.

From an API server, objects are synced and watched as client-go does it: a streaming list
where the server offers it, else a list at ``resourceVersion=0`` (its cache), then a watch;
a relist (after 410 Gone) replaces a kind's state in one step; retries back off from 0.8 s
to 30 s with jitter and honour ``Retry-After``; a watch with no event and no bookmark for
150 s (2.5 bookmark intervals) is reopened from where it was.

Metrics: ``coredns_kubernetes_dns_programming_duration_seconds{service_kind}``, and
CoreDNS's API client metrics ``coredns_kubernetes_rest_client_request_duration_seconds{verb,
host}``, ``coredns_kubernetes_rest_client_rate_limiter_duration_seconds{verb, host}`` and
``coredns_kubernetes_rest_client_requests_total{code, method, host}``.
"""

from __future__ import annotations

import asyncio
import contextvars
import struct
import time

from dnslib import CNAME, QTYPE, RR, DNSRecord

from pydns.corefile import Directive
from pydns.plugin import Plugin, register, then
from pydns.wire import NOERROR, NXDOMAIN, REFUSED, Answer, Request, label_from_wire, status
from pydns.zones import in_wire_zones, is_subdomain, to_wire

from . import client as _api_client  # noqa: F401 (its metrics exist whatever the source)
from . import options as options_mod
from .index import Index
from .localaddr import local_addresses
from .packing import TYPE_A, TYPE_AAAA, TYPE_SOA
from .render import Zone

TYPE_AXFR, TYPE_IXFR = 252, 251
MAX_CHAIN = 10  # CoreDNS follows at most this many CNAMEs
FOLLOW_CACHE_MAX = 4096
_HEADER = struct.Struct("!HHHHHH")

# The names whose CNAMEs are being followed in this task: stops ExternalName loops.
_following: contextvars.ContextVar[tuple] = contextvars.ContextVar("kubernetes_following", default=())




def records_of(key: bytes, qtype: int, answer: Answer) -> list:
    """The answer section of a ready Answer, as dnslib records."""
    msg = _HEADER.pack(0, 0x8400, 1, answer.an, answer.ns, answer.ar) + key + struct.pack("!HH", qtype, 1) + answer.body
    return DNSRecord.parse(msg).rr


@register("kubernetes")
class Kubernetes(Plugin):
    reports_ready = True

    def setup(self, d: Directive) -> None:
        opts = self.options = options_mod.parse(d, self.server.zones)
        self.index = Index(opts.zones, ttl=opts.ttl, namespaces=opts.namespaces, labels=opts.labels,
                           namespace_labels=opts.namespace_labels, pods=opts.pods,
                           endpoint_pod_names=opts.endpoint_pod_names, noendpoints=opts.noendpoints,
                           ignore_empty_service=opts.ignore_empty_service, plugin=self.name)
        self.table = self.index.table
        self.fall = frozenset(to_wire(z) for z in opts.fallthrough) if opts.fallthrough is not None else None
        self._follow_cache: dict[tuple[bytes, int], Answer] = {}
        self._follow_generation = -1
        kinds = ["Namespace", "Service"]
        if not opts.noendpoints:
            kinds.append("EndpointSlice")
        if opts.pods == "verified":
            kinds.append("Pod")
        self.kinds = tuple(kinds)
        self.directive = d
        self.source = None
        if opts.manifests:
            from .manifests import ManifestSource

            self.source = ManifestSource(self.index, opts.manifests, kinds=self.kinds)

    def _api_source(self):
        """The API source, made at start: in-cluster credentials exist only where the server runs,
        so ``-validate`` elsewhere does not need them.  A configuration that cannot be loaded
        still ends start-up with the directive's file and line."""
        from .api import ApiConfigError, ApiSource

        opts = self.options
        try:
            return ApiSource(self.index, endpoint=opts.endpoint, tls=opts.tls, kubeconfig=opts.kubeconfig,
                             labels=opts.labels.text if opts.labels else None,
                             namespace_labels=opts.namespace_labels.text if opts.namespace_labels else None,
                             kinds=self.kinds, qps=opts.qps, burst=opts.burst, max_inflight=opts.max_inflight)
        except ApiConfigError as exc:
            raise self.directive.error(f"plugin/kubernetes: {exc}") from None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.source is None:
            self.source = self._api_source()
        self.index.set_local_ips(local_addresses(self.server.binds))
        await self.source.start()
        deadline = time.monotonic() + self.options.startup_timeout
        next_note = time.monotonic() + 0.5
        while not self.source.synced():
            now = time.monotonic()
            if now >= deadline:
                self.log.warning("starting server with unsynced Kubernetes API")
                self.serve = self._serve_unsynced  # until the first full sync
                return
            if now >= next_note:
                self.log.info("waiting for Kubernetes API before starting server")
                next_note = now + 0.5
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.source is not None:
            await self.source.stop()

    def ready(self) -> bool:
        return self.source is not None and self.source.synced()

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        answer = self.table.get((req.key, req.qtype))
        if answer is not None:
            return answer
        return self._miss(req)

    def _miss(self, req: Request):
        index = self.index
        key, qtype = req.key, req.qtype
        answer = index.recent.get((key, qtype))
        if answer is not None:
            return answer
        zone = index.zone_of(key)
        if zone is None:
            return self.next.serve(req)
        if qtype == TYPE_AXFR or qtype == TYPE_IXFR:
            return status(REFUSED)  # zone transfers are the transfer plugin's, as in CoreDNS
        name = index.lookup(key, zone)
        if name is not None:
            answer = name.answers.get(qtype)
            if answer is not None:
                return answer
            if name.external is not None and (qtype == TYPE_A or qtype == TYPE_AAAA):
                return self._follow(req, zone, name.external)
            if not name.lacks_name(qtype):
                return index.remember(key, qtype, index.negatives(zone, len(key))[0])
        elif qtype == TYPE_SOA:
            # CoreDNS: SOA below the apex is never a name error
            return index.remember(key, qtype, index.negatives(zone, len(key))[0])
        if self.fall is not None and in_wire_zones(key, self.fall):
            return self.next.serve(req)
        return index.remember(key, qtype, index.negatives(zone, len(key))[1])

    def _serve_unsynced(self, req: Request):
        """Before the first sync, as CoreDNS: what is known answers; what would be NXDOMAIN or
        NODATA may only be unknown yet, so it is SERVFAIL."""
        if self.source.synced():
            self.__dict__.pop("serve", None)
            return self.serve(req)
        return then(Kubernetes.serve(self, req), lambda answer: self._unless_negative(req, answer))

    def _unless_negative(self, req: Request, answer: Answer) -> Answer:
        if answer.plugin == self.name and answer.an == 0 and answer.rcode in (NOERROR, NXDOMAIN):
            zone = self.index.zone_of(req.key)
            if zone is not None:
                return self.index.negatives(zone, len(req.key))[2]
        return answer

    # ------------------------------------------------------------------ autopath
    def autopath_namespace(self, req: Request) -> tuple[str, bytes] | None:
        """For autopath: (the namespace of the pod that sent ``req``, the wire form of the zone
        its question is in), or None when that is not certain (see podaddresses.py).  As in
        CoreDNS, only with ``pods verified``; before the first sync nothing is certain."""
        if self.options.pods != "verified" or not self.source.synced():
            return None
        ns = self.index.store.pod_addresses.namespace_of_client(req.remote)
        if ns is None:
            return None
        zone = self.index.zone_of(req.key)
        return None if zone is None or zone.reverse else (ns, zone.wire)

    # ------------------------------------------------------------------ ExternalName
    async def _follow(self, req: Request, zone: Zone, target: str) -> Answer:
        """CNAME to ``target``, followed by what the target holds for the asked type.

        Inside the zone the index answers (no CNAME at all when the target has nothing, as
        CoreDNS does), and the result is kept until the next change; outside it the server
        resolves the target through its own chain (forward, another plugin...).
        """
        if self._follow_generation != self.index.generation:
            self._follow_cache.clear()
            self._follow_generation = self.index.generation
        cached = self._follow_cache.get((req.key, req.qtype))
        if cached is not None:
            return cached
        owner = req.lname
        records, local = await self._cname_records(owner, label_from_wire(req.key), target, req.qtype, zone,
                                                   _following.get())
        if not records:
            answer = self.index.negatives(zone, len(req.key))[0]
        else:
            answer = Answer.build(label_from_wire(req.key), req.qtype, answer=records, plugin=self.name)
        if local:
            if len(self._follow_cache) >= FOLLOW_CACHE_MAX:
                self._follow_cache.clear()
            self._follow_cache[(req.key, req.qtype)] = answer
        return answer

    async def _cname_records(self, owner: str, owner_label, target: str, qtype: int, zone: Zone,
                             chain: tuple) -> tuple[list, bool]:
        """([CNAME, target's records...] or [], whether the index alone answered)."""
        if target == owner or target in chain or len(chain) > MAX_CHAIN:
            return [], True
        cname = RR(owner_label, QTYPE.CNAME, ttl=self.index.ttl, rdata=CNAME(target))
        chain = chain + (owner,)
        if is_subdomain(target, zone.name):
            key = to_wire(target)
            name = self.index.lookup(key, zone)
            answer = name.answers.get(qtype) if name is not None else None
            rest, local = [], True
            if answer is not None:
                rest = records_of(key, qtype, answer)
            elif name is not None and name.external is not None:
                rest, local = await self._cname_records(target, target, name.external, qtype, zone, chain)
            return ([cname, *rest] if rest else []), local
        token = _following.set(chain)
        try:
            msg = await self.server.lookup(target, qtype)
        finally:
            _following.reset(token)
        return [cname, *(msg.rr if msg is not None else [])], False
