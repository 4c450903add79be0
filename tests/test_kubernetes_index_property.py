"""The index applied event by event gives exactly the records of an index built from the final state.

Seeded random streams of upserts, deletes and relists (``replace``) of namespaces,
services, endpoint slices and pods go to one index, with queries in between (so that
rendered names are held when later events must invalidate them).  At checkpoints a second
index is built from the state the stream has reached, and every name the objects can give
rise to is asked of both, for every record type, through the same lookups the plugin makes:
``table`` first (the hot path), then ``lookup``.  One option set per case: pods modes,
endpoint_pod_names, namespaces, namespace_labels, labels, noendpoints, ignore empty_service,
dual stack.  The last test does the same over real sockets, against servers built from
manifests.
"""

from __future__ import annotations

import ipaddress
import random
import struct

import dns.message

import pytest

from pydns.plugins.kubernetes.index import KINDS, Index
from pydns.plugins.kubernetes.packing import (TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV,
                                              TYPE_TXT, name_wire)
from pydns.plugins.kubernetes.selector import parse as selector
from pydns.testing import ServerThread
from tests.kube_cluster import endpoint, endpoint_slice, external, headless, namespace, pod, service

pytestmark = pytest.mark.timeout(120)

ZONES = ["cluster.local.", "example.org.", "in-addr.arpa.", "ip6.arpa."]
QTYPES = (TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_PTR, TYPE_TXT, TYPE_CNAME, TYPE_SOA, TYPE_NS)
NAMESPACES = ("ns0", "ns1", "ns2")
SERVICES = ("a", "b", "c")
SLICES = ("x", "y")
PODS = ("p0", "p1", "p2")
HOSTS = ("h0", "h1")
POD_V4 = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4")
POD_V6 = ("fd00:1::1", "fd00:1::2")
PORTS = (("http", 80, "TCP"), ("", 8080, "TCP"), ("dns", 53, "UDP"), ("grpc", 9000, "TCP"))
LABELS = ({}, {"app": "x"}, {"app": "y"})
LOCAL_IPS = ("10.1.0.1",)  # the server's own address: the NS follows the service it is an endpoint of
EVENTS, CHECKPOINT = 240, 80


class Universe:
    """Random objects over a small set of names and addresses, so that events collide often."""

    def __init__(self, rng: random.Random, dual: bool):
        self.rng = rng
        # Each service has two addresses of each family to move between (the API never gives two one address).
        self.cluster_v4 = {(ns, svc): (f"10.96.{i}.{2 * j + 1}", f"10.96.{i}.{2 * j + 2}")
                           for i, ns in enumerate(NAMESPACES) for j, svc in enumerate(SERVICES)}
        self.cluster_v6 = {key: tuple(f"fd00:96::{ip.replace('.', ':')}" for ip in ips)
                           for key, ips in self.cluster_v4.items()}
        self.cluster_ips = tuple(ip for ips in self.cluster_v4.values() for ip in ips)
        if dual:
            self.cluster_ips += tuple(ip for ips in self.cluster_v6.values() for ip in ips)
        self.pod_ips = POD_V4 + (POD_V6 if dual else ())
        self.dual = dual

    def identity(self, kind: str) -> tuple[str, str]:
        r = self.rng
        if kind == "Namespace":
            return "", r.choice(NAMESPACES)
        name = {"Service": SERVICES, "EndpointSlice": [f"{s}-{x}" for s in SERVICES for x in SLICES],
                "Pod": PODS}[kind]
        return r.choice(NAMESPACES), r.choice(name)

    def make(self, kind: str, ns: str, name: str) -> dict:
        r = self.rng
        if kind == "Namespace":
            return namespace(name, team=r.choice("ab"))
        if kind == "Service":
            return self._service(ns, name)
        if kind == "EndpointSlice":
            return self._slice(ns, name)
        obj = pod(name, r.choice(self.pod_ips), ns=ns, labels=dict(r.choice(LABELS)))
        if r.random() < 0.15:
            obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        if r.random() < 0.1:
            del obj["status"]["podIP"]
        return obj

    def _ports(self) -> tuple:
        return tuple(self.rng.sample(PORTS, self.rng.randint(0, 2)))

    def _service(self, ns: str, name: str) -> dict:
        r = self.rng
        shape = r.choice(("clusterip", "clusterip", "headless", "headless", "external"))
        if shape == "external":
            target = r.choice(("ext.example.test", f"{r.choice(SERVICES)}.{ns}.svc.cluster.local", "1.2.3.4", ""))
            obj = external(name, target, ns=ns)
        elif shape == "headless":
            obj = headless(name, ns, ports=self._ports())
        else:
            ips = [r.choice(self.cluster_v4[ns, name])]
            if self.dual and r.random() < 0.5:
                v6 = r.choice(self.cluster_v6[ns, name])
                ips = r.choice(([v6], ips + [v6]))
            obj = service(name, ns, ips=tuple(ips), ports=self._ports() or (("", 80, "TCP"),))
        obj["metadata"]["labels"] = dict(r.choice(LABELS))
        return obj

    def _slice(self, ns: str, name: str) -> dict:
        r = self.rng
        family = "IPv6" if self.dual and r.random() < 0.3 else "IPv4"
        pool = [ip for ip in self.pod_ips if (":" in ip) == (family == "IPv6")]
        endpoints = []
        for ip in r.sample(pool, r.randint(0, min(3, len(pool)))):
            ep = endpoint(ip, hostname=r.choice((None, None) + HOSTS), ready=r.choice((True, True, False, None)),
                          pod=r.choice((None, *PODS)))
            endpoints.append(ep)
        obj = endpoint_slice(name, r.choice(SERVICES), endpoints, ns=ns, family=family, ports=self._ports())
        obj["metadata"]["labels"].update(r.choice(LABELS))
        if r.random() < 0.05:
            del obj["metadata"]["labels"]["kubernetes.io/service-name"]
        return obj


def names_text(universe: Universe) -> list[str]:
    """Every name the universe's objects can give rise to, in every zone, and some that never exist."""
    out: list[str] = []
    addresses = universe.cluster_ips + universe.pod_ips
    dashed = [ip.replace(".", "-") if "." in ip else ip.replace(":", "-") for ip in addresses]
    for zone in ZONES[:2]:
        out += [zone, f"svc.{zone}", f"pod.{zone}", f"ns.dns.{zone}", f"dns-version.{zone}", f"nope.{zone}"]
        for ns in NAMESPACES:
            out += [f"{ns}.svc.{zone}", f"{ns}.pod.{zone}"]
            out += [f"{d}.{ns}.pod.{zone}" for d in dashed] + [f"w.{d}.{ns}.pod.{zone}" for d in dashed[:2]]
            for svc in SERVICES:
                base = f"{svc}.{ns}.svc.{zone}"
                out += [base, f"_http._tcp.{base}", f"_dns._udp.{base}", f"_grpc._tcp.{base}", f"http.tcp.{base}",
                        f"_._tcp.{base}", f"x.y.z.{base}"]
                out += [f"{h}.{base}" for h in HOSTS + PODS] + [f"{d}.{base}" for d in dashed]
    out += [ipaddress.ip_address(ip).reverse_pointer for ip in addresses]
    out += ["in-addr.arpa", "ip6.arpa"]
    return out


def names_to_ask(universe: Universe) -> list[bytes]:
    return [name_wire(n) for n in names_text(universe)]


def resolve(index: Index, key: bytes, qtype: int):
    """What the plugin answers, as comparable data (negative answers by kind: their SOA serial is the time)."""
    answer = index.table.get((key, qtype))
    if answer is None:
        zone = index.zone_of(key)
        name = index.lookup(key, zone)
        if name is None:
            return "NODATA" if qtype == TYPE_SOA else "NXDOMAIN"
        answer = name.answers.get(qtype)
        if answer is None:
            if name.external is not None and qtype in (TYPE_A, TYPE_AAAA):
                return "CNAME to", name.external
            return "NXDOMAIN" if name.lacks_name(qtype) else "NODATA"
    if qtype == TYPE_SOA:
        return "SOA", answer.an
    return answer.rcode, answer.an, answer.ns, answer.ar, answer.body


def unordered(key: bytes, qtype: int, resolved):
    """A resolved answer's sections as sorted record texts."""
    if isinstance(resolved, str) or resolved[0] in ("SOA", "CNAME to"):
        return resolved
    rcode, an, ns, ar, body = resolved
    wire = struct.pack("!HHHHHH", 0, 0x8400 | rcode, 1, an, ns, ar) + key + struct.pack("!HH", qtype, 1) + body
    msg = dns.message.from_wire(wire)
    return tuple(sorted(rr.to_text() for rrset in section for rr in rrset)
                 for section in (msg.answer, msg.authority, msg.additional))


OPTION_SETS = {
    "defaults": ({}, False),
    "dual-stack": ({}, True),
    "pods-insecure": ({"pods": "insecure"}, True),
    "pods-verified": ({"pods": "verified"}, True),
    "endpoint-pod-names": ({"endpoint_pod_names": True}, False),
    "namespaces": ({"namespaces": ("ns0", "ns1")}, True),
    "namespace-labels": ({"namespace_labels": "team=a"}, False),
    "labels": ({"labels": "app!=y", "pods": "verified"}, False),
    "noendpoints": ({"noendpoints": True}, True),
    "ignore-empty-service": ({"ignore_empty_service": True}, True),
    "everything": ({"pods": "verified", "endpoint_pod_names": True, "namespaces": ("ns0", "ns2"),
                    "labels": "app in (x)", "ignore_empty_service": True}, True),
}


def make_index(options: dict) -> Index:
    opts = dict(options)
    for field in ("labels", "namespace_labels"):
        if field in opts:
            opts[field] = selector(opts[field])
    return Index(ZONES, local_ips=LOCAL_IPS, **opts)


def rebuilt(options: dict, state: dict) -> Index:
    index = make_index(options)
    for kind in KINDS:
        index.replace(kind, [obj for (k, _ns, _n), obj in state.items() if k == kind])
    return index


def run_stream(rng: random.Random, universe: Universe, events: int, apply, state: dict, sent: dict,
               labels: str | None = None) -> None:
    """Random events: ``apply(op, kind, obj_or_list)`` with op upsert/delete/replace.

    ``sent`` follows what the API holds, ``state`` what the index must hold: as in CoreDNS, a
    pod being deleted leaves what was known of it until it is gone (or leaves the ``labels``
    selection, which the API server's watch reports as a deletion).
    """
    chosen = selector(labels) if labels else None

    def put(ident, obj):
        sent[ident] = obj
        meta = obj["metadata"]
        keep = (obj["kind"] == "Pod" and "deletionTimestamp" in meta and ident in state
                and (chosen is None or chosen.matches(meta.get("labels"))))
        state[ident] = state[ident] if keep else obj

    for _ in range(events):
        kind = rng.choice(("Namespace", "Service", "Service", "EndpointSlice", "EndpointSlice", "Pod"))
        ns, name = universe.identity(kind)
        ident = (kind, ns, name)
        roll = rng.random()
        if roll < 0.05:  # a relist: some objects changed, some gone, some new
            changes = {}
            for key in [k for k in sent if k[0] == kind]:
                if rng.random() < 0.3:
                    changes[key] = None
                elif rng.random() < 0.3:
                    changes[key] = universe.make(kind, key[1], key[2])
            changes[ident] = universe.make(kind, ns, name)
            for key, obj in changes.items():
                if obj is None:
                    del sent[key], state[key]
                else:
                    put(key, obj)
            apply("replace", kind, [obj for key, obj in sent.items() if key[0] == kind])
        elif roll < 0.3:
            obj = sent.pop(ident, None) or universe.make(kind, ns, name)
            state.pop(ident, None)
            apply("delete", kind, obj)
        else:
            obj = universe.make(kind, ns, name)
            put(ident, obj)
            apply("upsert", kind, obj)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_events_applied_one_by_one_give_the_records_of_a_rebuilt_index(option_set, seed):
    options, dual = OPTION_SETS[option_set]
    rng = random.Random(f"{option_set}-{seed}")
    universe = Universe(rng, dual)
    names = names_to_ask(universe)
    index = make_index(options)
    state: dict = {}
    sent: dict = {}
    asked = rng.sample(names, 40)

    def apply(op, kind, what):
        if op == "replace" and rng.random() < 0.5:  # a source reducing each page as it arrives
            half = len(what) // 2
            index.replace_reduced(kind, index.reduce(kind, what[:half]) + index.reduce(kind, what[half:]))
        else:
            getattr(index, op)(kind, what)
        for key in rng.sample(asked, 8):  # render some names, which later events must invalidate
            resolve(index, key, rng.choice(QTYPES))

    for checkpoint in range(EVENTS // CHECKPOINT):
        run_stream(rng, universe, CHECKPOINT, apply, state, sent, options.get("labels"))
        fresh = rebuilt(options, state)
        for key in names:
            for qtype in QTYPES:
                got, want = resolve(index, key, qtype), resolve(fresh, key, qtype)
                if got != want:  # the same records may come in another order (slices stored in another order)
                    got, want = unordered(key, qtype, got), unordered(key, qtype, want)
                assert got == want, (f"checkpoint {checkpoint}: {key!r} type {qtype}: incremental {got!r}, "
                                     f"rebuilt {want!r}")


def test_a_relist_keeps_the_rendered_names_of_unchanged_objects():
    index = make_index({})
    index.replace("Namespace", [namespace("ns0")])
    index.replace("Service", [service("a", "ns0", ips=("10.96.0.1",)), service("b", "ns0", ips=("10.96.0.2",))])
    a, b = name_wire("a.ns0.svc.cluster.local."), name_wire("b.ns0.svc.cluster.local.")
    before_a, before_b = resolve(index, a, TYPE_A), resolve(index, b, TYPE_A)
    kept = index.table[(b, TYPE_A)]
    index.replace("Service", [service("a", "ns0", ips=("10.96.0.3",)), service("b", "ns0", ips=("10.96.0.2",))])
    assert (a, TYPE_A) not in index.table  # changed: dropped, rendered again when asked
    assert index.table[(b, TYPE_A)] is kept  # unchanged: the same ready answer
    assert resolve(index, a, TYPE_A) != before_a and resolve(index, b, TYPE_A) == before_b
    assert resolve(index, a, TYPE_A)[4].endswith(bytes([10, 96, 0, 3]))


def test_the_stream_reaches_every_kind_of_answer():
    """The comparison above means something only if the streams produce each kind of record."""
    seen = set()
    for option_set in OPTION_SETS:
        options, dual = OPTION_SETS[option_set]
        rng = random.Random(f"{option_set}-0")
        universe = Universe(rng, dual)
        state: dict = {}
        run_stream(rng, universe, EVENTS, lambda *a: None, state, {}, options.get("labels"))
        index = rebuilt(options, state)
        for key in names_to_ask(universe):
            for qtype in QTYPES:
                got = resolve(index, key, qtype)
                seen.add((qtype, got if isinstance(got, str) else got[0] if got[0] != 0 else "answer"))
    for qtype in (TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_PTR, TYPE_CNAME, TYPE_NS, TYPE_TXT):
        assert (qtype, "answer") in seen, qtype
    assert (TYPE_A, "CNAME to") in seen and (TYPE_A, "NXDOMAIN") in seen and (TYPE_AAAA, "NODATA") in seen


def corefile(manifests: str) -> str:
    return (".:0 {\n bind 127.0.0.1\n kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            f"  manifests {manifests}\n  pods verified\n  endpoint_pod_names\n }}\n}}\n")


def over_the_wire(srv: ServerThread, name: str, rdtype: str):
    msg = srv.query(name, rdtype, tcp=True)
    return (msg.rcode(), sorted(r.to_text() for rrset in msg.answer for r in rrset),
            sorted(r.to_text() for rrset in msg.additional for r in rrset),
            sorted(rrset.rdtype for rrset in msg.authority))


def test_a_server_fed_events_answers_as_one_started_from_the_final_state(tmp_path):
    """The same comparison over real sockets: a server whose manifests source takes the events
    (in its in-memory layer, with queries in between) against a server started from a file
    holding the final state."""
    import yaml

    rng = random.Random("over-the-wire")
    universe = Universe(rng, dual=True)
    served = [n for n in names_text(universe) if not n.endswith("example.org.")]
    names = [n for n in served if ".pod." not in n and n.count(".") < 7] + rng.sample(served, 100)
    (tmp_path / "empty.yaml").write_text("")
    fed = ServerThread(corefile(str(tmp_path / "empty.yaml"))).start()
    try:
        source = fed.instance.configs[0].plugin("kubernetes").source
        state: dict = {}
        sent: dict = {}

        def apply(op, kind, what):
            if op == "upsert":
                source.apply_objects([what])
            elif op == "delete":
                source.delete_objects([what])
            else:
                source.set_objects(list(sent.values()))
            for name in rng.sample(names, 3):
                fed.query(name, rng.choice(("A", "AAAA", "SRV", "PTR")), tcp=True)

        run_stream(rng, universe, 150, apply, state, sent)
        (tmp_path / "final.yaml").write_text(yaml.safe_dump_all(list(state.values())))
        final = ServerThread(corefile(str(tmp_path / "final.yaml"))).start()
        try:
            answered = set()
            for name in names:
                for rdtype in ("A", "AAAA", "SRV", "PTR", "TXT"):
                    got, want = over_the_wire(fed, name, rdtype), over_the_wire(final, name, rdtype)
                    assert got == want, f"{name} {rdtype}: fed {got}, from the final state {want}"
                    if got[1]:
                        answered.add(rdtype)
            assert answered >= {"A", "AAAA", "SRV", "PTR"}  # the comparison covered real answers
        finally:
            final.stop()
    finally:
        fed.stop()
