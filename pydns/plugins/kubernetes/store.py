"""The kubernetes plugin's object store: the reduced objects and the indexes over them.

What CoreDNS keeps in its informers' stores and indexers, in the reduced forms of
``objects.py``: present namespaces, services, endpoint slices and pods (address and label
set) by key, with three indexes: slices by service, services by cluster IP, slices by
endpoint address.

Every change is made through ``set_namespace``/``put_service``/``put_slice``/``put_pod``,
which compare with what is stored, do nothing when nothing changed, and otherwise note in
``touched`` what the change can affect, as dependency keys (see ``*_dep`` below).  The
rendered answers (``memo.py``) are filed under the same keys, so the store alone decides
what a change invalidates: no caller has to say beforehand what it is about to change.
"""

from __future__ import annotations

import sys

from .objects import Pod, Service, ServiceImport, Slice
from .podaddresses import PodAddresses
from .podlabels import LabelSets


# Dependency keys: what a rendered name was made from, and what a change touches.
def service_dep(ns: str, name: str) -> tuple:
    """A service, its endpoint slices: its own names, port names and endpoint names."""
    return ("service", ns, name)


def import_dep(ns: str, name: str) -> tuple:
    """A ServiceImport and its multi-cluster slices (``multicluster``)."""
    return ("import", ns, name)


def namespace_dep(ns: str) -> tuple:
    """Whether a namespace is present: every name in it."""
    return ("namespace", ns)


def address_dep(ip: str) -> tuple:
    """What an address belongs to: its PTR name."""
    return ("address", ip)


def pod_dep(ns: str, ip: str) -> tuple:
    """The pods of a namespace with an address (``pods verified``): the pod name."""
    return ("pod", ns, ip)


def _v6(held: Service | Slice | None) -> int:
    """1 if a service or slice holds an IPv6 address, else 0."""
    return 1 if held is not None and any(":" in ip for ip in held.ips) else 0


class MultiIndex:
    """key -> the items filed under it, in the order they were filed.

    Nearly every key holds exactly one item (an address belongs to one slice, a service has
    one slice), so the first item of each key lives in one dict and only the rest in
    another: a hundred thousand keys cost one dict entry each, not a container each.
    """

    __slots__ = ("_first", "_more")

    def __init__(self):
        self._first: dict = {}
        self._more: dict[object, list] = {}

    def get(self, key) -> tuple:
        first = self._first.get(key)
        if first is None:
            return ()
        more = self._more.get(key)
        return (first,) if more is None else (first, *more)

    def add(self, key, item) -> None:
        first = self._first.get(key)
        if first is None:
            self._first[key] = item
        elif first != item:
            more = self._more.setdefault(key, [])
            if item not in more:
                more.append(item)

    def discard(self, key, item) -> None:
        first = self._first.get(key)
        if first is None:
            return
        more = self._more.get(key)
        if first == item:
            if more:
                self._first[key] = more.pop(0)
            else:
                del self._first[key]
        elif more and item in more:
            more.remove(item)
        else:
            return
        if more is not None and not more:
            del self._more[key]


class Store:
    def __init__(self):
        self.namespaces: set[str] = set()  # present: they exist and pass namespace_labels
        self.services: dict[tuple[str, str], Service] = {}
        self.slices: dict[tuple[str, str], Slice] = {}
        self.pods: dict[tuple[str, str], Pod] = {}  # (ns, name) -> address and labels
        self.label_sets = LabelSets()  # each distinct pod label set once, for metadata
        self.pod_counts: dict[str, dict[str, int]] = {}  # ns -> address -> pods with it
        self.pod_addresses = PodAddresses()  # address -> pod, for autopath and metadata
        self.slices_by_service = MultiIndex()  # (ns, service) -> slice keys
        self.services_by_ip = MultiIndex()  # cluster IP -> service keys
        self.slices_by_ip = MultiIndex()  # endpoint address -> slice keys
        self.imports: dict[tuple[str, str], ServiceImport] = {}  # multicluster
        self.mc_slices: dict[tuple[str, str], Slice] = {}
        self.mc_slices_by_import = MultiIndex()  # (ns, service import) -> multi-cluster slice keys
        self.touched: set[tuple] = set()
        self.v6_holders = 0  # services and slices with an IPv6 address (families.py)
        # Changes that alter no answer and so touch nothing (a slice's not-ready count alone):
        # what is saved of the store (snapshot.py) must still see them.
        self.quiet_changes = 0

    def drain(self) -> set[tuple]:
        """The dependency keys touched since the last drain."""
        touched, self.touched = self.touched, set()
        return touched

    def keys_except(self, kind: str, seen: set) -> list:
        """The keys stored for a kind ("Namespace", "Service", "EndpointSlice", "Pod") that are not in ``seen``."""
        stored = {"Namespace": self.namespaces, "Service": self.services, "EndpointSlice": self.slices,
                  "Pod": self.pods, "ServiceImport": self.imports, "MultiClusterEndpointSlice": self.mc_slices}[kind]
        return [key for key in stored if key not in seen]

    # ---------------------------------------------------------------- reading
    def slices_of(self, skey: tuple[str, str]) -> list[Slice]:
        slices = self.slices
        return [slices[k] for k in self.slices_by_service.get(skey)]

    def mc_slices_of(self, ikey: tuple[str, str]) -> list[Slice]:
        slices = self.mc_slices
        return [slices[k] for k in self.mc_slices_by_import.get(ikey)]

    def services_at(self, ip: str) -> list[Service]:
        services = self.services
        return [services[k] for k in self.services_by_ip.get(ip)]

    def slices_at(self, ip: str) -> list[Slice]:
        slices = self.slices
        return [slices[k] for k in self.slices_by_ip.get(ip)]

    def pod_count(self, ns: str, ip: str) -> int:
        return self.pod_counts.get(ns, {}).get(ip, 0)

    # ---------------------------------------------------------------- changing
    def set_namespace(self, name: str, present: bool) -> None:
        if present == (name in self.namespaces):
            return
        if present:
            self.namespaces.add(name)
        else:
            self.namespaces.discard(name)
        self.touched.add(namespace_dep(name))

    def put_service(self, skey: tuple[str, str], svc: Service | None) -> None:
        """Store (or with None, remove) a service."""
        old = self.services.get(skey)
        if old == svc:
            return
        self.touched.add(service_dep(*skey))
        self.v6_holders += _v6(svc) - _v6(old)
        if old is not None:
            self._file(self.services_by_ip, old.ips, skey, MultiIndex.discard)
        if svc is None:
            del self.services[skey]
        else:
            self.services[skey] = svc
            self._file(self.services_by_ip, svc.ips, skey, MultiIndex.add)

    def put_slice(self, key: tuple[str, str], sl: Slice | None) -> bool:
        """Store (or with None, remove) an endpoint slice; True if that changed anything."""
        old = self.slices.get(key)
        if old == sl:
            return False
        if self._recount(self.slices, key, old, sl):
            return True
        self.v6_holders += _v6(sl) - _v6(old)
        for held, file in ((old, MultiIndex.discard), (sl, MultiIndex.add)):
            if held is not None:
                skey = (held.ns, held.service)
                self.touched.add(service_dep(*skey))
                file(self.slices_by_service, skey, key)
                self._file(self.slices_by_ip, held.ips, key, file)
        if sl is None:
            del self.slices[key]
        else:
            self.slices[key] = sl
        return True

    def put_import(self, ikey: tuple[str, str], imp: ServiceImport | None) -> None:
        """Store (or with None, remove) a ServiceImport."""
        if self.imports.get(ikey) == imp:
            return
        self.touched.add(import_dep(*ikey))
        if imp is None:
            del self.imports[ikey]
        else:
            self.imports[ikey] = imp

    def put_mc_slice(self, key: tuple[str, str], sl: Slice | None) -> bool:
        """Store (or with None, remove) a multi-cluster endpoint slice; True if that changed anything."""
        old = self.mc_slices.get(key)
        if old == sl:
            return False
        if self._recount(self.mc_slices, key, old, sl):
            return True
        for held, file in ((old, MultiIndex.discard), (sl, MultiIndex.add)):
            if held is not None:
                self.touched.add(import_dep(held.ns, held.service))
                file(self.mc_slices_by_import, (held.ns, held.service), key)
        if sl is None:
            del self.mc_slices[key]
        else:
            self.mc_slices[key] = sl
        return True

    def _recount(self, held: dict, key, old: Slice | None, sl: Slice | None) -> bool:
        """Store ``sl`` in place of ``old`` if only their not-ready counts differ (True): every
        rendered answer still holds, so nothing is touched."""
        if old is None or not old.answers_as(sl):
            return False
        held[key] = sl
        self.quiet_changes += 1
        return True

    def _file(self, index: MultiIndex, ips: tuple, key, file) -> None:
        """Add (or discard) ``key`` under each address in ``index``; each address is touched."""
        touched = self.touched
        for ip in ips:
            file(index, ip, key)
            touched.add(address_dep(ip))

    def put_pod(self, key: tuple[str, str], pod: Pod | None) -> None:
        """Store (or with None, remove) a pod: its address (a HostAddress for a host-network pod) and labels."""
        old = self.pods.get(key)
        moved = old is None or pod is None or old.address != pod.address or \
            type(old.address) is not type(pod.address)
        if not moved:
            if old.labels != pod.labels:
                # Only the labels: no answer is made from them, so nothing is touched.
                self.pods[key] = Pod(old.address, self.label_sets.hold(pod.labels))
                self.label_sets.release(old.labels)
            return
        ns = key[0]
        if old is not None:
            del self.pods[key]
            self.label_sets.release(old.labels)
            ip = old.address
            counts = self.pod_counts[ns]
            counts[ip] -= 1
            if not counts[ip]:
                del counts[ip]
                if not counts:
                    del self.pod_counts[ns]
            self.pod_addresses.remove(ip, key)
            self.touched.add(pod_dep(ns, ip))
        if pod is not None:
            # One copy of each namespace's name, not one per pod (5 MB at 100,000 pods).
            # The address map keeps this same key object: the pod's name costs it no more.
            key = (sys.intern(ns), key[1])
            ip = pod.address
            self.pods[key] = Pod(ip, self.label_sets.hold(pod.labels))
            counts = self.pod_counts.setdefault(ns, {})
            counts[ip] = counts.get(ip, 0) + 1
            self.pod_addresses.add(ip, key)
            self.touched.add(pod_dep(ns, ip))
