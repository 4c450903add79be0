"""The few fields the index keeps of each Kubernetes object, read from raw API dicts.

Objects arrive as the API returns them (JSON dicts); keeping them whole would cost
kilobytes each, so each is reduced at once to the fields DNS needs, in ``__slots__``
classes.  The readers are lenient: a missing field takes the API server's default, and
an address that does not parse is dropped rather than failing the object.
"""

from __future__ import annotations

import socket
from typing import NamedTuple

from .packing import label

CLUSTER_IP, HEADLESS, EXTERNAL = 0, 1, 2
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# KEP-1645 (Multi-Cluster Services): a ServiceImport's slices, and the cluster each came from.
MCS_SERVICE_NAME_LABEL = "multicluster.kubernetes.io/service-name"
SOURCE_CLUSTER_LABEL = "multicluster.kubernetes.io/source-cluster"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
NO_PORTS = (("", "", -1),)
# What the API source's slimming (responses.slim) leaves of a slice's not-ready endpoints: their
# address count, under a name no API object has.
NOT_READY_COUNT = "pydns/notReady"
SVC = b"\x03svc"
_V4_MAPPED = bytes(10) + b"\xff\xff"  # CoreDNS's sentinel: names without ports still get address records


def meta_of(obj: dict) -> dict:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def key_of(obj: dict) -> tuple[str, str]:
    """(namespace, name) of a namespaced object; the namespace defaults to "default"."""
    meta = meta_of(obj)
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def canonical_ip(text) -> str | None:
    """An address in canonical text form (IPv4-mapped IPv6 becomes IPv4), or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    try:
        if ":" in text:
            packed = socket.inet_pton(socket.AF_INET6, text)
            if packed[:12] == _V4_MAPPED:
                return socket.inet_ntop(socket.AF_INET, packed[12:])
            return socket.inet_ntop(socket.AF_INET6, packed)
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


def dashed(ip: str) -> str:
    """The endpoint name CoreDNS gives an address without a hostname (``172-0-0-2``, ``5678-abcd--1``)."""
    if "." in ip:
        return ip.replace(".", "-")
    name = ip.replace(":", "-")
    return name + "0" if name.endswith("-") else name


_SHARED: dict[tuple, tuple] = {}
_SHARED_MAX = 4096


def _shared(value: tuple) -> tuple:
    """One copy of a tuple that many objects hold alike (port lists, endpoints without names):
    ten thousand services with the same ports keep one tuple, not ten thousand."""
    held = _SHARED.get(value)
    if held is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        held = _SHARED[value] = value
    return held


def _ports(raw) -> tuple:
    ports = []
    for p in raw if isinstance(raw, list) else ():
        if not isinstance(p, dict):
            continue
        port = p.get("port")
        ports.append((str(p.get("name") or "").lower(), str(p.get("protocol") or "TCP").lower(),
                      port if isinstance(port, int) else -1))
    return _shared(tuple(ports)) if ports else NO_PORTS


def strip_underscore(raw: bytes) -> str:
    """A query's port or protocol label (``_http``, or written without the underscore)."""
    text = raw.decode("latin-1")
    return text[1:] if text.startswith("_") else text


def port_matches(wanted: str | None, have: str) -> bool:
    """A port name or protocol asked for (none: any) against one read by ``_ports``."""
    return not wanted or wanted == have


class Service:
    """``base`` is the wire form of ``name.ns.svc`` (None when the names are no DNS labels).

    ``external``: what *k8s_external* serves, as CoreDNS collects it: ``spec.externalIPs``,
    then each load balancer ingress's IP (or, without one, its hostname).
    ``publish_not_ready``: ``spec.publishNotReadyAddresses`` (for ``pydns explain`` only).
    """

    __slots__ = ("ns", "name", "kind", "ips", "ports", "target", "base", "external", "publish_not_ready")

    def __init__(self, ns: str, name: str, kind: int, ips: tuple, ports: tuple, target: str, external: tuple = (),
                 publish_not_ready: bool = False):
        self.ns, self.name, self.kind, self.ips, self.ports, self.target = ns, name, kind, ips, ports, target
        self.external, self.publish_not_ready = external, publish_not_ready
        try:
            self.base = label(name) + label(ns) + SVC
        except ValueError:
            self.base = None

    def __eq__(self, other) -> bool:
        return isinstance(other, Service) and self.state == other.state

    __hash__ = None

    @property
    def state(self) -> tuple:
        return (self.ns, self.name, self.kind, self.ips, self.ports, self.target, self.external,
                self.publish_not_ready)


def _external_addresses(obj: dict, spec: dict) -> tuple:
    """``spec.externalIPs`` and the load balancer's ingress addresses (or hostnames), in CoreDNS's order."""
    out = []
    for raw in spec.get("externalIPs") or ():
        ip = canonical_ip(raw)
        if ip is not None:
            out.append(ip)
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    balancer = status.get("loadBalancer") if isinstance(status.get("loadBalancer"), dict) else {}
    for ingress in balancer.get("ingress") or ():
        if not isinstance(ingress, dict):
            continue
        ip = canonical_ip(ingress.get("ip"))
        if ip is not None:
            out.append(ip)
        elif isinstance(ingress.get("hostname"), str) and ingress["hostname"].strip():
            out.append(ingress["hostname"].strip().rstrip(".").lower())
    return tuple(out)


def read_service(obj: dict) -> Service | None:
    ns, name = key_of(obj)
    if not name:
        return None
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    external = _external_addresses(obj, spec)
    publish = spec.get("publishNotReadyAddresses") is True
    if spec.get("type") == "ExternalName":
        target = str(spec.get("externalName") or "").strip().rstrip(".")
        # An address is no CNAME target: CoreDNS serves nothing for such a service.
        if canonical_ip(target) is not None:
            target = ""
        return Service(ns, name, EXTERNAL, (), NO_PORTS, target.lower(), external)
    raw_ips = spec.get("clusterIPs") or [spec.get("clusterIP") or ""]
    if not isinstance(raw_ips, list):
        raw_ips = [raw_ips]
    if raw_ips and raw_ips[0] == "None":
        return Service(ns, name, HEADLESS, (), _ports(spec.get("ports")), "", external, publish)
    ips = tuple(ip for ip in map(canonical_ip, raw_ips) if ip is not None)
    return Service(ns, name, CLUSTER_IP, ips, _ports(spec.get("ports")), "", external, publish)


class Slice:
    """An EndpointSlice's ready addresses, and each one's endpoint name as a wire label.

    Addresses and names are kept in two parallel tuples rather than a pair per endpoint: a
    large cluster has a hundred thousand endpoints, and the pairs alone would be 5 MB.  A
    name that is the dashed address (most endpoints have no hostname) is kept as None and
    made again when asked for.  ``zones`` (read for ``zonal`` only) is each endpoint's
    topology zone, lower-cased, or None; ``cluster`` is a multi-cluster slice's source
    cluster (``multicluster``).  ``not_ready`` counts the addresses of the endpoints that are
    not served (for ``pydns explain``); the endpoints themselves are not kept.
    """

    __slots__ = ("ns", "service", "ports", "ips", "names", "zones", "cluster", "not_ready")

    def __init__(self, ns: str, service: str, ports: tuple, ips: tuple, names: tuple, zones: tuple = (),
                 cluster: str = "", not_ready: int = 0):
        self.ns, self.service, self.ports, self.ips, self.names = ns, service, ports, ips, names
        self.zones, self.cluster, self.not_ready = zones, cluster, not_ready

    @property
    def endpoints(self):
        """(address, name as a wire label) of each endpoint."""
        for ip, name in zip(self.ips, self.names):
            yield ip, name if name is not None else label(dashed(ip), remember=False)

    def __eq__(self, other) -> bool:
        return self.answers_as(other) and self.not_ready == other.not_ready

    def answers_as(self, other) -> bool:
        """Whether ``other`` makes the same DNS answers (it may differ in ``not_ready``)."""
        return (isinstance(other, Slice) and self.ns == other.ns and self.service == other.service
                and self.ports == other.ports and self.ips == other.ips and self.names == other.names
                and self.zones == other.zones and self.cluster == other.cluster)

    __hash__ = None


def read_slice(obj: dict, pod_names: bool, zonal: bool = False,
               service_label: str = SERVICE_NAME_LABEL) -> Slice | None:
    """The ready addresses of a slice, and how many are not ready; with ``pod_names`` an address without a hostname is
    named after its pod (``endpoint_pod_names``); with ``zonal`` each endpoint's zone is kept.
    ``service_label`` names the label that says whose slice it is (a ServiceImport's, for
    multi-cluster slices, whose source cluster is kept too)."""
    ns, name = key_of(obj)
    labels = labels_of(obj)
    service = str(labels.get(service_label) or "")
    if not name or not service or obj.get("addressType") == "FQDN":
        return None
    cluster = str(labels.get(SOURCE_CLUSTER_LABEL) or "") if service_label == MCS_SERVICE_NAME_LABEL else ""
    ips, names, zones = [], [], []
    counted = obj.get(NOT_READY_COUNT)
    not_ready = counted if type(counted) is int and counted > 0 else 0
    for ep in obj.get("endpoints") or ():
        if not isinstance(ep, dict):
            continue
        if not endpoint_ready(ep):
            not_ready += address_count(ep)
            continue
        zone = ep.get("zone") if zonal and isinstance(ep.get("zone"), str) and ep.get("zone") else None
        hostname = str(ep.get("hostname") or "")
        if not hostname and pod_names:
            ref = ep.get("targetRef") if isinstance(ep.get("targetRef"), dict) else {}
            ref_name = str(ref.get("name") or "")
            if len(ref_name) < 64:
                hostname = ref_name
        for raw in ep.get("addresses") or ():
            ip = canonical_ip(raw)
            if ip is not None:
                # Endpoint names are nearly all distinct: not worth remembering as labels.
                name = None
                if hostname:
                    try:
                        name = label(hostname, remember=False)
                    except ValueError:  # not a DNS label: the endpoint goes by its address
                        pass
                ips.append(ip)
                names.append(name)
                zones.append(zone.lower() if zone else None)
    names, zones = tuple(names), tuple(zones)
    return Slice(ns, service, _ports(obj.get("ports")), tuple(ips), names if any(names) else _shared(names),
                 zones if any(zones) else (), cluster, not_ready)


def endpoint_ready(ep: dict) -> bool:
    """Whether an endpoint is served: CoreDNS reads its ``ready`` condition alone (unset means
    ready, as the API documents; ``serving`` and ``terminating`` are not looked at)."""
    conditions = ep.get("conditions")
    return not isinstance(conditions, dict) or conditions.get("ready") is not False


def address_count(ep: dict) -> int:
    """The addresses of an endpoint that parse (those ``read_slice`` would serve were it ready)."""
    return sum(1 for raw in ep.get("addresses") or () if canonical_ip(raw) is not None)


def trigger_time(obj: dict) -> str | None:
    value = (meta_of(obj).get("annotations") or {}).get(TRIGGER_TIME)
    return value if isinstance(value, str) else None


class Pod(NamedTuple):
    """What the store keeps of a pod (``pods verified``): its primary address (a HostAddress
    when it runs in the host's network) and its labels, a set shared with every pod that has
    the same (``podlabels.py``)."""

    address: str
    labels: tuple


def read_pod(obj: dict) -> tuple[bool, str | None]:
    """(terminating, primary address or None) of a pod."""
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    return bool(meta_of(obj).get("deletionTimestamp")), canonical_ip(status.get("podIP"))


def labels_of(obj: dict) -> dict:
    labels = meta_of(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


class ServiceImport:
    """A ServiceImport (multicluster.x-k8s.io): ClusterSetIP (``ips``) or headless, with its ports."""

    __slots__ = ("ns", "name", "headless", "ips", "ports", "base")

    def __init__(self, ns: str, name: str, headless: bool, ips: tuple, ports: tuple):
        self.ns, self.name, self.headless, self.ips, self.ports = ns, name, headless, ips, ports
        try:
            self.base = label(name) + label(ns) + SVC
        except ValueError:
            self.base = None

    def __eq__(self, other) -> bool:
        return (isinstance(other, ServiceImport) and self.ns == other.ns and self.name == other.name
                and self.headless == other.headless and self.ips == other.ips and self.ports == other.ports)

    __hash__ = None


def read_service_import(obj: dict) -> ServiceImport | None:
    """A ServiceImport's type, ``spec.ips`` and ports; no ports means no ClusterSetIP records, as
    in CoreDNS (unlike a Service, which then still has its address records)."""
    ns, name = key_of(obj)
    if not name:
        return None
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    raw = spec.get("ips") if isinstance(spec.get("ips"), list) else ()
    ips = tuple(ip for ip in map(canonical_ip, raw) if ip is not None)
    ports = _ports(spec.get("ports"))
    return ServiceImport(ns, name, spec.get("type") == "Headless", ips, () if ports == NO_PORTS else ports)
