"""Names in a ``multicluster`` zone: ServiceImports, as KEP-1645's DNS specification and CoreDNS give them.

In a multi-cluster zone (``clusterset.local``) the services are the ServiceImports an
MCS-API implementation creates, and their endpoints the EndpointSlices labelled
``multicluster.kubernetes.io/service-name`` (each from the cluster its
``multicluster.kubernetes.io/source-cluster`` label names)::

    svc.ns.svc.ZONE                     A/AAAA: the ClusterSetIPs (headless: every endpoint); SRV
    _port._proto.svc.ns.svc.ZONE        SRV (and A/AAAA) for a named port
    hostname.clusterid.svc.ns.svc.ZONE  a headless endpoint, by its hostname (or dashed address)
                                        in the cluster it comes from

SRV targets are ``svc.ns.svc.ZONE`` for a ClusterSetIP import and
``hostname.clusterid.svc.ns.svc.ZONE`` for endpoints.  As in CoreDNS, a ClusterSetIP import
without ports has no records (NXDOMAIN); with matching ports but no IP it is NODATA; names of
a namespace that is not present are NXDOMAIN; zonal names are not defined here.
"""

from __future__ import annotations

from .memo import Name
from .objects import port_matches, strip_underscore
from .packing import label
from .store import import_dep, namespace_dep

NOT_FOUND = (None, ())


def render(renderer, key: bytes, zone, labels: list[bytes]) -> tuple[Name | None, tuple]:
    """The name ``key`` (its ``labels`` before the zone, ending in ``ns``, ``svc``) in a multi-cluster zone."""
    n = len(labels)
    if labels[-1] != b"svc" or n > 5:
        return NOT_FOUND
    ikey = (labels[-2].decode("latin-1"), labels[-3].decode("latin-1"))
    imp = renderer.store.imports.get(ikey)
    if imp is None or imp.base is None or not renderer.exposed(ikey[0]):
        return NOT_FOUND
    slices = renderer.store.mc_slices_of(ikey)
    if renderer.ignore_empty and not imp.headless and not any(sl.ips for sl in slices):
        return NOT_FOUND
    endpoint = cluster = port = proto = None
    if n == 4:
        endpoint, cluster = labels[0], b""
    elif n == 5:
        if labels[0][:1] == b"_" or labels[1][:1] == b"_":
            port, proto = strip_underscore(labels[0]), strip_underscore(labels[1])
        else:
            endpoint, cluster = labels[0], labels[1]
    entries = _entries(imp, slices, endpoint, cluster, port, proto)
    if entries is None:
        return NOT_FOUND
    # The renderer packs them as it packs any service's (same package: its helper is shared).
    answers = renderer._entry_answers(key, zone, entries) if entries else {}
    return Name(answers), (import_dep(*ikey), namespace_dep(ikey[0]))


def _entries(imp, slices, endpoint, cluster, port, proto) -> tuple | None:
    """(address, port, target prefix) of what the name finds, or None when it does not exist."""
    if imp.headless or endpoint is not None:
        wanted = bytes((len(endpoint),)) + endpoint if endpoint is not None else None
        out = []
        for sl in slices:
            if endpoint is not None and sl.cluster.lower().encode("latin-1") != cluster:
                continue
            try:
                # An endpoint's name is qualified by its cluster (KEP-1645's hostname.clusterid).
                prefix = (label(sl.cluster) if sl.cluster else b"") + imp.base
            except ValueError:
                continue
            for ip, host in sl.endpoints:
                if wanted is not None and host != wanted:
                    continue
                out.extend((ip, p, host + prefix) for name, pr, p in sl.ports
                           if port_matches(port, name) and port_matches(proto, pr))
        return tuple(out) or None
    ports = [p for name, pr, p in imp.ports if port_matches(port, name) and port_matches(proto, pr)]
    if not ports:
        return None
    return tuple((ip, p, imp.base) for p in ports for ip in imp.ips)

