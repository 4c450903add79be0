"""The kubernetes plugin's renderer: (name, store) -> the name's answers, as CoreDNS gives them.

``Renderer.render(key, zone)`` reads the store and returns a ``Name`` (every answer the
name has, packed; see ``memo.py``) with the dependency keys it read, or ``(None, ())``
when the name does not exist.  It changes nothing: the index keeps what it returns.
``apex_names`` renders the few names every zone has (SOA, NS, ``ns.dns``,
``dns-version``, ``svc``, ``pod``), ``negatives`` the NODATA/NXDOMAIN/SERVFAIL answers.

What CoreDNS decides and this reproduces: namespaces must exist (and pass ``namespaces`` /
``namespace_labels``) for their names to exist; not-ready endpoints are left out (by the
store's readers); a headless service without ready endpoints does not exist; ``ignore
empty_service`` hides ClusterIP services without endpoints; SRV weights split 100 over the
records; PTR names point into the first zone, and with ``namespaces`` set only while the
namespace is present.
"""

from __future__ import annotations

import math

from pydns.wire import NXDOMAIN, SERVFAIL, Answer

from .memo import Name
from .objects import CLUSTER_IP, EXTERNAL, HEADLESS, Service, canonical_ip
from .packing import (TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT, Packer,
                      address, build, ip_of_reverse, label, name_wire, pointer, soa_record, txt_rdata,
                      wire_labels)
from .store import Store, address_dep, namespace_dep, pod_dep, service_dep

DNS_SCHEMA_VERSION = "1.1.0"
VERSION_TTL = 28800
SVC, POD, NS_DNS = b"\x03svc", b"\x03pod", b"\x02ns\x03dns"
NOT_FOUND = (None, ())


class Zone:
    __slots__ = ("name", "wire", "reverse", "negatives")

    def __init__(self, name: str):
        self.name = name
        self.wire = name_wire(name)
        self.reverse = name.endswith(("in-addr.arpa.", "ip6.arpa."))
        self.negatives: dict[int, tuple[Answer, Answer, Answer]] = {}


class Renderer:
    def __init__(self, store: Store, primary: Zone, *, ttl: int, namespaces: frozenset, pods: str,
                 ignore_empty_service: bool, plugin: str):
        self.store = store
        self.primary = primary
        self.ttl = ttl
        self.soa_ttl = min(ttl, 300)
        self.namespaces = namespaces
        self.pods_mode = pods
        self.ignore_empty = ignore_empty_service
        self.plugin = plugin

    def exposed(self, ns: str) -> bool:
        return ns in self.store.namespaces and (not self.namespaces or ns in self.namespaces)

    # ================================================================ any name
    def render(self, key: bytes, zone: Zone) -> tuple[Name | None, tuple]:
        """(the name, the dependency keys it was made from), or (None, ()) if it does not exist."""
        if zone.reverse:
            return self._ptr(key)
        labels = wire_labels(key[: len(key) - len(zone.wire)])
        n = len(labels)
        if n == 2 and labels[1] in (b"svc", b"pod"):
            return self._namespace(labels[0].decode("latin-1"), labels[1] == b"pod")
        if n < 3:
            return NOT_FOUND
        ns = labels[-2].decode("latin-1")
        if labels[-1] == b"pod":
            return self._pod(key, zone, labels, ns)
        if labels[-1] != b"svc" or n > 5:
            return NOT_FOUND
        skey = (ns, labels[-3].decode("latin-1"))
        deps = (service_dep(*skey), namespace_dep(ns))
        svc = self.store.services.get(skey)
        if svc is None or svc.base is None or not self.exposed(ns):
            return NOT_FOUND
        if n == 4:
            entries = self._endpoint_entries(svc, labels[0])
        elif n == 5 and not _canonical_port(labels):
            entries = self._port_entries(svc, labels)
        else:
            data = self.service_names(svc).get(key[: len(key) - len(zone.wire)])
            if isinstance(data, str):
                return self._cname(key, data), deps
            entries = data
        if not entries:
            return NOT_FOUND
        return Name(self._entry_answers(key, zone, entries)), deps

    def _namespace(self, ns: str, pod: bool) -> tuple[Name | None, tuple]:
        if (pod and self.pods_mode == "disabled") or not self.exposed(ns):
            return NOT_FOUND
        return Name(empty=True), (namespace_dep(ns),)

    # ================================================================ services
    def service_names(self, svc: Service) -> dict[bytes, object]:
        """The service's own names and ``_port._proto`` names (wire prefix before the zone) -> data.

        The data is the CNAME target of an ExternalName service, else a tuple of
        (address, port, target prefix) in CoreDNS's order: the "services" its lookup finds.
        """
        base = svc.base
        if svc.kind == EXTERNAL:
            return {base: svc.target} if svc.target else {}
        slices = self.store.slices_of((svc.ns, svc.name))
        if self.ignore_empty and svc.kind == CLUSTER_IP and not any(sl.ips for sl in slices):
            return {}
        names: dict[bytes, list] = {}
        if svc.kind == CLUSTER_IP:
            if svc.ips:
                names[base] = [(ip, port, base) for _n, _p, port in svc.ports for ip in svc.ips]
                for pname, proto, port in svc.ports:
                    prefix = _port_prefix(pname, proto, base)
                    if prefix is not None:
                        names.setdefault(prefix, []).extend((ip, port, base) for ip in svc.ips)
        if svc.kind == HEADLESS:
            for sl in slices:
                for ip, host in sl.endpoints:
                    endpoint = host + base
                    entries = [(ip, port, endpoint) for _n, _p, port in sl.ports]
                    names.setdefault(base, []).extend(entries)
                    for (pname, proto, _port), entry in zip(sl.ports, entries):
                        prefix = _port_prefix(pname, proto, base)
                        if prefix is not None:
                            names.setdefault(prefix, []).append(entry)
        return {prefix: tuple(entries) for prefix, entries in names.items()}

    def _endpoint_entries(self, svc: Service, host: bytes):
        """What ``host.svc.ns.svc`` holds: (address, port, name) for each port of each match."""
        if svc.kind == EXTERNAL:
            return None
        wanted = bytes((len(host),)) + host
        endpoint = wanted + svc.base
        out = []
        for sl in self.store.slices_of((svc.ns, svc.name)):
            for ip, name in sl.endpoints:
                if name == wanted:
                    out.extend((ip, port, endpoint) for _n, _p, port in sl.ports)
        return tuple(out)

    def _port_entries(self, svc: Service, labels: list[bytes]):
        """``_port._proto`` written without underscores, or with ``_`` as a wildcard."""
        if svc.kind == EXTERNAL:
            return None
        port, proto = _strip(labels[0]), _strip(labels[1])
        slices = self.store.slices_of((svc.ns, svc.name))
        if self.ignore_empty and svc.kind == CLUSTER_IP and not any(sl.ips for sl in slices):
            return None
        base = svc.base
        if svc.kind == CLUSTER_IP:
            return tuple((ip, p, base) for name, pr, p in svc.ports if _match(port, name) and _match(proto, pr)
                         for ip in svc.ips)
        out = []
        for sl in slices:
            for ip, host in sl.endpoints:
                for name, pr, p in sl.ports:
                    if _match(port, name) and _match(proto, pr):
                        out.append((ip, p, host + base))
        return tuple(out)

    def _cname(self, key: bytes, target: str) -> Name | None:
        try:
            wire = name_wire(target)
        except ValueError:
            return None
        answer = build([Packer(key).named(TYPE_CNAME, self.ttl, wire)], ttl=self.ttl, plugin=self.plugin)
        return Name({TYPE_CNAME: answer}, external=target + ".")

    def _entry_answers(self, key: bytes, zone: Zone, entries: tuple) -> dict[int, Answer]:
        """A, AAAA and SRV answers for a name whose lookup finds ``entries``."""
        ttl, plugin = self.ttl, self.plugin
        packer = Packer(key)
        out: dict[int, Answer] = {}
        v4, v6, seen = [], [], set()
        for ip, _port, _target in entries:
            if ip not in seen:
                seen.add(ip)
                rtype, packed = address(ip)
                (v4 if rtype == TYPE_A else v6).append(packer.here(rtype, ttl, packed))
        if v4:
            out[TYPE_A] = build(v4, ttl=ttl, plugin=plugin)
        if v6:
            out[TYPE_AAAA] = build(v6, ttl=ttl, plugin=plugin)
        # CoreDNS shares a weight of 100 out among every "service" the lookup found.
        weight = max(1, math.floor(100.0 / (100 * len(entries)) * 100))
        srv, extra, dup = [], [], set()
        for ip, port, target in entries:
            if port < 0:
                continue
            tkey = target + zone.wire
            if (tkey, port) not in dup:
                dup.add((tkey, port))
                srv.append(packer.srv(ttl, 0, weight, port & 0xFFFF, tkey))
            if (tkey, ip) not in dup:
                dup.add((tkey, ip))
                rtype, packed = address(ip)
                extra.append(packer.rr(tkey, rtype, ttl, packed))
        if srv:
            out[TYPE_SRV] = build(srv, extra, ttl=ttl, plugin=plugin)
        return out

    # ================================================================ pods
    def _pod(self, key: bytes, zone: Zone, labels: list[bytes], ns: str) -> tuple[Name | None, tuple]:
        """``1-2-3-4.ns.pod``; CoreDNS ignores labels in front of the address (up to two)."""
        if self.pods_mode == "disabled" or len(labels) > 5 or not self.exposed(ns):
            return NOT_FOUND
        podname = labels[-3].decode("latin-1")
        if podname.count("-") == 3 and "--" not in podname:
            text = podname.replace("-", ".")
        else:
            text = podname.replace("-", ":")
        ip = canonical_ip(text)
        if ip is None:
            return NOT_FOUND
        count = 1
        if self.pods_mode == "verified":
            count = self.store.pod_count(ns, text)
            if not count:
                return NOT_FOUND
            if len(labels) > 3:
                count = 1  # one "service" per pod only where the name is the pod's own
        try:
            prefix = label(podname) + label(ns) + POD
        except ValueError:
            return NOT_FOUND
        return Name(self._entry_answers(key, zone, ((ip, 0, prefix),) * count)), (namespace_dep(ns),
                                                                                   pod_dep(ns, text))

    # ================================================================ reverse
    def _ptr(self, key: bytes) -> tuple[Name | None, tuple]:
        """An address's PTR: its service's name, else its endpoints' names."""
        ip = ip_of_reverse(key)
        if ip is None:
            return NOT_FOUND
        deps = [address_dep(ip)]
        # CoreDNS: with ``namespaces`` set, only namespaces that are exposed (and present).
        check = self.exposed if self.namespaces else None
        targets: list[bytes] = []
        zone = self.primary.wire
        for svc in self.store.services_at(ip):
            deps.append(namespace_dep(svc.ns))
            if svc.base is not None and (check is None or check(svc.ns)):
                targets = [svc.base + zone]
                break
        if not targets:
            for sl in self.store.slices_at(ip):
                deps.append(namespace_dep(sl.ns))
                if check is not None and not check(sl.ns):
                    continue
                for addr, host in sl.endpoints:
                    if addr != ip:
                        continue
                    try:
                        target = host + label(sl.service) + label(sl.ns) + SVC + zone
                    except ValueError:
                        continue
                    if target not in targets:
                        targets.append(target)
        if not targets:
            return NOT_FOUND
        packer = Packer(key)
        answer = build([packer.named(TYPE_PTR, self.ttl, t) for t in targets], ttl=self.ttl, plugin=self.plugin)
        return Name({TYPE_PTR: answer}, strict=True), tuple(dict.fromkeys(deps))

    # ================================================================ every zone's own names
    def ns_addresses(self, local_ips) -> tuple:
        """(name prefix, address) pairs for the zone's NS, as CoreDNS finds them.

        The service whose endpoints hold this server's own addresses (kube-dns in a cluster)
        names the NS, with its cluster IPs (or, headless, the endpoint addresses); without
        one, ``ns.dns.ZONE`` with the local addresses.
        """
        found, out = False, []
        for local in local_ips:
            for sl in self.store.slices_at(local):
                found = True
                svc = self.store.services.get((sl.ns, sl.service))
                if svc is None or svc.base is None:
                    continue
                if svc.kind == HEADLESS:
                    out.extend((host + svc.base, ip) for ip, host in sl.endpoints)
                else:
                    out.extend((svc.base, ip) for ip in svc.ips)
        if not found:
            out = [(NS_DNS, ip) for ip in local_ips]
        return tuple(dict.fromkeys(out))

    def apex_names(self, zone: Zone, serial: int, ns_data: tuple) -> dict[bytes, Name]:
        """The names every zone has: apex (SOA, NS), ``svc``, ``pod``, ``ns.dns``, ``dns-version``."""
        ttl, plugin = self.ttl, self.plugin
        apex = zone.wire
        at = b"\x00" if apex == b"\x00" else pointer(12)
        answers = {TYPE_SOA: build([soa_record(at, self.soa_ttl, serial, ttl)], ttl=self.soa_ttl, plugin=plugin)}
        packer = Packer(apex)
        ns_rrs, extra = [], []
        for prefix, ip in ns_data:
            target = prefix + apex
            rr = packer.named(TYPE_NS, ttl, target)
            if rr not in ns_rrs:
                ns_rrs.append(rr)
            rtype, packed = address(ip)
            extra.append(packer.rr(target, rtype, ttl, packed))
        if ns_rrs:
            answers[TYPE_NS] = build(ns_rrs, extra, ttl=ttl, plugin=plugin)
        here = Packer(NS_DNS + apex)
        by_type: dict[int, list[bytes]] = {TYPE_A: [], TYPE_AAAA: []}
        for _prefix, ip in ns_data:
            rtype, packed = address(ip)
            rr = here.here(rtype, ttl, packed)
            if rr not in by_type[rtype]:
                by_type[rtype].append(rr)
        version = b"\x0bdns-version" + apex
        txt = Packer(version).here(TYPE_TXT, VERSION_TTL, txt_rdata(DNS_SCHEMA_VERSION))
        return {
            apex: Name(answers, empty=True),
            SVC + apex: Name(empty=True),
            POD + apex: Name(empty=True),
            NS_DNS + apex: Name({t: build(rrs, ttl=ttl, plugin=plugin) for t, rrs in by_type.items() if rrs},
                                empty=True),
            version: Name({TYPE_TXT: build([txt], ttl=VERSION_TTL, plugin=plugin)}, strict=True),
        }

    def negatives(self, zone: Zone, qlen: int, serial: int) -> tuple[Answer, Answer, Answer]:
        """(NODATA, NXDOMAIN, SERVFAIL) for a question of ``qlen`` wire bytes in ``zone``."""
        at = b"\x00" if zone.wire == b"\x00" else pointer(12 + qlen - len(zone.wire))
        soa = [soa_record(at, self.soa_ttl, serial, self.ttl)]
        return tuple(build([], authority=soa, ttl=self.soa_ttl, rcode=rcode, plugin=self.plugin)
                     for rcode in (0, NXDOMAIN, SERVFAIL))


def _canonical_port(labels: list[bytes]) -> bool:
    """``_port._proto`` as the spec writes it (both labels with an underscore)."""
    port_label, proto_label = labels[0], labels[1]
    return len(port_label) > 1 and len(proto_label) > 1 and port_label[0] == proto_label[0] == 0x5F


def _port_prefix(port: str, proto: str, base: bytes) -> bytes | None:
    """``_port._proto.`` in front of a service name, for named ports only."""
    if not port or not proto:
        return None
    try:
        return label("_" + port) + label("_" + proto) + base
    except ValueError:
        return None


def _strip(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return text[1:] if text.startswith("_") else text


def _match(wanted: str, have: str) -> bool:
    return not wanted or wanted == have
