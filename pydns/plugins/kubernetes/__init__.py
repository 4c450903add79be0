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
        zonal
        multicluster [ZONES...]
        manifests PATH...
        snapshot PATH [INTERVAL]
        drift_check INTERVAL
        ipv6 auto|on|off
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
EndpointSlices, Endpoints, Pods and ServiceImports, multi-document or ``kind: List``.  A Service without an
EndpointSlice gets one derived from its Endpoints, or from the Pods its selector matches, as
the cluster's controllers would.  Edits are served within two seconds; a broken file is
logged and keeps its last good objects.

``zonal`` (CoreDNS 1.14.7) adds zone-scoped names for headless services:
``TOPOLOGY-ZONE.pin._zone.svc.ns.svc.ZONE`` answers the endpoints whose EndpointSlice
``zone`` is TOPOLOGY-ZONE (none: NODATA), ``TOPOLOGY-ZONE.prefer._zone...`` those, else every
endpoint.  The zone is every label left of the directive (zone values may hold dots),
matched regardless of case; A/AAAA and SRV (zone-filtered glue too), NODATA for other types;
ClusterIP and ExternalName services, unknown directives and multi-cluster zones are
NXDOMAIN.  It needs the endpoints: ``zonal`` with ``noendpoints`` is an error.

``multicluster ZONES...`` makes ZONES (which must be among the plugin's zones) serve the
ServiceImports (``multicluster.x-k8s.io/v1alpha1``) of KEP-1645 instead of Services, with
the EndpointSlices labelled ``multicluster.kubernetes.io/service-name`` as their endpoints:
``svc.ns.svc.ZONE`` A/AAAA of a ClusterSetIP import's IPs (headless: every ready endpoint)
and SRV; ``_port._proto.svc.ns.svc.ZONE``; ``hostname.clusterid.svc.ns.svc.ZONE`` for an
endpoint of the cluster named by the slice's ``multicluster.kubernetes.io/source-cluster``
label.  A ClusterSetIP import without ports has no names.  From an API server it needs
the ServiceImport CRD and list and watch of ``serviceimports`` in ``multicluster.x-k8s.io``;
until they can be listed the plugin is not synced (and not ready), as in CoreDNS.

The plugin also serves *k8s_external* (services' external addresses in other zones).

``snapshot PATH [INTERVAL]`` (beyond CoreDNS; not with ``manifests``) is a warm start.
Every INTERVAL (default 1m) while the store has changed, and at shutdown, the store synced
from the API is written to PATH (relative to the Corefile's folder) atomically: a
temporary file, flushed to disk, renamed, the folder flushed.  At start the file is read
and served at once, negative answers included, while the first list runs; start-up does
not wait for the API.  Each kind's first sync then replaces the snapshot's state in one
step, so objects deleted meanwhile disappear.  The file has a header with its schema, a
SHA-256 of its body and what it was made for (the API server's URL, the zones, the kinds
and every option that changes what is kept of an object); a file that is corrupt,
truncated, of another schema, made for anything else, out of shape or over 256 MiB is
logged and ignored, never served.  While serving from it, *ready* reports not ready,
naming ``kubernetes (serving from snapshot)``: ready means synced with the API, as in
CoreDNS, so a rollout never takes a server with a stale view for a synced one; the
snapshot serves the queries that reach the server anyway (above all while the API itself
is down, when readiness cannot change).  ``pydns_kubernetes_snapshot_serving`` is 1
meanwhile.

``drift_check INTERVAL`` (beyond CoreDNS; off by default) catches watch events that never
arrived: every INTERVAL (each wait drawn from 0.8 to 1.0 times it) each kind is listed at
``resourceVersion=0`` (the API server's cache) and compared with the store; every object
that differs is logged (``drift: N Service object(s) differed from the API ...:
ns/name, ...; repaired``), counted in ``pydns_kubernetes_drift_objects_total{kind}`` and
repaired.  Objects the watch changed during the list are left to the next check, and a list
older than what the watch had delivered is not compared: a repair never goes backwards.

``ipv6 auto|on|off`` (beyond CoreDNS) answers AAAA by the cluster's IP families.  ``on``
(the default) is CoreDNS's behaviour.  ``off`` declares the cluster IPv4-only; ``auto``
takes it to be so while no Service has an IPv6 cluster IP and no EndpointSlice an IPv6
address (what the Services' ``ipFamilies`` give them), and, until the first sync, to have
IPv6.  Where it is IPv4-only, AAAA questions in the forward zones never leave the server:
a name with AAAA records still gets them; a name without (a v4-only service, a namespace)
gets NODATA with the SOA, also before the first sync; an ExternalName service gets its
CNAME alone (the target's AAAA is not looked up); a name that does not exist gets
NXDOMAIN and is not handed on by ``fallthrough``.  A questions are answered as ever.

From an API server, objects are synced and watched as client-go does it: a streaming list
where the server offers it, else a list at ``resourceVersion=0`` (its cache), then a watch;
a relist (after 410 Gone) replaces a kind's state in one step; retries back off from 0.8 s
to 30 s with jitter and honour ``Retry-After``; a watch with no event and no bookmark for
150 s (2.5 bookmark intervals) is reopened from where it was.

Metrics: ``coredns_kubernetes_dns_programming_duration_seconds{service_kind}``,
``pydns_kubernetes_snapshot_serving``, ``pydns_kubernetes_drift_objects_total{kind}``,
``pydns_kubernetes_drift_checks_total{result}``, and
CoreDNS's API client metrics ``coredns_kubernetes_rest_client_request_duration_seconds{verb,
host}``, ``coredns_kubernetes_rest_client_rate_limiter_duration_seconds{verb, host}`` and
``coredns_kubernetes_rest_client_requests_total{code, method, host}``.
"""

# Over 400 lines, of which 135 are the plugin's Corefile documentation above (the source of
# docs/plugins/kubernetes.md); the code is the plugin's setup, its serve path and the hooks
# other plugins call (autopath, k8s_external, metadata, explain).  Rendering is render.py.

from __future__ import annotations

import asyncio
import contextvars
import struct
import time

from dnslib import CNAME, QTYPE, RR, DNSRecord

from pydns import metrics
from pydns.corefile import Directive
from pydns.plugin import Plugin, register, then
from pydns.wire import NOERROR, NXDOMAIN, REFUSED, Answer, Request, label_from_wire, status
from pydns.zones import in_wire_zones, is_subdomain, to_wire

from . import client as _api_client  # noqa: F401 (its metrics exist whatever the source)
from . import explain as why
from . import options as options_mod
from .drift import DriftCheck
from .families import Families
from .index import Index
from .localaddr import local_addresses
from .packing import TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_SOA
from .render import Zone
from .snapshot import Snapshot

_serving_snapshot = metrics.gauge("pydns_kubernetes_snapshot_serving",
                                  "1 while the kubernetes plugin serves from its snapshot file, until the API is synced.")

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
    memoizable = True  # its answers change only with the index, which reports every change

    def setup(self, d: Directive) -> None:
        opts = self.options = options_mod.parse(d, self.server.zones)
        self.index = Index(opts.zones, ttl=opts.ttl, namespaces=opts.namespaces, labels=opts.labels,
                           namespace_labels=opts.namespace_labels, pods=opts.pods,
                           endpoint_pod_names=opts.endpoint_pod_names, noendpoints=opts.noendpoints,
                           ignore_empty_service=opts.ignore_empty_service, plugin=self.name, zonal=opts.zonal,
                           multicluster=opts.multicluster)
        self.table = self.index.table
        self.fall = frozenset(to_wire(z) for z in opts.fallthrough) if opts.fallthrough is not None else None
        self._follow_cache: dict[tuple[bytes, int], Answer] = {}
        self._follow_generation = -1
        kinds = ["Namespace", "Service"]
        if not opts.noendpoints:
            kinds.append("EndpointSlice")
        if opts.pods == "verified":
            kinds.append("Pod")
        if opts.multicluster:
            kinds += ["ServiceImport", "MultiClusterEndpointSlice"]
        self.kinds = tuple(kinds)
        self.directive = d
        self.source = None
        self.warm = False  # serving what the snapshot file held, until the API is synced
        self.families = Families(opts.ipv6, self.index.store, lambda: self.warm or self.ready())
        self._tasks: list[asyncio.Future] = []
        self.snapshot: Snapshot | None = None
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
        if self.options.snapshot is not None:
            self.snapshot = Snapshot(*self.options.snapshot, made_for=self._made_for())
            self.warm = self.snapshot.load(self.index)
            _serving_snapshot.set(1 if self.warm else 0)
            self._tasks.append(asyncio.ensure_future(self._keep_snapshot()))
        if self.options.drift_check:
            check = DriftCheck(self.index, self.source, self.kinds, self.options.drift_check)
            self._tasks.append(asyncio.ensure_future(check.run()))
        await self.source.start()
        if self.warm:
            return  # answer from the snapshot at once; the first sync replaces it
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
        for task in self._tasks:
            task.cancel()
        if self.source is not None:
            await self.source.stop()
        if self.snapshot is not None and self.ready():
            await self.snapshot.save(self.index)
        if self.warm:
            _serving_snapshot.set(0)

    def ready(self) -> bool:
        return self.source is not None and self.source.synced()

    def explain(self, req: Request, answer: Answer):
        return why.explain(self, req, answer)

    @property
    def not_ready_reason(self) -> str | None:
        """What *ready* shows next to the plugin's name while it is not ready."""
        return "serving from snapshot" if self.warm else None

    # ------------------------------------------------------------------ snapshot
    def _made_for(self) -> dict:
        """What the store holds depends on: a snapshot made for anything else is not served."""
        opts = self.options
        return {"api": self.source.client.configuration.host, "zones": opts.zones, "kinds": list(self.kinds),
                "labels": opts.labels.text if opts.labels else None,
                "namespace_labels": opts.namespace_labels.text if opts.namespace_labels else None,
                "pods": opts.pods, "endpoint_pod_names": opts.endpoint_pod_names, "noendpoints": opts.noendpoints}

    async def _keep_snapshot(self) -> None:
        """Once synced, leave the snapshot's state behind and save the store every interval."""
        while not self.ready():
            await asyncio.sleep(0.05)
        if self.warm:
            self.warm = False
            _serving_snapshot.set(0)
            self.log.info("synced with the Kubernetes API: no longer serving from snapshot")
        while True:
            await self.snapshot.save(self.index)
            await asyncio.sleep(self.snapshot.interval)

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        answer = self.table.get((req.key, req.qtype))
        if answer is not None:
            req.memo_until = self.keeps  # it changes only with the index (pydns.replies)
            return answer
        return self._miss(req)

    def _miss(self, req: Request):
        index = self.index
        key, qtype = req.key, req.qtype
        answer = index.recent.get((key, qtype))
        if answer is not None:
            return self._kept(req, answer)
        zone = index.zone_of(key)
        if zone is None:
            if req.trace is not None:
                req.trace.note(self.name, "passed on", "not in the plugin's zones")
            return self.next.serve(req)
        if qtype == TYPE_AXFR or qtype == TYPE_IXFR:
            return status(REFUSED)  # zone transfers are the transfer plugin's, as in CoreDNS
        name = index.lookup(key, zone)
        if name is not None:
            answer = name.answers.get(qtype)
            if answer is not None:
                return self._kept(req, answer)
            if name.external is not None and (qtype == TYPE_A or qtype == TYPE_AAAA):
                if qtype == TYPE_AAAA and not self.families.ipv6():
                    return self._kept(req, name.answers[TYPE_CNAME])  # the target's AAAA is of no use in an IPv4 cluster
                return self._follow(req, zone, name.external)
            if not name.lacks_name(qtype):
                return self._kept(req, index.remember(key, qtype, index.negatives(zone, len(key))[0]))
        elif qtype == TYPE_SOA:
            # CoreDNS: SOA below the apex is never a name error
            return self._kept(req, index.remember(key, qtype, index.negatives(zone, len(key))[0]))
        if self.fall is not None and in_wire_zones(key, self.fall) and (qtype != TYPE_AAAA or self.families.ipv6()):
            if req.trace is not None:
                req.trace.note(self.name, "passed on", why.why(self, key, qtype)[0] + "; `fallthrough` hands it on")
            return self.next.serve(req)
        return self._kept(req, index.remember(key, qtype, index.negatives(zone, len(key))[1]))

    def _kept(self, req: Request, answer: Answer) -> Answer:
        """An answer from the index alone: it may be kept by the query's bytes until the index changes."""
        req.memo_until = self.keeps
        return answer

    def _serve_unsynced(self, req: Request):
        """Before the first sync, as CoreDNS: what is known answers; what would be NXDOMAIN or
        NODATA may only be unknown yet, so it is SERVFAIL."""
        if self.source.synced():
            self.__dict__.pop("serve", None)
            return self.serve(req)
        result = then(Kubernetes.serve(self, req), lambda answer: self._unless_negative(req, answer))
        req.memo_until = 0.0  # the first sync changes these answers without a change to the index
        return result

    def _unless_negative(self, req: Request, answer: Answer) -> Answer:
        if answer.plugin == self.name and answer.an == 0 and answer.rcode in (NOERROR, NXDOMAIN):
            if answer.rcode == NOERROR and req.qtype == TYPE_AAAA and not self.families.ipv6():
                return answer  # a known name without AAAA: it cannot have one in an IPv4 cluster
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

    def client_pod(self, req: Request) -> tuple[tuple[str, str], tuple] | None:
        """For metadata: ((namespace, name), label set) of the pod that sent ``req``, when one pod,
        not in the host's network, has its address; as autopath, only with ``pods verified``
        and synced.  The label set is (key, value) pairs (``podlabels.py``)."""
        if self.options.pods != "verified" or not self.source.synced():
            return None
        store = self.index.store
        key = store.pod_addresses.pod_of_client(req.remote)
        return None if key is None else (key, store.pods[key].labels)

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
                                                   _following.get(), req.trace)
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
                             chain: tuple, trace=None) -> tuple[list, bool]:
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
                rest, local = await self._cname_records(target, target, name.external, qtype, zone, chain, trace)
            return ([cname, *rest] if rest else []), local
        token = _following.set(chain)
        try:
            msg = await self.server.lookup(target, qtype, trace)
        finally:
            _following.reset(token)
        return [cname, *(msg.rr if msg is not None else [])], False
