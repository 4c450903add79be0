"""metadata — gathers labels about each query that other plugins read.

Syntax::

    metadata [ZONES...]

For queries in ZONES (default: the server block's zones), the labels below are collected
before any other plugin runs; *rewrite* reads them as ``{label}`` in ``edns0 local``
rules, *template* as ``{{ .Meta "label" }}``, *log* as ``{/label}``.  A label is ``plugin/name``; a label with no
value reads as empty.

From the *kubernetes* plugin of the same block, for names in its zones (as CoreDNS parses
them): ``kubernetes/kind`` (``svc`` or ``pod``), ``kubernetes/namespace``,
``kubernetes/service``, ``kubernetes/endpoint``, ``kubernetes/port-name``,
``kubernetes/protocol``, ``kubernetes/cluster`` (in *multicluster* zones) and
``kubernetes/zone`` (with *zonal*: the topology zone of a zone-scoped name), or
``kubernetes/parse-error`` for a name that is not a cluster name.

From the client's address, for any query, with ``pods verified`` (the pods are watched) and
once the pods are synced: ``kubernetes/client-namespace`` and ``kubernetes/client-pod-name``
of the pod that sent the query, and ``kubernetes/client-label/KEY`` for each of its labels
(``kubernetes/client-label/app``, ``kubernetes/client-label/app.kubernetes.io/name``: KEY is
the label's whole key, its own ``/`` included).  They are set only when exactly one pod has
the source address and it does not run in the host's network (whose address is its node's):
a source that is not a pod's (a node, a node-local cache forwarding for its pods), or an
address two pods hold at once, gives none of them rather than a guess.  The query must reach
the server from the pod's own address (no SNAT, no forwarding cache in between).  A pod's
labels follow its watch events; each distinct label set is kept once, shared by every pod
that has it (the replicas of a workload), so the labels cost a reference per pod.

A label's name is matched whole, as CoreDNS does: ``plugin/name`` is any name with a ``/``
that neither starts nor ends it (the first ``/`` ends the plugin's part; the rest, slashes
and all, is the name), and a lookup is of the exact string.
"""

from __future__ import annotations

from pydns.corefile import Directive
from pydns.plugin import Plugin, register
from pydns.wire import Request
from pydns.zones import normalize_zones, wire_lookup, zones_by_wire

CLIENT_LABEL = "kubernetes/client-label/"


def is_label(name: str) -> bool:
    """Whether ``name`` has a label's shape, ``plugin/name``: a ``/`` that is neither its first
    nor its last character (CoreDNS's ``metadata.IsLabel``)."""
    slash = name.find("/")
    return 0 < slash < len(name) - 1


def kubernetes_labels(name: str, zone: str, multicluster: bool = False, zonal: bool = False) -> dict[str, str]:
    """The labels CoreDNS's kubernetes plugin derives from a query name in its zone;
    ``multicluster``: the zone is one of its multicluster zones; ``zonal``: the option is on."""
    base = name[: len(name) - len(zone)].rstrip(".") if zone != "." else name.rstrip(".")
    if base in ("", "svc", "pod"):
        return {}
    segs = base.split(".")
    kind = segs.pop()
    if kind not in ("svc", "pod"):
        return {"kubernetes/parse-error": "invalid request"}
    out = {"kubernetes/kind": kind, "kubernetes/namespace": "", "kubernetes/service": "",
           "kubernetes/endpoint": "", "kubernetes/port-name": "", "kubernetes/protocol": ""}
    if multicluster:
        out["kubernetes/cluster"] = ""
    if zonal:
        out["kubernetes/zone"] = ""
    if segs:
        out["kubernetes/namespace"] = segs.pop()
    if segs:
        out["kubernetes/service"] = segs.pop()
    if len(segs) == 1:
        out["kubernetes/endpoint"] = segs[0]
    elif len(segs) == 2:
        if not multicluster or segs[0].startswith("_") or segs[1].startswith("_"):
            out["kubernetes/port-name"] = segs[0].removeprefix("_")
            out["kubernetes/protocol"] = segs[1].removeprefix("_")
        else:  # endpoint.cluster.service.namespace.svc.ZONE
            out["kubernetes/endpoint"], out["kubernetes/cluster"] = segs
    elif segs:  # TOPOLOGY-ZONE.pin|prefer._zone.service.namespace.svc.ZONE (the zone may hold dots)
        if not zonal or multicluster or segs[-1] != "_zone" or kind != "svc" or segs[-2] not in ("pin", "prefer"):
            return {"kubernetes/parse-error": "invalid request"}
        out["kubernetes/zone"] = ".".join(segs[:-2])
    return out


@register("metadata")
class Metadata(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        self.zones: dict[bytes, str] = {}
        self._kubernetes_zones: dict[bytes, str] | None = None
        self._multicluster_zones: dict[bytes, str] = {}

    def setup(self, d: Directive) -> None:
        if d.block:
            raise d.block[0].error(f"plugin/metadata: unknown property '{d.block[0].name}'")
        self.zones = zones_by_wire(normalize_zones(d.args, self.server.zones))

    def serve(self, req: Request):
        if wire_lookup(req.key, self.zones) is not None:
            req.metadata = self.labels(req)
        return self.next.serve(req)

    def labels(self, req: Request) -> dict[str, str]:
        labels: dict[str, str] = {}
        kubernetes = self.server.plugin("kubernetes")
        if kubernetes is not None:
            client = kubernetes.client_pod(req)
            if client is not None:
                (labels["kubernetes/client-namespace"], labels["kubernetes/client-pod-name"]), pod_labels = client
                for key, value in pod_labels:
                    labels[CLIENT_LABEL + key] = value
            if self._kubernetes_zones is None:  # set up after this plugin: looked up on first use
                self._kubernetes_zones = zones_by_wire(kubernetes.options.zones)
                self._multicluster_zones = zones_by_wire(kubernetes.options.multicluster)
            zone = wire_lookup(req.key, self._kubernetes_zones)
            if zone is not None:
                labels.update(kubernetes_labels(req.lname, zone, wire_lookup(req.key, self._multicluster_zones) is not None,
                                                kubernetes.options.zonal))
        return labels
