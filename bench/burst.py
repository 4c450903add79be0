"""Latency under a burst of stub-resolver clients: pydns against dnsmasq, side by side.

    python bench/burst.py [--levels 50,100,200] [--rounds 5] [--json out.json]

What a rolling deployment does to cluster DNS: many pods look a name up at the same moment,
each through glibc's stub resolver with the pod's resolv.conf (``search NS.svc.cluster.local
svc.cluster.local cluster.local``, ``options ndots:5``).  Each client here does what
``getaddrinfo`` does: for a name with fewer than 5 dots it tries each search domain and then
the name itself, sending A and AAAA together from one socket of its own, waiting for both
replies (5 s, then once more: glibc's ``timeout:5 attempts:2``) and stopping at the first
candidate with an address.  A dropped query therefore costs that client 5 s, as it costs a
pod.  Two kinds of lookups:

    cluster    ``svc-N.ns-M`` from a pod in another namespace: one NXDOMAIN, then the
               service's address (4 queries)
    forwarded  ``host-N.example.com``, a name new each time: three NXDOMAINs from the
               cluster zone, then the name forwarded to the upstream (8 queries, 2 forwarded)

Servers, each pinned to core 0 (clients and upstream on core 1):

    pydns      kubeadm's stock Corefile (corefile_examples/kubeadm.Corefile) on 127.0.0.1, the
               cluster from manifests, ``forward`` to the fake upstream
    dnsmasq    the same records (``local=/cluster.local/``; no SRV records, which dnsmasq
               walks per query, as none is asked), forwarding to the same upstream

The upstream is a third dnsmasq (core 1), answering every name under example.com at once: a
C upstream, so that the forwarded latency is the servers' own.  (pydns.testing.upstream's
Python server, which parses each query with dnslib, needs more time for 400 queries at
once than either server does.)  Its kernel drops are reported too: a drop there would
show as a forwarding server's retry.  For each server, kind and level: p50/p99/max lookup latency over all rounds,
lookups over 1 s, client retries, and the kernel's drops on the server's socket (the ``drops``
column of /proc/net/udp).  Rounds alternate the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import random
import re
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_cluster  # noqa: E402
from common import (CLIENT_CORE, ROOT, SERVER_CORE, Server, cpu_seconds, finish, fmt, free_port, log, machine,  # noqa: E402
                    median, percentile, pin_self, pinned, ratio, require_tools, scratch_dir, search_order,
                    start_pydns, stop_all, wait_until, answers_correctly)

KINDS = ("cluster", "forwarded")
TIMEOUT, ATTEMPTS = 5.0, 2
FORWARDED_ZONE = "example.com"
_HEADER = struct.Struct("!HHHHHH")

# ---------------------------------------------------------------- the stub resolver
def query(qid: int, name: str, qtype: int) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", qtype, 1)


class Stub:
    """One client's socket, read straight from the loop's selector (no task per reply, so
    that the client's own cost stays small beside the servers')."""

    def __init__(self, loop, server: tuple[str, int]):
        self.loop = loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(server)
        self.waiting: set[int] = set()
        self.counts: list[int] = []
        self.done: asyncio.Future | None = None
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:  # drained (or a refused port: the wait times out)
                return
            if len(data) < 12:
                continue
            qid, _flags, _qd, an, _ns, _ar = _HEADER.unpack_from(data)
            if qid in self.waiting:
                self.waiting.discard(qid)
                self.counts.append(an)
                if not self.waiting and not self.done.done():
                    self.done.set_result(True)

    async def ask(self, name: str, timeout: float) -> list[int] | None:
        """A and AAAA for ``name`` together: their answer counts, or None on a timeout."""
        ids = {random.getrandbits(16): 1}
        while len(ids) < 2:
            ids[random.getrandbits(16)] = 28
        self.waiting, self.counts = set(ids), []
        self.done = self.loop.create_future()
        timer = self.loop.call_later(timeout, lambda fut=self.done: fut.done() or fut.set_result(False))
        for qid, qtype in ids.items():
            self.sock.send(query(qid, name, qtype))
        complete = await self.done
        timer.cancel()
        return self.counts if complete else None

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def lookup(server: tuple[str, int], name: str, search: list[str]) -> tuple[float, int, bool]:
    """One ``getaddrinfo``: (seconds, retries, found an address)."""
    stub = Stub(asyncio.get_running_loop(), server)
    started = time.perf_counter()
    retries = 0
    try:
        for candidate in search_order(name, search):
            for _attempt in range(ATTEMPTS):
                counts = await stub.ask(candidate, TIMEOUT)
                if counts is not None:
                    break
                retries += 1
            if counts is not None and any(counts):
                return time.perf_counter() - started, retries, True
        return time.perf_counter() - started, retries, False
    finally:
        stub.close()


async def burst(server: tuple[str, int], names: list[str], search: list[str]) -> list[tuple[float, int, bool]]:
    return await asyncio.gather(*(lookup(server, n, search) for n in names))


# ---------------------------------------------------------------- the servers
def kernel_drops(port: int) -> int:
    """The drops counter of the UDP socket on 127.0.0.1:port (/proc/net/udp)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 13 and fields[1] == local:
                return int(fields[12])
    return 0


def kubeadm_corefile(upstream_port: int, manifests: str) -> str:
    """kubeadm's stock Corefile, made to listen on 127.0.0.1 and serve the benchmark cluster."""
    with open(os.path.join(ROOT, "corefile_examples", "kubeadm.Corefile")) as fh:
        text = fh.read()
    text = text.replace(".:53 {", ".:PORT {\n    bind 127.0.0.1", 1)
    text = re.sub(r"health \{", f"health 127.0.0.1:{free_port()} {{", text)
    text = text.replace("    ready\n", f"    ready 127.0.0.1:{free_port()}\n")
    text = text.replace("prometheus :9153", f"prometheus 127.0.0.1:{free_port()}")
    text = text.replace("forward . /etc/resolv.conf", f"forward . 127.0.0.1:{upstream_port}")
    text = text.replace("       pods insecure\n", f"       pods insecure\n       manifests {manifests}\n")
    return text


def start_upstream(dnsmasq_bin: str, workdir: str) -> Server:
    """The upstream both servers forward to: a dnsmasq answering every name of FORWARDED_ZONE."""
    port = free_port()
    cmd = [dnsmasq_bin, "-k", "--no-resolv", "--no-hosts", f"--address=/{FORWARDED_ZONE}/192.0.2.1", f"--port={port}",
           "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-", "--cache-size=0",
           f"--pid-file={os.path.join(workdir, 'upstream.pid')}", f"--user={getpass.getuser()}"]
    return Server("upstream", pinned(cmd, CLIENT_CORE), port, log_dir=workdir)


def start_servers(paths: dict, workdir: str, upstream_port: int, dnsmasq_bin: str) -> dict[str, Server]:
    servers = {}
    servers["pydns"], _ = start_pydns("pydns", kubeadm_corefile(upstream_port, paths["yaml"]), workdir)
    port = free_port()
    cmd = [dnsmasq_bin, "-k", f"--conf-file={paths['dnsmasq_nosrv']}", f"--port={port}", "--listen-address=127.0.0.1",
           "--bind-interfaces", "--log-facility=-", f"--pid-file={os.path.join(workdir, 'dnsmasq.pid')}",
           f"--user={getpass.getuser()}", f"--server=127.0.0.1#{upstream_port}"]
    servers["dnsmasq"] = Server("dnsmasq", pinned(cmd, SERVER_CORE), port, log_dir=workdir)
    return servers


# ---------------------------------------------------------------- the run
def lookups(kind: str, count: int, cluster: gen_cluster.Cluster, serial: list[int]) -> list[str]:
    """``count`` names of one kind; forwarded names are new each time (no cache has them)."""
    if kind == "cluster":
        fqdns = random.sample(cluster.clusterip, min(count, len(cluster.clusterip)))
        return [".".join(f.split(".")[:2]) for f in (fqdns * (count // len(fqdns) + 1))[:count]]
    names = [f"host-{serial[0] + i}.{FORWARDED_ZONE}" for i in range(count)]
    serial[0] += count
    return names


def summarize(samples: list[tuple[float, int, bool]], drops: int) -> dict:
    latencies = [s[0] for s in samples]
    return {"lookups": len(samples), "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "max_ms": max(latencies) * 1e3, "over_1s": sum(1 for t in latencies if t > 1.0),
            "retries": sum(s[1] for s in samples), "not_found": sum(1 for s in samples if not s[2]), "drops": drops}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="50,100,200", help="concurrent lookups per burst (default %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="bursts per server, kind and level (default %(default)s)")
    p.add_argument("--kinds", default=",".join(KINDS), help="cluster, forwarded (default %(default)s)")
    p.add_argument("--services", type=int, default=1000, help="services in the cluster (default %(default)s)")
    p.add_argument("--pause", type=float, default=0.3, help="seconds between bursts (default %(default)s)")
    p.add_argument("--workdir", help="keep generated files and server logs here (default: a temporary folder)")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    tools = require_tools("dnsmasq")
    pin_self()
    random.seed(7)
    workdir = scratch_dir(args.workdir, "pydns-burst-")
    cluster = gen_cluster.make_cluster(args.services)
    paths = gen_cluster.write_all(cluster, os.path.join(workdir, "cluster"), 100, external_count=10)
    serial = [0]
    upstream = start_upstream(tools["dnsmasq"], workdir)
    servers = start_servers(paths, workdir, upstream.port, tools["dnsmasq"])
    probe = [{"name": cluster.clusterip[0], "type": "A", "rcode": "NOERROR",
              "answers": cluster.records[cluster.clusterip[0]]["A"]}]
    search = ["ns-0.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    result: dict = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "json"}, "runs": []}
    try:
        for srv in servers.values():
            wait_until(lambda: not answers_correctly(srv.port, probe, 0.5), 120, 0.2, server=srv)
        upstream_drops = kernel_drops(upstream.port)
        samples: dict[tuple, list] = {}
        drops: dict[tuple, int] = {}
        cpu_ms: dict[tuple, list] = {}
        for kind in kinds:
            for level in levels:
                for rnd in range(args.rounds):
                    for name, srv in servers.items():
                        names = lookups(kind, level, cluster, serial)
                        before, cpu = kernel_drops(srv.port), cpu_seconds(srv.pid)
                        got = asyncio.run(burst(("127.0.0.1", srv.port), names, search))
                        dropped = kernel_drops(srv.port) - before
                        cpu = cpu_seconds(srv.pid) - cpu
                        cpu_ms.setdefault((name, kind, level), []).append(cpu * 1e3)
                        samples.setdefault((name, kind, level), []).extend(got)
                        drops[(name, kind, level)] = drops.get((name, kind, level), 0) + dropped
                        lat = sorted(t for t, _, _ in got)
                        log(f"{kind:9} {level:4} round {rnd + 1}/{args.rounds} {name:8} p50 {lat[len(lat) // 2] * 1e3:7.1f} ms"
                            f" max {lat[-1] * 1e3:7.1f} ms drops {dropped} server CPU {cpu * 1e3:5.0f} ms")
                        time.sleep(args.pause)
        table = {}
        for (name, kind, level), got in samples.items():
            row = summarize(got, drops[(name, kind, level)])
            row["cpu_ms_per_burst"] = median(cpu_ms[(name, kind, level)])
            table.setdefault(kind, {}).setdefault(str(level), {})[name] = row
        result["table"] = table
        result["upstream_drops"] = kernel_drops(upstream.port) - upstream_drops
    finally:
        stop_all([*servers.values(), upstream])
    parts = []
    for kind, by_level in result["table"].items():
        for level, row in by_level.items():
            mine, ref = row.get("pydns"), row.get("dnsmasq")
            parts.append(f"{kind} {level}: pydns p50 {fmt(mine['p50_ms'], 1)} ms p99 {fmt(mine['p99_ms'], 1)} max "
                         f"{fmt(mine['max_ms'], 0)} >1s {mine['over_1s']} drops {mine['drops']}; dnsmasq p50 "
                         f"{fmt(ref['p50_ms'], 1)} ms drops {ref['drops']} (p50 {fmt(ratio(mine['p50_ms'], ref['p50_ms']), 1)}x)")
    parts.append(f"upstream drops {result['upstream_drops']}")
    finish(result, "burst: " + "; ".join(parts), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
