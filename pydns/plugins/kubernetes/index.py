"""The kubernetes plugin's index: objects in, ready answers out.

Sources (the API's list+watch, or manifest files) feed raw objects in, on the event loop's
thread, for the kinds "Namespace", "Service", "EndpointSlice" and "Pod", and with
``multicluster`` "ServiceImport" and "MultiClusterEndpointSlice" (EndpointSlices labelled for
a ServiceImport); others are ignored::

    index.replace(kind, objects)   # the full state of a kind (a list or relist)
    index.upsert(kind, obj)        # one added or modified object (a watch event)
    index.delete(kind, obj)

    entries = index.reduce(kind, page)        # any thread: what the store keeps of each object
    index.replace_reduced(kind, entries)     # replace, from the entries of every page

Each object is reduced at once to the few fields DNS needs (``objects.py``) and compared
with what the store holds (``store.py``); only a real change reaches the store, which notes
what it touched.  ``replace`` applies the differences and deletes what the list lacks, all
in one call: a query sees the state before or the state after, never a mix.  A source that
reduces each page of a list as it arrives (``reduce`` reads nothing but the options) holds
one raw page at a time, then the reduced list until ``replace_reduced`` swaps it in.

What queries read (see ``__init__.py``): ``table`` (wire name, qtype) -> ready ``Answer``,
one dict lookup; on a miss, ``lookup(key, zone)`` renders the name from the store
(``render.py``) and keeps it in ``table`` until a change touches what it was made from
(``memo.py``).  ``negatives(zone, qlen)`` are the NODATA/NXDOMAIN/SERVFAIL answers with the
zone's SOA, whose serial is the time of the last change, as in CoreDNS; ``recent`` keeps
slow-path answers (NXDOMAIN above all: clients walking their search path ask for names
that do not exist all the time) until the next change.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from pydns import metrics, replies
from pydns.wire import Answer
from pydns.zones import wire_lookup

from .memo import Memo, Name
from .objects import (HEADLESS, MCS_SERVICE_NAME_LABEL, Pod, Slice, key_of, labels_of, meta_of, read_pod,
                      read_service, read_service_import, read_slice, trigger_time)
from .podaddresses import HostAddress
from .podlabels import NO_LABELS, read_labels
from .render import Renderer, Zone
from .store import Store

log = logging.getLogger("plugin/kubernetes")

# ServiceImports and the EndpointSlices labelled for them are read with ``multicluster`` only.
KINDS = ("Namespace", "Service", "EndpointSlice", "Pod", "ServiceImport", "MultiClusterEndpointSlice")
RECENT_MAX = 10000
MEMO_MAX = 16384  # rendered names kept at once: about 1.7 KB each, 28 MB when full
# Pods that will never run again, whose address may already be another pod's: the API source
# leaves them out server-side (api.POD_FIELD_SELECTOR); manifests may hold them.
FINISHED = ("Succeeded", "Failed", "Unknown")
_UNCHANGED = object()  # what an event reduces to when it must leave the store as it is
UNCHANGED = _UNCHANGED

_latency = metrics.histogram(
    "coredns_kubernetes_dns_programming_duration_seconds",
    "Histogram of the time (in seconds) it took to program a dns instance.",
    ("service_kind",), buckets=tuple(0.001 * 2**i for i in range(20)))


class Index:
    def __init__(self, zones: list[str], *, ttl: int = 5, namespaces=(), labels=None, namespace_labels=None,
                 pods: str = "disabled", endpoint_pod_names: bool = False, noendpoints: bool = False,
                 ignore_empty_service: bool = False, local_ips=(), plugin: str = "kubernetes", zonal: bool = False,
                 multicluster=()):
        self.zones = [Zone(z, multicluster=z in multicluster) for z in zones]
        forward = [z for z in self.zones if not z.reverse]
        if not forward:
            raise ValueError("non-reverse zone name must be used")
        self._zone_by_wire = {z.wire: z for z in self.zones}
        self.ttl = ttl
        self.labels = labels
        self.namespace_labels = namespace_labels
        self.pods_mode = pods
        self.pod_names = endpoint_pod_names
        self.noendpoints = noendpoints
        self.zonal = zonal
        self.local_ips: tuple[str, ...] = tuple(local_ips)

        self.store = Store()
        self.renderer = Renderer(self.store, forward[0], ttl=ttl, namespaces=frozenset(namespaces), pods=pods,
                                 ignore_empty_service=ignore_empty_service, plugin=plugin, zonal=zonal)
        self.memo = Memo(MEMO_MAX)
        self.table: dict[tuple[bytes, int], Answer] = self.memo.table
        self.recent: dict[tuple[bytes, int], Answer] = {}
        self.generation = 0
        self.watched: set | None = None  # (kind, key) of every upsert/delete while not None (drift.py)
        self.serial = int(time.time())
        self._ns_data = self.renderer.ns_addresses(self.local_ips)
        self._pin_apex()

        self._readers = {"Namespace": self._read_namespace, "Service": self._read_service,
                         "EndpointSlice": self._read_slice, "Pod": self._read_pod,
                         "ServiceImport": self._read_import, "MultiClusterEndpointSlice": self._read_mc_slice}
        self._writers = {"Namespace": self._put_namespace, "Service": self._put_service,
                         "EndpointSlice": self._put_slice, "Pod": self._put_pod,
                         "ServiceImport": self._put_import, "MultiClusterEndpointSlice": self._put_mc_slice}

    # ================================================================ the source interface
    def upsert(self, kind: str, obj: dict) -> None:
        if kind in self._readers:
            self.amend(kind, self.reduce(kind, (obj,)))

    def delete(self, kind: str, obj: dict) -> None:
        if kind in self._readers:
            self.amend(kind, [(self._key(kind, obj), None, trigger_time(obj))] if isinstance(obj, dict) else [])

    def amend(self, kind: str, entries) -> None:
        """Store reduced entries (a value of None deletes), leaving every other object as it is."""
        if kind in self._readers:
            seen = self._store(kind, entries)
            if self.watched is not None:
                self.watched.update((kind, key) for key in seen)
            self._commit()

    def replace(self, kind: str, objects) -> None:
        """Make the stored objects of ``kind`` exactly ``objects`` (raw objects; any iterable, read once)."""
        if kind in self._readers:
            self.replace_reduced(kind, (entry for obj in objects for entry in self.reduce(kind, (obj,))))

    def reduce(self, kind: str, objects) -> list[tuple]:
        """What the store keeps of each object, as entries for ``replace_reduced``.

        Reads nothing but the options, so a source may call it on another thread, page by
        page as a list arrives, and let each raw page go: a relist then holds its raw
        objects one page at a time, and the reduced state (a small fraction) until the swap.
        """
        read = self._readers.get(kind)
        out = []
        for obj in objects if read is not None else ():
            if not isinstance(obj, dict):
                log.warning("ignoring a %s that is not an object: %r", kind, obj)
                continue
            key = self._key(kind, obj)
            try:
                value = read(obj)
            except Exception:  # one odd object must not stop the others; what was stored stays
                log.exception("ignoring a %s that could not be read: %r", kind, key)
                value = _UNCHANGED
            out.append((key, value, trigger_time(obj) if kind == "EndpointSlice" else None))
        return out

    def replace_reduced(self, kind: str, entries) -> None:
        """``replace`` with entries from ``reduce``: store what changed, delete what is missing, in one step."""
        if kind in self._readers:
            self._remove_unseen(kind, self._store(kind, entries))
            self._commit()

    # ---------------------------------------------------------------- applying
    @staticmethod
    def _key(kind: str, obj: dict):
        if kind == "Namespace":
            return str(meta_of(obj).get("name") or "")
        return key_of(obj)

    def _store(self, kind: str, entries) -> set:
        """Write reduced entries to the store (only changes reach it); the keys they had."""
        write = self._writers[kind]
        seen = set()
        for key, value, stamp in entries:
            seen.add(key)
            if value is not _UNCHANGED:
                write(key, value, stamp)
        return seen

    def _remove_unseen(self, kind: str, seen: set) -> None:
        write = self._writers[kind]
        for key in self.store.keys_except(kind, seen):
            write(key, None, None)

    # The readers: an object -> what the store keeps of it (None: nothing; _UNCHANGED: leave it).
    def _read_namespace(self, obj: dict):
        if not meta_of(obj).get("name"):
            return _UNCHANGED
        return self.namespace_labels is None or self.namespace_labels.matches(labels_of(obj))

    def _read_service(self, obj: dict):
        return read_service(obj) if self.labels is None or self.labels.matches(labels_of(obj)) else None

    def _read_slice(self, obj: dict):
        if self.noendpoints:
            return _UNCHANGED
        if self.labels is not None and not self.labels.matches(labels_of(obj)):
            return None
        return read_slice(obj, self.pod_names, self.zonal)

    def _read_import(self, obj: dict):
        return read_service_import(obj)

    def _read_mc_slice(self, obj: dict):
        if self.labels is not None and not self.labels.matches(labels_of(obj)):
            return None
        return read_slice(obj, self.pod_names, service_label=MCS_SERVICE_NAME_LABEL)

    def _read_pod(self, obj: dict):
        if self.pods_mode != "verified":
            return _UNCHANGED
        if self.labels is not None and not self.labels.matches(labels_of(obj)):
            return None
        terminating, ip = read_pod(obj)
        if terminating:
            return _UNCHANGED  # CoreDNS keeps what it had until the pod is gone
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        if ip is None or status.get("phase") in FINISHED:
            return None
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if spec.get("hostNetwork") is True:  # its address is its node's: no client is known by it
            return Pod(HostAddress(ip), NO_LABELS)
        return Pod(ip, read_labels(labels_of(obj)))

    # The writers: (key, what the store keeps or None, the slice's last-change-trigger-time).
    def _put_namespace(self, name: str, present: bool | None, _stamp) -> None:
        self.store.set_namespace(name, bool(present))

    def _put_service(self, skey, svc, _stamp) -> None:
        self.store.put_service(skey, svc)

    def _put_pod(self, key, pod, _stamp) -> None:
        self.store.put_pod(key, pod)

    def _put_import(self, key, imp, _stamp) -> None:
        self.store.put_import(key, imp)

    def _put_mc_slice(self, key, sl, _stamp) -> None:
        self.store.put_mc_slice(key, sl)

    def _put_slice(self, key, sl: Slice | None, stamp: str | None) -> None:
        old = self.store.slices.get(key)
        if self.store.put_slice(key, sl) and stamp is not None:
            self._observe_latency(stamp, key, sl if sl is not None else old)

    def _observe_latency(self, stamp: str, key: tuple[str, str], sl: Slice) -> None:
        """DNS programming latency: from the slice's last-change-trigger-time to now (CoreDNS's SLI)."""
        svc = self.store.services.get((sl.ns, sl.service))
        if svc is None:
            return
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            log.warning("DnsProgrammingLatency cannot be calculated for EndpointSlice '%s/%s'; invalid "
                        "last-change-trigger-time %r", *key, stamp)
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        kind = "headless_with_selector" if svc.kind == HEADLESS else "cluster_ip"
        _latency.labels(kind).observe(max(0.0, time.time() - when.timestamp()))

    def _commit(self) -> None:
        """Drop what the changes touched; the next query renders it again."""
        touched = self.store.drain()
        if not touched:
            return
        self.memo.invalidate(touched)
        self.generation += 1
        replies.changed()
        self.recent.clear()
        now = int(time.time())
        ns_data = self.renderer.ns_addresses(self.local_ips)
        if now != self.serial or ns_data != self._ns_data:
            if now != self.serial:
                self.serial = now
                for zone in self.zones:
                    zone.negatives.clear()
            self._ns_data = ns_data
            self._pin_apex()

    def set_local_ips(self, ips) -> None:
        """The addresses this server answers on: the apex NS and ``ns.dns.ZONE`` are built from them."""
        self.local_ips = tuple(ips)
        self._ns_data = self.renderer.ns_addresses(self.local_ips)
        self._pin_apex()

    def _pin_apex(self) -> None:
        replies.changed()
        for zone in self.zones:
            for key, name in self.renderer.apex_names(zone, self.serial, self._ns_data).items():
                self.memo.pin(key, name)

    # ================================================================ queries
    def zone_of(self, key: bytes) -> Zone | None:
        """The most specific of the plugin's zones that the name falls in."""
        return wire_lookup(key, self._zone_by_wire)

    def lookup(self, key: bytes, zone: Zone) -> Name | None:
        """What a name in ``zone`` holds (its answers are in ``table`` from now on), or None if it does not exist."""
        name = self.memo.get(key)
        if name is None:
            name, deps = self.renderer.render(key, zone)
            if name is not None:
                self.memo.put(key, name, deps)
        return name

    def negatives(self, zone: Zone, qlen: int) -> tuple[Answer, Answer, Answer]:
        """(NODATA, NXDOMAIN, SERVFAIL) for a question of ``qlen`` wire bytes in ``zone``."""
        cached = zone.negatives.get(qlen)
        if cached is None:
            cached = zone.negatives[qlen] = self.renderer.negatives(zone, qlen, self.serial)
        return cached

    def remember(self, key: bytes, qtype: int, answer: Answer) -> Answer:
        if len(self.recent) >= RECENT_MAX:
            self.recent.clear()
        self.recent[(key, qtype)] = answer
        return answer
