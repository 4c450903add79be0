"""What autopath saves a pod's external lookup, and what its pod store weighs at 100k pods.

    python bench/autopath.py [--lookups 200] [--pods 100000] [--json out.json]

**Lookups.** Two pydns servers side by side, the same Corefile (kubernetes from manifests
with ``pods verified``, ``cache 30``, forward to a local upstream) but one with
``autopath @kubernetes``.  A glibc-like stub resolver in a pod of namespace ``shop``
(queries sent from the pod's address) looks names up the way getaddrinfo does with the
pod's resolv.conf (``ndots:5``, search ``shop.svc.cluster.local svc.cluster.local
cluster.local`` plus this host's search domains): A and AAAA together for each candidate,
the search list first, the name as given last, until one has an address.  Per lookup: the
queries sent and the wall time; medians, for names asked once (``cold``: nothing cached)
and for one name asked again and again (``warm``: every step a cache hit).  The servers
are asked in turns, so both see the same machine.

**Memory.** 100,000 pods (in 500 namespaces; 1,000 nodes, each with 3 host-network pods)
are fed to the kubernetes plugin's index with ``pods verified``; tracemalloc gives what the
pod store holds, and the part autopath (and metadata) adds: the address -> pod map.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ROOT, cpu_seconds, finish, fmt, log, machine, median, pin_self, scratch_dir,  # noqa: E402
                    search_order, start_pydns, stop_all, wait_until)

sys.path.insert(0, ROOT)
from pydns.plugins.autopath import read_search  # noqa: E402
from pydns.testing.upstream import Upstream  # noqa: E402

POD_IP = "127.0.0.11"
ZONE = "cluster.local"
CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {type: ClusterIP, clusterIP: 10.0.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {containers: [{name: c, image: busybox}]}
status: {phase: Running, podIP: %s, podIPs: [{ip: %s}]}
""" % (POD_IP, POD_IP)
COREFILE = """\
.:PORT {
    bind 127.0.0.1
    %s
    kubernetes cluster.local in-addr.arpa {
        manifests %s
        pods verified
    }
    cache 30
    forward . 127.0.0.1:%d
}
"""


# ---------------------------------------------------------------- a glibc-like stub resolver
def _query(name: str, qtype: int, qid: int) -> bytes:
    wire = b"".join(bytes((len(p),)) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", qtype, 1)


def _answer_count(reply: bytes) -> tuple[int, int]:
    """(rcode, records in the answer section) of a reply."""
    _id, flags, _qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    return flags & 0xF, an


class Stub:
    """getaddrinfo's walk: candidates in order, A and AAAA sent together on one socket."""

    def __init__(self, port: int, search: list[str]):
        self.server = ("127.0.0.1", port)
        self.search = search
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((POD_IP, 0))
        self.sock.settimeout(2.0)
        self.qid = 0

    def lookup(self, name: str) -> tuple[int, float, bool]:
        """(queries sent, seconds, found an address)."""
        sent = 0
        start = time.perf_counter()
        for candidate in search_order(name, self.search):
            ids = {}
            for qtype in (1, 28):
                self.qid = (self.qid + 1) & 0xFFFF
                ids[self.qid] = qtype
                self.sock.sendto(_query(candidate, qtype, self.qid), self.server)
                sent += 1
            found = False
            while ids:
                reply = self.sock.recv(4096)
                qid = struct.unpack_from("!H", reply)[0]
                if ids.pop(qid, None) is None:
                    continue  # a late reply to an earlier question
                rcode, an = _answer_count(reply)
                found = found or (rcode == 0 and an > 0)
            if found:  # NXDOMAIN and NODATA both go on to the next candidate, as glibc does
                return sent, time.perf_counter() - start, True
        return sent, time.perf_counter() - start, False

    def close(self) -> None:
        self.sock.close()


def run_lookups(workdir: str, lookups: int) -> dict:
    names = [f"host{i}.example.com." for i in range(lookups)]
    records = {(n, "A"): ["192.0.2.1"] for n in names}
    records[("popular.example.com.", "A")] = ["192.0.2.2"]
    upstream = Upstream(records, ttl=300).start()
    manifests = os.path.join(workdir, "cluster.yaml")
    with open(manifests, "w") as fh:
        fh.write(CLUSTER)
    servers = {}
    try:
        for label, line in (("autopath", "autopath @kubernetes"), ("plain", "")):
            srv, port = start_pydns(f"autopath-{label}", COREFILE % (line, manifests, upstream.port), workdir)
            servers[label] = (srv, port)
        search = [f"shop.svc.{ZONE}", f"svc.{ZONE}", ZONE] + [s.rstrip(".") for s in _host_search()]
        stubs = {label: Stub(port, search) for label, (_srv, port) in servers.items()}
        for label, (srv, port) in servers.items():
            wait_until(lambda s=stubs[label]: s.lookup(f"web.shop.svc.{ZONE}")[2], 30, server=srv)
        pin_self()
        result: dict = {}
        for kind in ("cold", "warm"):
            figures = {label: {"queries": [], "ms": [], "found": 0} for label in stubs}
            cpu = {label: cpu_seconds(srv.pid) for label, (srv, _port) in servers.items()}
            for i in range(lookups):
                name = names[i].rstrip(".") if kind == "cold" else "popular.example.com"
                order = list(stubs.items()) if i % 2 == 0 else list(reversed(stubs.items()))
                for label, stub in order:
                    sent, seconds, found = stub.lookup(name)
                    figures[label]["queries"].append(sent)
                    figures[label]["ms"].append(seconds * 1000)
                    figures[label]["found"] += found
            cpu = {label: (cpu_seconds(srv.pid) - cpu[label]) * 1000 / lookups
                   for label, (srv, _port) in servers.items()}
            result[kind] = {label: {"queries": median(f["queries"]), "median_ms": median(f["ms"]),
                                    "server_cpu_ms": cpu[label], "found": f["found"], "lookups": lookups}
                            for label, f in figures.items()}
            log(f"{kind}: " + ", ".join(f"{label} {v['queries']} queries {v['median_ms']:.2f} ms, server CPU "
                                        f"{v['server_cpu_ms']:.2f} ms" for label, v in result[kind].items()))
        for stub in stubs.values():
            stub.close()
        result["search"] = search
        return result
    finally:
        stop_all([srv for srv, _port in servers.values()])
        upstream.stop()


def _host_search() -> list[str]:
    try:
        return read_search("/etc/resolv.conf")
    except OSError:
        return []


# ---------------------------------------------------------------- memory at scale
def _pods(count: int, namespaces: int, nodes: int, host_per_node: int):
    """Raw pods as the API sends them (slimmed as the API source slims them)."""
    for i in range(count):
        if i < nodes * host_per_node:
            node = i // host_per_node
            ip, host, ns = f"192.168.{node >> 8}.{node & 255}", True, "kube-system"
        else:
            ip, host, ns = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", False, f"ns-{i % namespaces}"
        yield {"metadata": {"name": f"pod-{i}-5d8f7c9b6-x2k4q", "namespace": ns},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
               "spec": {"hostNetwork": host, "nodeName": f"node-{i % nodes}"}}


def run_memory(count: int) -> dict:
    from pydns.plugins.kubernetes.index import Index
    from pydns.plugins.kubernetes.podaddresses import PodAddresses

    index = Index([f"{ZONE}."], pods="verified")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index.replace("Pod", _pods(count, namespaces=500, nodes=1000, host_per_node=3))
    store_bytes = tracemalloc.get_traced_memory()[0] - before
    # The same map again, beside the store's: what the address -> pod map costs
    # (its address strings are the store's own, as in the store).
    before = tracemalloc.get_traced_memory()[0]
    addresses = PodAddresses()
    for key, pod in index.store.pods.items():
        addresses.add(pod.address, key)
    map_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(addresses) == len(index.store.pod_addresses)
    mb = 1024 * 1024
    result = {"pods": count, "pod_store_mb": store_bytes / mb, "address_map_mb": map_bytes / mb,
              "addresses": len(addresses)}
    log(f"memory: {count} pods: pod store {result['pod_store_mb']:.1f} MB, of which the address map "
        f"{result['address_map_mb']:.1f} MB ({len(addresses)} addresses)")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lookups", type=int, default=200, help="lookups per server and kind (default 200)")
    ap.add_argument("--pods", type=int, default=100_000, help="pods for the memory figure (default 100000)")
    ap.add_argument("--workdir", help="where Corefiles and logs go (default: a temporary directory)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    workdir = scratch_dir(args.workdir, "pydns-autopath-")
    result = {"machine": machine(), "lookups": run_lookups(workdir, args.lookups), "memory": run_memory(args.pods)}
    cold, warm, mem = result["lookups"]["cold"], result["lookups"]["warm"], result["memory"]
    line = (f"autopath: a pod's external lookup (ndots:5, A+AAAA, median) costs {fmt(cold['autopath']['queries'], 0)} "
            f"queries / {fmt(cold['autopath']['median_ms'], 2)} ms with autopath vs "
            f"{fmt(cold['plain']['queries'], 0)} / {fmt(cold['plain']['median_ms'], 2)} ms without (cached: "
            f"{fmt(warm['autopath']['median_ms'], 2)} vs {fmt(warm['plain']['median_ms'], 2)} ms; server CPU "
            f"{fmt(warm['autopath']['server_cpu_ms'], 2)} vs {fmt(warm['plain']['server_cpu_ms'], 2)} ms); "
            f"{mem['pods'] // 1000}k pods: pod store {fmt(mem['pod_store_mb'])} MB, "
            f"address map {fmt(mem['address_map_mb'])} MB")
    finish(result, line, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
