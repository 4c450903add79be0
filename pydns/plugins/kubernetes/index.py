"""The kubernetes plugin's object store, and the ready answers rendered from it.

Sources (the API's list+watch, or manifest files) feed raw objects in with::

    index.upsert_all(kind, objects, seen)  # one page of a list; ``seen`` collects their keys
    index.retain(kind, seen)               # after the last page: delete what the list lacked
    index.replace(kind, objects)           # both at once: the full state of a kind
    index.upsert(kind, obj)
    index.delete(kind, obj)

for the kinds "Namespace", "Service", "EndpointSlice" and "Pod", on the event loop's thread.
A list is applied page by page, so that a large cluster's raw objects are never all held
at once.  Each object is reduced to the few fields DNS needs (``objects.py``) and the names
it touches are re-rendered at once: a service's own names (``svc.ns.svc.ZONE`` and its
``_port._proto`` names), its namespace's names.  Re-rendering compares what the names held
before and after, so a change to one endpoint of a large headless service repacks only the
names that moved.

Endpoint names (``host.svc.ns.svc.ZONE``) and PTR names are nine in ten of a cluster's
names and rarely asked, so they are not rendered ahead of time: the first query for one
renders it from the store into ``table`` like any other answer (``lazy`` remembers at most
``LAZY_MAX`` of them, oldest out first), and a change to its service or address drops it.

What queries read:

``table``     (lower-cased wire name, qtype) -> ready ``Answer``
``names``     wire names that exist: a missing type there is NODATA
``empty``     names that exist without records (zone apex, ``svc.ZONE``, namespaces):
              CoreDNS answers TXT there with NXDOMAIN
``external``  ExternalName service names -> their CNAME target (A/AAAA follow it per query)

NODATA, NXDOMAIN and SERVFAIL answers carry the zone's SOA, compressed against the
question; they depend on the question's length only, so they are kept per (zone, length).
The SOA serial is the time of the last change, as in CoreDNS.  ``dynamic`` answers the few
names that cannot be listed ahead of time (``pods insecure``, ``_port._proto`` written
without underscores) from the store; ``recent`` keeps such slow-path answers (NXDOMAIN
above all: clients walking their search path ask for names that do not exist all the
time) until the next change.

What CoreDNS decides and this reproduces: namespaces must exist (and pass ``namespaces`` /
``namespace_labels``) for their names to exist; ``labels`` filters services, endpoint
slices and pods; not-ready endpoints are left out; a headless service without ready
endpoints does not exist; ``ignore empty_service`` hides ClusterIP services without
endpoints; SRV weights split 100 over the records; PTR names point into the first zone.
"""

from __future__ import annotations

from pydns.zones import wire_lookup
import logging
import math
import time
from collections import OrderedDict
from datetime import datetime, timezone

from pydns import metrics
from pydns.wire import NXDOMAIN, SERVFAIL, Answer

from .objects import (CLUSTER_IP, EXTERNAL, HEADLESS, Service, Slice, canonical_ip, key_of, labels_of, meta_of,
                      read_pod, read_service, read_slice, trigger_time)
from .packing import (TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT, Packer,
                      address, build, ip_of_reverse, label, name_wire, pointer, reverse_wire, soa_record,
                      txt_rdata, wire_labels)

log = logging.getLogger("plugin/kubernetes")

DNS_SCHEMA_VERSION = "1.1.0"
VERSION_TTL = 28800
KINDS = ("Namespace", "Service", "EndpointSlice", "Pod")
SVC, POD = b"\x03svc", b"\x03pod"
RECENT_MAX = 10000
LAZY_MAX = 16384

_latency = metrics.histogram(
    "coredns_kubernetes_dns_programming_duration_seconds",
    "Histogram of the time (in seconds) it took to program a dns instance.",
    ("service_kind",), buckets=tuple(0.001 * 2**i for i in range(20)))


class Zone:
    __slots__ = ("name", "wire", "reverse", "negatives")

    def __init__(self, name: str):
        self.name = name
        self.wire = name_wire(name)
        self.reverse = name.endswith(("in-addr.arpa.", "ip6.arpa."))
        self.negatives: dict[int, tuple[Answer, Answer, Answer]] = {}


class _Batch:
    """The names one change touches: services (with what they rendered before), PTRs, pods, namespaces."""

    __slots__ = ("index", "services", "ips", "pods", "namespaces")

    def __init__(self, index: "Index"):
        self.index = index
        self.services: dict[tuple[str, str], dict] = {}
        self.ips: set[str] = set()
        self.pods: set[tuple[str, str]] = set()
        self.namespaces: set[str] = set()

    def touch_service(self, skey: tuple[str, str]) -> None:
        """Call before changing anything the service's names depend on."""
        if skey not in self.services:
            index = self.index
            # Endpoint names only matter if some were rendered: no query runs within a batch.
            endpoints = index._endpoint_prefixes(skey) if index.lazy else ()
            self.services[skey] = (index._service_names(skey), endpoints)

    def __bool__(self) -> bool:
        return bool(self.services or self.ips or self.pods or self.namespaces)


class Index:
    def __init__(self, zones: list[str], *, ttl: int = 5, namespaces=(), labels=None, namespace_labels=None,
                 pods: str = "disabled", endpoint_pod_names: bool = False, noendpoints: bool = False,
                 ignore_empty_service: bool = False, local_ips=(), plugin: str = "kubernetes"):
        self.zones = [Zone(z) for z in zones]
        self.forward = [z for z in self.zones if not z.reverse]
        if not self.forward:
            raise ValueError("non-reverse zone name must be used")
        self.primary = self.forward[0]
        self._zone_by_wire = {z.wire: z for z in self.zones}
        self.ttl = ttl
        self.soa_ttl = min(ttl, 300)
        self.namespaces = frozenset(namespaces)
        self.labels = labels
        self.namespace_labels = namespace_labels
        self.pods_mode = pods
        self.pod_names = endpoint_pod_names
        self.noendpoints = noendpoints
        self.ignore_empty = ignore_empty_service
        self.plugin = plugin
        self.local_ips: tuple[str, ...] = tuple(local_ips)

        # what queries read
        self.table: dict[tuple[bytes, int], Answer] = {}
        self.names: set[bytes] = set()
        self.empty: set[bytes] = set()
        self.external: dict[bytes, str] = {}
        self.generation = 0
        self.serial = int(time.time())
        # Answers worked out on the slow path (NXDOMAIN, NODATA, dynamic names), until the next change.
        self.recent: dict[tuple[bytes, int], Answer] = {}
        # Endpoint and PTR names rendered on their first query (oldest first) -> the types
        # their answers hold in ``table``.
        self.lazy: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()

        # the store
        self.present_ns: set[str] = set()
        self.services: dict[tuple[str, str], Service] = {}
        self.services_in: dict[str, set[str]] = {}
        self.slices: dict[tuple[str, str], Slice] = {}
        # Reverse lookups hold one key, or a tuple of several (see _add): far lighter than a set each.
        self.slices_of: dict[tuple[str, str], tuple] = {}
        self.svc_by_ip: dict[str, tuple] = {}
        self.ep_by_ip: dict[str, tuple] = {}
        self.pods: dict[tuple[str, str], str] = {}
        self.pod_ips: dict[str, dict[str, int]] = {}
        self._ns_data: tuple = ()

        self._upserts = {"Namespace": self._upsert_namespace, "Service": self._upsert_service,
                         "EndpointSlice": self._upsert_slice, "Pod": self._upsert_pod}
        self._removals = {"Namespace": self._remove_namespace, "Service": self._remove_service,
                          "EndpointSlice": self._remove_slice, "Pod": self._remove_pod}
        for zone in self.zones:
            self._render_zone(zone)
        self._render_ns_records(force=True)

    # ================================================================ the source interface
    def upsert(self, kind: str, obj: dict) -> None:
        handler = self._upserts.get(kind)
        if handler is None:
            return
        batch = _Batch(self)
        self._guard(handler, batch, obj, kind)
        self._commit(batch)

    def delete(self, kind: str, obj: dict) -> None:
        remove = self._removals.get(kind)
        if remove is None:
            return
        batch = _Batch(self)
        self._guard(remove, batch, self._key(kind, obj), kind, obj)
        self._commit(batch)

    def upsert_all(self, kind: str, objects: list[dict], seen: set) -> None:
        """Apply one page of a list; the keys of its objects are added to ``seen``."""
        handler = self._upserts.get(kind)
        if handler is None:
            return
        batch = _Batch(self)
        for obj in objects:
            seen.add(self._key(kind, obj))
            self._guard(handler, batch, obj, kind)
        self._commit(batch)

    def retain(self, kind: str, seen: set) -> None:
        """Delete every object of ``kind`` whose key is not in ``seen`` (the end of a list)."""
        remove = self._removals.get(kind)
        if remove is None:
            return
        batch = _Batch(self)
        for key in [k for k in self._keys(kind) if k not in seen]:
            self._guard(remove, batch, key, kind)
        self._commit(batch)

    def replace(self, kind: str, objects: list[dict]) -> None:
        seen: set = set()
        self.upsert_all(kind, objects, seen)
        self.retain(kind, seen)

    @staticmethod
    def _key(kind: str, obj: dict):
        if kind == "Namespace":
            return str(meta_of(obj).get("name") or "")
        return key_of(obj)

    def _keys(self, kind: str):
        if kind == "Namespace":
            return list(self.present_ns)
        if kind == "Service":
            return list(self.services)
        if kind == "EndpointSlice":
            return list(self.slices)
        return list(self.pods)

    def _guard(self, fn, batch: _Batch, arg, kind: str, *more) -> None:
        try:
            fn(batch, arg, *more)
        except Exception:  # one odd object must not stop the others
            log.exception("ignoring a %s that could not be read: %r", kind,
                          key_of(arg) if isinstance(arg, dict) else arg)

    # ================================================================ namespaces
    def exposed(self, ns: str) -> bool:
        return ns in self.present_ns and (not self.namespaces or ns in self.namespaces)

    def _configured(self, ns: str) -> bool:
        return not self.namespaces or ns in self.namespaces

    def _upsert_namespace(self, batch: _Batch, obj: dict) -> None:
        name = str(meta_of(obj).get("name") or "")
        if not name:
            return
        present = self.namespace_labels is None or self.namespace_labels.matches(labels_of(obj))
        if present != (name in self.present_ns):
            self._set_namespace(batch, name, present)

    def _remove_namespace(self, batch: _Batch, name: str, obj: dict | None = None) -> None:
        if name in self.present_ns:
            self._set_namespace(batch, name, False)

    def _set_namespace(self, batch: _Batch, name: str, present: bool) -> None:
        for svc in self.services_in.get(name, ()):
            batch.touch_service((name, svc))
        for ip in self.pod_ips.get(name, ()):
            batch.pods.add((name, ip))
        batch.namespaces.add(name)
        if present:
            self.present_ns.add(name)
        else:
            self.present_ns.discard(name)

    # ================================================================ services
    def _upsert_service(self, batch: _Batch, obj: dict) -> None:
        skey = key_of(obj)
        svc = read_service(obj) if self.labels is None or self.labels.matches(labels_of(obj)) else None
        old = self.services.get(skey)
        if svc is None:
            if old is not None:
                self._remove_service(batch, skey)
            return
        if old == svc:
            return
        batch.touch_service(skey)
        if old is not None:
            self._unlink_service(batch, skey, old)
        self.services[skey] = svc
        self.services_in.setdefault(skey[0], set()).add(skey[1])
        for ip in svc.ips:
            _add(self.svc_by_ip, ip, skey)
            batch.ips.add(ip)

    def _remove_service(self, batch: _Batch, skey: tuple[str, str], obj: dict | None = None) -> None:
        old = self.services.get(skey)
        if old is None:
            return
        batch.touch_service(skey)
        self._unlink_service(batch, skey, old)
        del self.services[skey]
        names = self.services_in.get(skey[0])
        if names is not None:
            names.discard(skey[1])
            if not names:
                del self.services_in[skey[0]]

    def _unlink_service(self, batch: _Batch, skey, old: Service) -> None:
        for ip in old.ips:
            _discard(self.svc_by_ip, ip, skey)
            batch.ips.add(ip)

    # ================================================================ endpoint slices
    def _upsert_slice(self, batch: _Batch, obj: dict) -> None:
        if self.noendpoints:
            return
        key = key_of(obj)
        new = read_slice(obj, self.pod_names) if self.labels is None or self.labels.matches(labels_of(obj)) else None
        old = self.slices.get(key)
        if new is None:
            if old is not None:
                self._remove_slice(batch, key, obj)
            return
        if old == new:
            return
        if old is not None:
            batch.touch_service((old.ns, old.service))
        batch.touch_service((new.ns, new.service))
        if old is not None:
            self._unlink_slice(batch, key, old)
        self.slices[key] = new
        _add(self.slices_of, (new.ns, new.service), key)
        for ip, _name in new.endpoints:
            _add(self.ep_by_ip, ip, key)
            batch.ips.add(ip)
        self._observe_latency(obj, new)

    def _remove_slice(self, batch: _Batch, key: tuple[str, str], obj: dict | None = None) -> None:
        old = self.slices.get(key)
        if old is None:
            return
        batch.touch_service((old.ns, old.service))
        self._unlink_slice(batch, key, old)
        del self.slices[key]
        if obj is not None:
            self._observe_latency(obj, old)

    def _unlink_slice(self, batch: _Batch, key, old: Slice) -> None:
        _discard(self.slices_of, (old.ns, old.service), key)
        for ip, _name in old.endpoints:
            _discard(self.ep_by_ip, ip, key)
            batch.ips.add(ip)

    def _observe_latency(self, obj: dict, sl: Slice) -> None:
        """DNS programming latency: from the slice's last-change-trigger-time to now (CoreDNS's SLI)."""
        stamp = trigger_time(obj)
        svc = self.services.get((sl.ns, sl.service))
        if stamp is None or svc is None:
            return
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            log.warning("DnsProgrammingLatency cannot be calculated for EndpointSlice '%s/%s'; invalid "
                        "last-change-trigger-time %r", *key_of(obj), stamp)
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        kind = "headless_with_selector" if svc.kind == HEADLESS else "cluster_ip"
        _latency.labels(kind).observe(max(0.0, time.time() - when.timestamp()))

    # ================================================================ pods (pods verified)
    def _upsert_pod(self, batch: _Batch, obj: dict) -> None:
        if self.pods_mode != "verified":
            return
        key = key_of(obj)
        if self.labels is not None and not self.labels.matches(labels_of(obj)):
            self._remove_pod(batch, key)
            return
        terminating, ip = read_pod(obj)
        if terminating:  # CoreDNS keeps what it had until the pod is gone
            return
        old = self.pods.get(key)
        if old == ip:
            return
        self._remove_pod(batch, key)
        if ip is not None:
            self.pods[key] = ip
            counts = self.pod_ips.setdefault(key[0], {})
            counts[ip] = counts.get(ip, 0) + 1
            batch.pods.add((key[0], ip))

    def _remove_pod(self, batch: _Batch, key: tuple[str, str], obj: dict | None = None) -> None:
        ip = self.pods.pop(key, None)
        if ip is None:
            return
        counts = self.pod_ips.get(key[0], {})
        counts[ip] = counts.get(ip, 1) - 1
        if counts[ip] <= 0:
            del counts[ip]
            if not counts:
                self.pod_ips.pop(key[0], None)
        batch.pods.add((key[0], ip))

    # ================================================================ rendering
    def _commit(self, batch: _Batch) -> None:
        if not batch:
            return
        for skey, (before, endpoints_before) in batch.services.items():
            after = self._service_names(skey)
            if before or after:
                self._apply_names(before, after)
            if self.lazy:
                self._forget_endpoints(endpoints_before)
                self._forget_endpoints(self._endpoint_prefixes(skey))
        for ip in batch.ips:
            self._forget_ptr(ip)
        for ns, ip in batch.pods:
            self._render_pod(ns, ip)
        for ns in batch.namespaces:
            self._render_namespace(ns)
        self._render_ns_records()
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self.recent.clear()
        now = int(time.time())
        if now != self.serial:
            self.serial = now
            for zone in self.zones:
                zone.negatives.clear()
                self._render_soa(zone)

    def _service_names(self, skey: tuple[str, str]) -> dict[bytes, object]:
        """The names of a service rendered ahead of time (wire prefix before the zone) -> data.

        The data is the CNAME target of an ExternalName service, else a tuple of
        (address, port, target prefix) in CoreDNS's order: the "services" its lookup finds.
        """
        svc = self.services.get(skey)
        if svc is None or svc.base is None or not self.exposed(svc.ns):
            return {}
        base = svc.base
        if svc.kind == EXTERNAL:
            return {base: svc.target} if svc.target else {}
        slices = [self.slices[k] for k in _held(self.slices_of, skey)]
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

    def _apply_names(self, before: dict, after: dict) -> None:
        for prefix, data in before.items():
            if after.get(prefix) != data:
                for zone in self.forward:
                    self._drop(prefix + zone.wire)
        for prefix, data in after.items():
            if before.get(prefix) != data:
                for zone in self.forward:
                    key = prefix + zone.wire
                    if isinstance(data, str):
                        self._put_cname(key, data)
                    else:
                        self._put_entries(key, zone, data)

    def _drop(self, key: bytes) -> None:
        table = self.table
        for rtype in (TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_CNAME):
            table.pop((key, rtype), None)
        self.names.discard(key)
        self.empty.discard(key)
        self.external.pop(key, None)

    def _put_cname(self, key: bytes, target: str) -> None:
        try:
            wire = name_wire(target)
        except ValueError:
            return
        packer = Packer(key)
        self.table[(key, TYPE_CNAME)] = build([packer.named(TYPE_CNAME, self.ttl, wire)], ttl=self.ttl,
                                              plugin=self.plugin)
        self.external[key] = target + "."
        self.names.add(key)

    def _put_entries(self, key: bytes, zone: Zone, entries: tuple) -> None:
        for rtype, answer in self._entry_answers(key, zone, entries).items():
            self.table[(key, rtype)] = answer
        self.names.add(key)

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

    # ---------------------------------------------------------------- reverse
    def _reverse_key(self, ip: str) -> bytes | None:
        try:
            key = reverse_wire(ip)
        except (OSError, ValueError):
            return None
        return key if self.zone_of(key) is not None else None

    def _ptr_answer(self, ip: str, key: bytes) -> Answer | None:
        """The PTR answer of an address: its service's name, else its endpoints' names."""
        targets: list[bytes] = []
        zone = self.primary.wire
        for skey in _held(self.svc_by_ip, ip):
            base = self.services[skey].base
            if base is not None and self._configured(skey[0]):
                targets = [base + zone]
                break
        if not targets:
            for slkey in _held(self.ep_by_ip, ip):
                sl = self.slices[slkey]
                if not self._configured(sl.ns):
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
            return None
        packer = Packer(key)
        return build([packer.named(TYPE_PTR, self.ttl, t) for t in targets], ttl=self.ttl, plugin=self.plugin)

    # ---------------------------------------------------------------- names rendered on first query
    def _keep(self, key: bytes, answers: dict[int, Answer]) -> None:
        """Put a lazily rendered name's answers in ``table``, evicting the oldest such name when full."""
        self._forget(key)
        table = self.table
        for rtype, answer in answers.items():
            table[(key, rtype)] = answer
        lazy = self.lazy
        lazy[key] = tuple(answers)
        if len(lazy) > LAZY_MAX:
            old, types = lazy.popitem(last=False)
            for rtype in types:
                table.pop((old, rtype), None)

    def _forget(self, key: bytes) -> None:
        types = self.lazy.pop(key, None)
        if types:
            for rtype in types:
                self.table.pop((key, rtype), None)

    def _forget_endpoints(self, prefixes) -> None:
        for prefix in prefixes:
            for zone in self.forward:
                self._forget(prefix + zone.wire)

    def _forget_ptr(self, ip: str) -> None:
        if self.lazy:
            key = self._reverse_key(ip)
            if key is not None:
                self._forget(key)

    def _endpoint_prefixes(self, skey: tuple[str, str]) -> set[bytes]:
        """The endpoint names of a service, as wire prefixes before the zone."""
        svc = self.services.get(skey)
        if svc is None or svc.base is None:
            return set()
        base = svc.base
        return {host + base for k in _held(self.slices_of, skey) for _ip, host in self.slices[k].endpoints}

    def _endpoint_entries(self, labels: list[bytes]):
        """What ``host.svc.ns.svc`` holds: (address, port, name) for each port of each match."""
        host, service, ns = labels[0], labels[1], labels[2]
        svc = self.services.get((ns.decode("latin-1"), service.decode("latin-1")))
        if svc is None or svc.kind == EXTERNAL or svc.base is None or not self.exposed(svc.ns):
            return None
        wanted = bytes((len(host),)) + host
        endpoint = wanted + svc.base
        out = []
        for k in _held(self.slices_of, (svc.ns, svc.name)):
            sl = self.slices[k]
            for ip, name in sl.endpoints:
                if name == wanted:
                    out.extend((ip, port, endpoint) for _n, _p, port in sl.ports)
        return tuple(out)

    def _lazy_ptr(self, key: bytes) -> Answer | None:
        ip = ip_of_reverse(key)
        if ip is None:
            return None
        answer = self._ptr_answer(ip, key)
        if answer is not None:
            self._keep(key, {TYPE_PTR: answer})
        return answer

    # ---------------------------------------------------------------- pods and namespaces
    @staticmethod
    def _pod_label(ip: str) -> bytes:
        return label(ip.replace(".", "-") if "." in ip else ip.replace(":", "-"))

    def _render_pod(self, ns: str, ip: str) -> None:
        try:
            prefix = self._pod_label(ip) + label(ns) + POD
        except ValueError:
            return
        # One "service" per pod with the address, as CoreDNS's lookup finds them (SRV weights).
        count = self.pod_ips.get(ns, {}).get(ip, 0) if self.exposed(ns) else 0
        for zone in self.forward:
            key = prefix + zone.wire
            self._drop(key)
            if count:
                self._put_entries(key, zone, ((ip, 0, prefix),) * count)

    def _render_namespace(self, ns: str) -> None:
        try:
            prefixes = [label(ns) + SVC] + ([label(ns) + POD] if self.pods_mode != "disabled" else [])
        except ValueError:
            return
        exposed = self.exposed(ns)
        for zone in self.forward:
            for prefix in prefixes:
                key = prefix + zone.wire
                if exposed:
                    self.names.add(key)
                    self.empty.add(key)
                else:
                    self.names.discard(key)
                    self.empty.discard(key)

    # ---------------------------------------------------------------- zone apex
    def _render_zone(self, zone: Zone) -> None:
        apex = zone.wire
        for key in (apex, b"\x03svc" + apex, b"\x03pod" + apex, b"\x02ns\x03dns" + apex):
            self.names.add(key)
            self.empty.add(key)
        version = b"\x0bdns-version" + apex
        self.table[(version, TYPE_TXT)] = build(
            [Packer(version).here(TYPE_TXT, VERSION_TTL, txt_rdata(DNS_SCHEMA_VERSION))], ttl=VERSION_TTL,
            plugin=self.plugin)
        self._render_soa(zone)

    def _render_soa(self, zone: Zone) -> None:
        at = b"\x00" if zone.wire == b"\x00" else pointer(12)
        self.table[(zone.wire, TYPE_SOA)] = build([soa_record(at, self.soa_ttl, self.serial, self.ttl)],
                                                  ttl=self.soa_ttl, plugin=self.plugin)

    def set_local_ips(self, ips) -> None:
        """The addresses this server answers on: the apex NS and ``ns.dns.ZONE`` are built from them."""
        self.local_ips = tuple(ips)
        self._render_ns_records(force=True)

    def _ns_addresses(self) -> tuple:
        """(name prefix, address) pairs for the zone's NS, as CoreDNS finds them.

        The service whose endpoints hold this server's own addresses (kube-dns in a cluster)
        names the NS, with its cluster IPs (or, headless, the endpoint addresses); without
        one, ``ns.dns.ZONE`` with the local addresses.
        """
        found, out = False, []
        for local in self.local_ips:
            for slkey in _held(self.ep_by_ip, local):
                found = True
                sl = self.slices[slkey]
                svc = self.services.get((sl.ns, sl.service))
                if svc is None or svc.base is None:
                    continue
                if svc.kind == HEADLESS:
                    out.extend((host + svc.base, ip) for ip, host in sl.endpoints)
                else:
                    out.extend((svc.base, ip) for ip in svc.ips)
        if not found:
            out = [(b"\x02ns\x03dns", ip) for ip in self.local_ips]
        return tuple(dict.fromkeys(out))

    def _render_ns_records(self, force: bool = False) -> None:
        data = self._ns_addresses()
        if data == self._ns_data and not force:
            return
        self._ns_data = data
        ttl, plugin = self.ttl, self.plugin
        for zone in self.zones:
            apex = zone.wire
            packer = Packer(apex)
            ns_rrs, extra = [], []
            for prefix, ip in data:
                target = prefix + apex
                rr = packer.named(TYPE_NS, ttl, target)
                if rr not in ns_rrs:
                    ns_rrs.append(rr)
                rtype, packed = address(ip)
                extra.append(packer.rr(target, rtype, ttl, packed))
            if ns_rrs:
                self.table[(apex, TYPE_NS)] = build(ns_rrs, extra, ttl=ttl, plugin=plugin)
            else:
                self.table.pop((apex, TYPE_NS), None)
            key = b"\x02ns\x03dns" + apex
            here = Packer(key)
            by_type: dict[int, list[bytes]] = {TYPE_A: [], TYPE_AAAA: []}
            for _prefix, ip in data:
                rtype, packed = address(ip)
                rr = here.here(rtype, ttl, packed)
                if rr not in by_type[rtype]:
                    by_type[rtype].append(rr)
            for rtype, rrs in by_type.items():
                if rrs:
                    self.table[(key, rtype)] = build(rrs, ttl=ttl, plugin=plugin)
                else:
                    self.table.pop((key, rtype), None)

    # ================================================================ queries
    def zone_of(self, key: bytes) -> Zone | None:
        """The most specific of the plugin's zones that the name falls in."""
        return wire_lookup(key, self._zone_by_wire)

    def negatives(self, zone: Zone, qlen: int) -> tuple[Answer, Answer, Answer]:
        """(NODATA, NXDOMAIN, SERVFAIL) for a question of ``qlen`` wire bytes in ``zone``."""
        cached = zone.negatives.get(qlen)
        if cached is None:
            at = b"\x00" if zone.wire == b"\x00" else pointer(12 + qlen - len(zone.wire))
            soa = [soa_record(at, self.soa_ttl, self.serial, self.ttl)]
            cached = zone.negatives[qlen] = tuple(
                build([], authority=soa, ttl=self.soa_ttl, rcode=rcode, plugin=self.plugin)
                for rcode in (0, NXDOMAIN, SERVFAIL))
        return cached

    def dynamic(self, key: bytes, qtype: int, zone: Zone) -> Answer | None:
        """The answer for a name that is not rendered ahead of time, else None.

        Endpoint names and PTR names, rendered into ``table`` on their first query;
        ``pods insecure`` names (``1-2-3-4.ns.pod.ZONE``), pod names with extra labels in
        front (CoreDNS ignores them), and ``_port._proto`` written without underscores or
        with ``_`` as a wildcard.
        """
        if zone.reverse:
            return self._lazy_ptr(key) if qtype == TYPE_PTR else None
        labels = wire_labels(key[: len(key) - len(zone.wire)])
        if len(labels) < 3:
            return None
        entries = None
        if labels[-1] == b"svc" and len(labels) == 4:
            entries = self._endpoint_entries(labels)
            if not entries:
                return None
            answers = self._entry_answers(key, zone, entries)
            self._keep(key, answers)
            return answers.get(qtype) or self.negatives(zone, len(key))[0]
        if labels[-1] == b"pod":
            entries = self._pod_entries(labels)
        elif labels[-1] == b"svc" and len(labels) == 5:
            entries = self._port_entries(labels)
        if not entries:
            return None
        answer = self._entry_answers(key, zone, entries).get(qtype)
        if answer is None:
            answer = self.negatives(zone, len(key))[0]
        return answer

    def remember(self, key: bytes, qtype: int, answer: Answer) -> Answer:
        if len(self.recent) >= RECENT_MAX:
            self.recent.clear()
        self.recent[(key, qtype)] = answer
        return answer

    def _pod_entries(self, labels: list[bytes]):
        if self.pods_mode == "disabled" or len(labels) > 5:
            return None
        ns = labels[-2].decode("latin-1")
        podname = labels[-3].decode("latin-1")
        if not self.exposed(ns):
            return None
        if podname.count("-") == 3 and "--" not in podname:
            text = podname.replace("-", ".")
        else:
            text = podname.replace("-", ":")
        ip = canonical_ip(text)
        if ip is None:
            return None
        if self.pods_mode == "verified" and not self.pod_ips.get(ns, {}).get(text):
            return None
        try:
            prefix = label(podname) + label(ns) + POD
        except ValueError:
            return None
        return ((ip, 0, prefix),)

    def _port_entries(self, labels: list[bytes]):
        port_label, proto_label, service, ns = labels[0], labels[1], labels[2], labels[3]
        if len(port_label) > 1 and len(proto_label) > 1 and port_label[0] == proto_label[0] == 0x5F:
            return None  # the canonical spelling: the table already holds every such name
        svc = self.services.get((ns.decode("latin-1"), service.decode("latin-1")))
        if svc is None or svc.kind == EXTERNAL or svc.base is None or not self.exposed(svc.ns):
            return None
        port, proto = _strip(port_label), _strip(proto_label)
        slices = [self.slices[k] for k in _held(self.slices_of, (svc.ns, svc.name))]
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


# The reverse maps (address -> service or slice keys, service -> slice keys) nearly always
# hold one key, which is itself a (namespace, name) tuple: it is stored bare, and only a
# second key makes a tuple of keys.  A hundred thousand one-key tuples would be 5 MB.


def _held(table: dict, key) -> tuple:
    held = table.get(key)
    if held is None:
        return ()
    return (held,) if held[0].__class__ is str else held


def _add(table: dict, key, item: tuple[str, str]) -> None:
    held = _held(table, key)
    if item not in held:
        table[key] = item if not held else held + (item,)


def _discard(table: dict, key, item: tuple[str, str]) -> None:
    held = _held(table, key)
    if item in held:
        rest = tuple(x for x in held if x != item)
        if len(rest) > 1:
            table[key] = rest
        elif rest:
            table[key] = rest[0]
        else:
            del table[key]


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
