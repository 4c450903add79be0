"""What the kubernetes plugin offers *k8s_external* (CoreDNS's Externaler interface).

Names under an external zone drop the ``svc`` label: ``svc.ns.ZONE``,
``_port._proto.svc.ns.ZONE`` and, with ``headless``, ``endpoint.svc.ns.ZONE``.  Each
lookup returns CoreDNS's "services": (host, port, target) where host is an address or a
load balancer's hostname, and target the wire prefix (before the zone) an SRV record
points at.  What CoreDNS does and this keeps:

* a service's external addresses are ``spec.externalIPs`` then its load balancer ingresses;
  a service without ports still has its addresses (port -1: no SRV);
* with ``headless``, a headless service without external addresses (and any endpoint name,
  whatever the service) is served from its ready endpoints, named as in the cluster zone;
* without ``headless`` an endpoint label is ignored: ``x.svc.ns.ZONE`` is the service;
* a namespace that is not present (or not in ``namespaces``) is NXDOMAIN, a present one
  NODATA; more labels than ``_port._proto.svc.ns`` are NXDOMAIN.
"""

from __future__ import annotations

from pydns.wire import NOERROR, NXDOMAIN

from .objects import HEADLESS, canonical_ip, port_matches, strip_underscore
from .packing import label


def services(kube, labels: list[bytes], headless: bool) -> tuple[list[tuple], int]:
    """(the services a name's ``labels`` before the external zone find, rcode)."""
    renderer = kube.index.renderer
    ns = labels[-1].decode("latin-1")
    if not renderer.exposed(ns):
        return [], NXDOMAIN
    if len(labels) == 1:
        return [], NOERROR
    if len(labels) > 4:
        return [], NXDOMAIN
    name = labels[-2].decode("latin-1")
    endpoint = port = proto = None
    if len(labels) == 3:
        endpoint = labels[0]
    elif len(labels) == 4:
        port, proto = strip_underscore(labels[0]), strip_underscore(labels[1])
    svc = renderer.store.services.get((ns, name))
    if svc is None:
        return [], NXDOMAIN
    try:
        base = label(name) + label(ns)
    except ValueError:
        return [], NXDOMAIN
    found = []
    if headless and not svc.external and (svc.kind == HEADLESS or endpoint is not None):
        wanted = bytes((len(endpoint),)) + endpoint if endpoint is not None else None
        for sl in renderer.store.slices_of((ns, name)):
            for ip, host in sl.endpoints:
                if wanted is None or host == wanted:
                    found.extend((ip, p, host + base) for pname, pr, p in sl.ports
                                 if port_matches(port, pname) and port_matches(proto, pr))
    else:
        found = [(host, p, base) for host in svc.external for pname, pr, p in svc.ports
                 if port_matches(port, pname) and port_matches(proto, pr)]
    return found, (NOERROR if found else NXDOMAIN)


def services_at(kube, ip: str) -> list[bytes]:
    """The ``svc.ns`` wire prefixes of the services with external address ``ip`` (its PTR)."""
    renderer = kube.index.renderer
    out = []
    for svc in renderer.store.services.values():
        if ip in svc.external and (not renderer.namespaces or renderer.exposed(svc.ns)):
            try:
                out.append(label(svc.name) + label(svc.ns))
            except ValueError:
                continue
    return out


def addresses(kube, headless: bool) -> list[tuple[str, bytes | None]]:
    """The addresses ``ns1.APEX.ZONE`` has: the external addresses of the services whose endpoints
    are this server (a headless one's endpoints, with ``headless``), else its own addresses."""
    store, found, out = kube.index.store, False, []
    for local in kube.index.local_ips:
        for sl in store.slices_at(local):
            found = True
            svc = store.services.get((sl.ns, sl.service))
            if svc is None:
                continue
            if headless and svc.kind == HEADLESS:
                out.extend(ip for ip, _host in sl.endpoints)
            else:
                out.extend(ip for ip in svc.external if canonical_ip(ip) is not None)  # hostnames have no address
    if not found:
        out = list(kube.index.local_ips)
    return list(dict.fromkeys(out))

