"""CPU per query and maximum QPS: pydns against dnsmasq and a plain dnslib server, side by side.

    python bench/throughput.py [--services 1000] [--rounds 3] [--json out.json]

The same generated cluster is served by:

    pydns          kubernetes plugin, manifests source (the in-cluster answers)
    pydns-asyncio  the same on asyncio's own event loop instead of uvloop (when installed)
    pydns-nomemo   the same without the replies kept by the query's bytes (pydns.replies):
                   every query parsed and run through the chain
    pydns-pktinfo  the same, its socket read as a wildcard listener's is (the destination of
                   each datagram with recvmsg, the reply sent from it with sendmsg)
    pydns-kubeadm  the same behind kubeadm's plugins (errors, health, ready, prometheus, cache,
                   loadbalance, loop, reload, forward): what a real deployment pays
    pydns-cache    cache + forward to an upstream: names answered from the cache
    dnsmasq        the same records as host-record/srv-host, and caching the upstream's names
    dnsmasq-nosrv  the same without SRV records, for the kinds that need none: dnsmasq walks
                   its srv-host list on every query, so this is dnsmasq at its fastest
    dnslib         bench/dnslib_reference.py: dnslib's DNSServer over a dict
    pydns-forward  forward only (no cache): every query of the ``fwd`` kind, a name new to
                   the server, goes to a dnsmasq upstream answering all of example.com
    dnsmasq-forward  dnsmasq without cache forwarding to the same upstream

Every server is pinned to core 0 and dnsperf to core 1 (taskset).  Rounds alternate the
servers (A, B, C, A, B, C ...) for each query kind, so that a noisy neighbour hits all of
them alike.  Per run:

    max   dnsperf unthrottled (--outstanding queries in flight) for --max-seconds: answered
          queries per second, how busy the server's core was, and answered queries per
          CPU-second of the server (its one-core capacity, also when dnsperf's own core
          is the limit and the server's core is not full)
    cpu   dnsperf -Q QPS for --cpu-seconds at a fixed offered load (--qps, or half the
          server's maximum if that is lower): the server's CPU time (from /proc) divided by
          the queries it answered, in microseconds

Answers are checked (a few questions per server) before anything is measured.  The result
is the median per server and kind over the rounds, and the ratios pydns/dnsmasq and
dnslib/pydns of those medians.  The cache scenario asks names outside the cluster: pydns-cache
and dnsmasq answer them from their caches (filled by a warm-up pass), compared with pydns's
in-cluster A answers.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_cluster  # noqa: E402
from common import (BENCH, CLIENT_CORE, SERVER_CORE, add_dnsperf_options, answers_correctly, CpuMeter,  # noqa: E402
                    dnsperf, finish, fmt, free_port, log, machine, median, memory_kb, pin_self, pinned,
                    pydns_plugins, ratio, require_tools, scratch_dir, Server, start_pydns, stop_all, wait_until)

IN_CLUSTER_KINDS = ("a", "headless", "srv", "aaaa", "nx", "mix")
KIND_SERVERS = {
    "pydns": IN_CLUSTER_KINDS,
    "pydns-asyncio": ("a", "mix"),
    "pydns-pktinfo": ("a", "mix"),
    "pydns-nomemo": ("a", "mix"),
    "pydns-kubeadm": ("mix",),
    "pydns-cache": ("ext",),
    "dnsmasq": (*IN_CLUSTER_KINDS, "ext"),
    "dnsmasq-nosrv": ("a", "headless", "aaaa", "nx", "ext"),
    "dnslib": IN_CLUSTER_KINDS,
    "pydns-forward": ("fwd",),
    "dnsmasq-forward": ("fwd",),
}
FORWARDED_ZONE = "example.com"

COREFILE_PYDNS = """\
.:PORT {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests MANIFESTS
    }
}
"""

COREFILE_KUBEADM = """\
.:PORT {
    bind 127.0.0.1
    errors
    health 127.0.0.1:HEALTH {
        lameduck 5s
    }
    ready 127.0.0.1:READY
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests MANIFESTS
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus 127.0.0.1:METRICS
    FORWARD
    cache 30 {
        disable success cluster.local
        disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""

COREFILE_CACHE = """\
.:PORT {
    bind 127.0.0.1
    cache 3600
    forward . 127.0.0.1:UPSTREAM
}
"""

COREFILE_FORWARD = """\
.:PORT {
    bind 127.0.0.1
    forward . 127.0.0.1:UPSTREAM
}
"""

PLUGINS_NEEDED = {
    "pydns-forward": {"forward", "bind"},
    "pydns": {"kubernetes", "bind"},
    "pydns-asyncio": {"kubernetes", "bind"},
    "pydns-pktinfo": {"kubernetes", "bind"},
    "pydns-nomemo": {"kubernetes", "bind"},
    "pydns-kubeadm": {"kubernetes", "bind", "errors", "health", "ready", "prometheus", "cache", "loop", "reload",
                      "loadbalance"},
    "pydns-cache": {"cache", "forward", "bind"},
}


def _upstream_class():
    try:
        from pydns.testing.upstream import Upstream
    except ImportError:
        return None
    return Upstream


def plan(args, available: set[str], upstream: bool) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Which servers run which kinds, and why any server is left out."""
    skipped: dict[str, str] = {}
    wanted = [s for s in args.servers.split(",") if s]
    for name in list(wanted):
        missing = PLUGINS_NEEDED.get(name, set()) - available
        if missing:
            skipped[name] = "pydns lacks plugin(s): " + ", ".join(sorted(missing))
            wanted.remove(name)
        elif name == "pydns-cache" and not upstream:
            skipped[name] = "pydns.testing.upstream.Upstream is not available"
            wanted.remove(name)
    matrix: dict[str, list[str]] = {}
    for kind in args.kinds.split(","):
        if kind == "ext" and not upstream:
            continue
        kind_servers = [s for s in wanted if kind in KIND_SERVERS.get(s, ())]
        if kind_servers:
            matrix[kind] = kind_servers
    return matrix, skipped


def start_forward_upstream(dnsmasq_bin: str, workdir: str) -> Server:
    """A dnsmasq answering every name of FORWARDED_ZONE at once, on the client's core: the
    upstream of the ``fwd`` kind (a C upstream, so that the forwarding servers are measured)."""
    port = free_port()
    cmd = [dnsmasq_bin, "-k", "--no-resolv", "--no-hosts", f"--address=/{FORWARDED_ZONE}/192.0.2.1", f"--port={port}",
           "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-", "--cache-size=0",
           f"--pid-file={os.path.join(workdir, 'forward-upstream.pid')}", f"--user={getpass.getuser()}"]
    return Server("forward-upstream", pinned(cmd, CLIENT_CORE), port, log_dir=workdir)


def start_servers(names: set[str], paths: dict, workdir: str, upstream_port: int | None,
                  available: set[str]) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    manifests = paths["yaml"]
    for name in sorted(names):
        if name in ("pydns", "pydns-asyncio", "pydns-pktinfo", "pydns-nomemo"):
            variant = {"pydns-asyncio": "standard-loop", "pydns-pktinfo": "pktinfo", "pydns-nomemo": "no-memo"}.get(name)
            servers[name], _ = start_pydns(name, COREFILE_PYDNS.replace("MANIFESTS", manifests), workdir, variant=variant)
        elif name == "pydns-kubeadm":
            text = COREFILE_KUBEADM.replace("MANIFESTS", manifests)
            for key in ("HEALTH", "READY", "METRICS"):
                text = text.replace(key, str(free_port()))
            forward = f"forward . 127.0.0.1:{upstream_port} {{\n        max_concurrent 1000\n    }}"
            text = text.replace("FORWARD", forward if upstream_port and "forward" in available else "")
            servers[name], _ = start_pydns(name, text, workdir)
        elif name == "pydns-cache":
            servers[name], _ = start_pydns(name, COREFILE_CACHE.replace("UPSTREAM", str(upstream_port)), workdir)
        elif name in ("dnsmasq", "dnsmasq-nosrv"):
            port = free_port()
            conf = paths["dnsmasq"] if name == "dnsmasq" else paths["dnsmasq_nosrv"]
            cmd = [paths["dnsmasq_bin"], "-k", f"--conf-file={conf}", f"--port={port}",
                   "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-",
                   f"--pid-file={os.path.join(workdir, name + '.pid')}", f"--user={getpass.getuser()}"]
            if upstream_port:
                cmd.append(f"--server=127.0.0.1#{upstream_port}")
            servers[name] = Server(name, pinned(cmd, SERVER_CORE), port, log_dir=workdir)
        elif name == "pydns-forward":
            servers[name], _ = start_pydns(name, COREFILE_FORWARD.replace("UPSTREAM", str(paths["forward_upstream"])),
                                           workdir)
        elif name == "dnsmasq-forward":
            port = free_port()
            cmd = [paths["dnsmasq_bin"], "-k", "--no-resolv", "--no-hosts", "--cache-size=0", f"--port={port}",
                   "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-",
                   f"--pid-file={os.path.join(workdir, name + '.pid')}", f"--user={getpass.getuser()}",
                   f"--server=127.0.0.1#{paths['forward_upstream']}"]
            servers[name] = Server(name, pinned(cmd, SERVER_CORE), port, log_dir=workdir)
        elif name == "dnslib":
            port = free_port()
            cmd = [sys.executable, os.path.join(BENCH, "dnslib_reference.py"), "--records", paths["records"],
                   "--port", str(port)]
            servers[name] = Server(name, pinned(cmd, SERVER_CORE), port, log_dir=workdir)
        else:
            raise SystemExit(f"unknown server {name!r}")
    return servers


def check_answers(servers: dict[str, Server], expect: dict[str, list[dict]], timeout: float) -> dict:
    """Wait until each server answers, then the list of wrong answers per server."""
    wrong = {}
    for name, srv in servers.items():
        probe = expect[name][:1]
        try:
            wait_until(lambda: not answers_correctly(srv.port, probe, timeout=0.5), timeout, 0.2, server=srv)
        except (TimeoutError, RuntimeError) as exc:
            wrong[name] = [f"never answered: {exc}"]
            continue
        wrong[name] = answers_correctly(srv.port, expect[name])
    return wrong


def measure(srv: Server, datafile: str, args) -> dict:
    """One unthrottled run, then one at a fixed offered load, with the server's CPU over each."""
    meter = CpuMeter(srv.pid).start()
    peak = dnsperf(srv.port, datafile, args.max_seconds, outstanding=args.outstanding, timeout=1.0)
    cpu = meter.stop()
    peak_qps = peak["completed"] / max(peak.get("runtime", args.max_seconds), 1e-9)
    out = {"max_qps": peak_qps, "max_core_busy": cpu / meter.wall, "max_cpu_us": cpu / max(peak["completed"], 1) * 1e6,
           "qps_per_core": peak["completed"] / cpu if cpu > 0 else None, "max_lost": peak.get("lost", 0)}
    qps = min(args.qps, max(int(peak_qps * 0.5), 100))
    meter = CpuMeter(srv.pid).start()
    fixed = dnsperf(srv.port, datafile, args.cpu_seconds, qps=qps, outstanding=args.outstanding, timeout=1.0)
    cpu = meter.stop()
    out.update({"offered_qps": qps, "answered": fixed["completed"], "lost": fixed.get("lost", 0),
                "cpu_us": cpu / max(fixed["completed"], 1) * 1e6, "cpu_precise": meter.precise,
                "rcodes": fixed.get("rcodes", {}), "latency_avg_ms": fixed.get("latency_avg", 0) * 1000})
    return out



def alternate(servers: dict, datafiles: dict, args) -> list[dict]:
    """``measure`` each server in turn (A, B, C, A, B, C ...) for ``args.rounds`` rounds, each
    with its own query file: every run, tagged with its round and server."""
    runs = []
    for rnd in range(args.rounds):
        for name, srv in servers.items():
            run = measure(srv, datafiles[name], args)
            run.update(round=rnd, server=name)
            runs.append(run)
            log(f"round {rnd + 1}/{args.rounds} {name:14} cpu {run['cpu_us']:6.1f}us/q at {run['offered_qps']} qps; "
                f"unthrottled {run['max_cpu_us']:5.1f}us/q, {run['max_qps']:.0f} qps")
    return runs

def summarize(runs: list[dict]) -> dict:
    med: dict = {}
    for run in runs:
        med.setdefault(run["kind"], {}).setdefault(run["server"], []).append(run)
    out: dict = {}
    for kind, by_server in med.items():
        out[kind] = {}
        for server, rs in by_server.items():
            out[kind][server] = {
                "cpu_us": median([r["cpu_us"] for r in rs]),
                "max_qps": median([r["max_qps"] for r in rs]),
                "max_core_busy": median([r["max_core_busy"] for r in rs]),
                "max_cpu_us": median([r["max_cpu_us"] for r in rs]),
                "qps_per_core": median([r["qps_per_core"] for r in rs]),
                "offered_qps": median([r["offered_qps"] for r in rs]),
                "rounds": len(rs),
            }
    derived = mix_without_srv(out)
    if derived:
        out["mix-nosrv"] = derived
    return out


def mix_without_srv(med: dict) -> dict:
    """The mix's shares without SRV, from the per-kind medians: what dnsmasq-nosrv can be held to."""
    weights = {k: w for k, w in gen_cluster.MIX.items() if k != "srv"}
    total = sum(weights.values())
    out = {}
    servers = set.intersection(*(set(med.get(k, {})) for k in weights)) if all(k in med for k in weights) else set()
    for server in sorted(servers):
        rows = {k: med[k][server] for k in weights}
        if any(rows[k]["cpu_us"] is None or not rows[k]["qps_per_core"] for k in weights):
            continue
        out[server] = {
            "cpu_us": sum(w * rows[k]["cpu_us"] for k, w in weights.items()) / total,
            "max_cpu_us": sum(w * rows[k]["max_cpu_us"] for k, w in weights.items()) / total,
            "qps_per_core": total / sum(w / rows[k]["qps_per_core"] for k, w in weights.items()),
            "max_qps": None, "max_core_busy": None, "offered_qps": None, "rounds": 0, "derived": True,
        }
    return out


def ratios(med: dict) -> dict:
    out = {}
    for kind, s in med.items():
        def get(server, key):
            return s.get(server, {}).get(key)
        out[kind] = {
            "cpu_pydns_over_dnsmasq": ratio(get("pydns", "cpu_us"), get("dnsmasq", "cpu_us")),
            "cpu_pydns_over_dnsmasq_nosrv": ratio(get("pydns", "cpu_us"), get("dnsmasq-nosrv", "cpu_us")),
            "cpu_dnslib_over_pydns": ratio(get("dnslib", "cpu_us"), get("pydns", "cpu_us")),
            "saturated_cpu_pydns_over_dnsmasq_nosrv": ratio(get("pydns", "max_cpu_us"), get("dnsmasq-nosrv", "max_cpu_us")),
            "saturated_cpu_dnslib_over_pydns": ratio(get("dnslib", "max_cpu_us"), get("pydns", "max_cpu_us")),
            "qps_pydns_over_dnsmasq": ratio(get("pydns", "max_qps"), get("dnsmasq", "max_qps")),
            "qps_per_core_pydns_over_dnsmasq": ratio(get("pydns", "qps_per_core"), get("dnsmasq", "qps_per_core")),
            "qps_per_core_pydns_over_dnsmasq_nosrv": ratio(get("pydns", "qps_per_core"),
                                                           get("dnsmasq-nosrv", "qps_per_core")),
            "cpu_kubeadm_over_pydns": ratio(get("pydns-kubeadm", "cpu_us"), get("pydns", "cpu_us")),
            "cpu_asyncio_over_pydns": ratio(get("pydns-asyncio", "cpu_us"), get("pydns", "cpu_us")),
            "cpu_pktinfo_over_pydns": ratio(get("pydns-pktinfo", "cpu_us"), get("pydns", "cpu_us")),
            "cpu_nomemo_over_pydns": ratio(get("pydns-nomemo", "cpu_us"), get("pydns", "cpu_us")),
            "saturated_cpu_pktinfo_over_pydns": ratio(get("pydns-pktinfo", "max_cpu_us"), get("pydns", "max_cpu_us")),
            "cpu_forward_pydns_over_dnsmasq": ratio(get("pydns-forward", "cpu_us"), get("dnsmasq-forward", "cpu_us")),
            "qps_per_core_forward_pydns_over_dnsmasq": ratio(get("pydns-forward", "qps_per_core"),
                                                             get("dnsmasq-forward", "qps_per_core")),
            "qps_per_core_asyncio_over_pydns": ratio(get("pydns-asyncio", "qps_per_core"), get("pydns", "qps_per_core")),
        }
    if "ext" in med:
        cache_hit = med["ext"].get("pydns-cache", {}).get("cpu_us")
        in_cluster = med.get("a", {}).get("pydns", {}).get("cpu_us")
        out["ext"]["cpu_cache_hit_over_in_cluster"] = ratio(cache_hit, in_cluster)
        out["ext"]["cpu_cache_hit_over_dnsmasq_cache_hit"] = ratio(cache_hit, med["ext"].get("dnsmasq", {}).get("cpu_us"))
        out["ext"]["cpu_cache_hit_over_dnsmasq_nosrv_cache_hit"] = ratio(
            cache_hit, med["ext"].get("dnsmasq-nosrv", {}).get("cpu_us"))
    return out


def summary_line(result: dict) -> str:
    med, rat = result["medians"], result["ratios"]
    head = "mix" if "mix" in med else next(iter(med), None)
    parts = [f"throughput ({result['config']['services']} services, {result['config']['rounds']} rounds, medians)"]
    if head:
        m = med[head]
        cpu = ", ".join(f"{s} {fmt(v['cpu_us'], 1)}us" for s, v in m.items())
        parts.append(f"{head} CPU/query: {cpu}")
        r = rat[head]
        parts.append(f"pydns/dnsmasq {fmt(r['cpu_pydns_over_dnsmasq'], 2)}x, dnslib/pydns {fmt(r['cpu_dnslib_over_pydns'], 1)}x")
        qps = ", ".join(f"{s} {fmt(v['max_qps'], 1)}" for s, v in m.items())
        parts.append(f"max QPS: {qps} (pydns/dnsmasq {fmt(r['qps_pydns_over_dnsmasq'], 2)}x, "
                     f"per core-second {fmt(r['qps_per_core_pydns_over_dnsmasq'], 2)}x)")
    if head and rat[head].get("cpu_asyncio_over_pydns") is not None:
        parts.append(f"asyncio's loop/uvloop: CPU {fmt(rat[head]['cpu_asyncio_over_pydns'], 2)}x")
    if head and rat[head].get("cpu_pktinfo_over_pydns") is not None:
        parts.append(f"wildcard path (recvmsg/sendmsg)/bound: CPU {fmt(rat[head]['cpu_pktinfo_over_pydns'], 2)}x")
    best = rat.get("mix-nosrv", {})
    if best.get("cpu_pydns_over_dnsmasq_nosrv") is not None:
        parts.append(f"mix without SRV vs dnsmasq without SRV records: CPU {fmt(best['cpu_pydns_over_dnsmasq_nosrv'], 2)}x, "
                     f"QPS per core-second {fmt(best['qps_per_core_pydns_over_dnsmasq_nosrv'], 2)}x")
    if "ext" in rat and rat["ext"].get("cpu_cache_hit_over_in_cluster") is not None:
        hit = med["ext"]["pydns-cache"]["cpu_us"]
        parts.append(f"cache hit {fmt(hit, 1)}us = {fmt(rat['ext']['cpu_cache_hit_over_in_cluster'], 2)}x in-cluster A")
    if "fwd" in rat and rat["fwd"].get("cpu_forward_pydns_over_dnsmasq") is not None:
        parts.append(f"forwarded (cache miss) CPU pydns/dnsmasq {fmt(rat['fwd']['cpu_forward_pydns_over_dnsmasq'], 2)}x")
    if result.get("skipped"):
        parts.append("skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()))
    if any(result.get("wrong_answers", {}).values()):
        parts.append("WRONG ANSWERS: " + ", ".join(k for k, v in result["wrong_answers"].items() if v))
    return "; ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gen_cluster.add_cluster_options(p)
    add_dnsperf_options(p, rounds=3, qps_help="fixed offered load for CPU/query",
                        workdir_help="keep generated files and server logs here (default: a temporary folder)",
                        json_help="write every run and the medians as JSON")
    p.add_argument("--kinds", default="a,headless,srv,aaaa,nx,mix,ext,fwd",
                   help="query kinds, from: " + ", ".join(f"{k} ({v})" for k, v in gen_cluster.KIND_HELP.items()).replace("%", "%%")
                   + f", fwd (names under {FORWARDED_ZONE}, each forwarded)")
    p.add_argument("--servers", default="pydns,pydns-asyncio,pydns-pktinfo,pydns-kubeadm,pydns-cache,dnsmasq,dnsmasq-nosrv,dnslib,"
                   "pydns-forward,dnsmasq-forward",
                   help="servers to run (default %(default)s)")
    p.add_argument("--queries", type=int, default=10000, help="lines per query file (default %(default)s)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for a server to answer")
    args = p.parse_args(argv)

    tools = require_tools("dnsperf", "dnsmasq")
    pin_self()
    workdir = scratch_dir(args.workdir, "pydns-throughput-")
    cluster = gen_cluster.cluster_from_args(args)
    paths = gen_cluster.write_all(cluster, os.path.join(workdir, "cluster"), args.queries,
                                  external_count=min(1000, max(10, args.services)))
    paths["dnsmasq_bin"] = tools["dnsmasq"]
    forward_upstream = None
    if "fwd" in args.kinds.split(","):
        forward_upstream = start_forward_upstream(tools["dnsmasq"], workdir)
        paths["forward_upstream"] = forward_upstream.port
        paths["queries"]["fwd"] = os.path.join(workdir, "cluster", "queries", "fwd.txt")
        with open(paths["queries"]["fwd"], "w") as fh:
            fh.write("".join(f"host-{i}.{FORWARDED_ZONE} A\n" for i in range(args.queries)))
    fwd_checks = [{"name": f"host-0.{FORWARDED_ZONE}.", "type": "A", "rcode": "NOERROR", "answers": ["192.0.2.1"]}]
    with open(paths["checks"]) as fh:
        checks = json.load(fh)["checks"]
    with open(paths["external"]) as fh:
        external = json.load(fh)
    ext_checks = [{"name": n, "type": "A", "rcode": "NOERROR", "answers": [ip]} for n, ip in list(external.items())[:3]]

    Upstream = _upstream_class()
    want_ext = "ext" in args.kinds.split(",") or "pydns-kubeadm" in args.servers
    upstream = None
    if Upstream is not None and want_ext:
        upstream = Upstream(records={(n, "A"): [ip] for n, ip in external.items()}, ttl=3600)
        upstream.start()
    available = pydns_plugins()
    matrix, skipped = plan(args, available, upstream is not None)
    names = {s for servers in matrix.values() for s in servers}
    log(f"servers: {', '.join(sorted(names))}; kinds: {', '.join(matrix)}; workdir {workdir}")
    servers = start_servers(names, paths, workdir, upstream.port if upstream else None, available)
    result: dict = {"machine": machine(), "config": {**{k: v for k, v in vars(args).items() if k != "json"},
                                                    "endpoints": cluster.endpoints},
                    "skipped": skipped, "runs": []}
    try:
        expect = {}
        for name in servers:
            expect[name] = ext_checks if name == "pydns-cache" else list(checks)
            if name.endswith("-forward"):
                expect[name] = fwd_checks
            if name == "dnsmasq-nosrv":
                expect[name] = [c for c in checks if c["type"] != "SRV"]
            if name.startswith("dnsmasq") and name in matrix.get("ext", ()):
                expect[name] += ext_checks
        wrong = check_answers(servers, expect, args.start_timeout)
        result["wrong_answers"] = wrong
        for name, problems in wrong.items():
            if problems:
                log(f"{name} answers wrongly, left out: {problems[:5]}")
        good = {n for n, problems in wrong.items() if not problems}
        matrix = {k: [s for s in v if s in good] for k, v in matrix.items()}
        # warm every server up: first-time parses, caches filled from the upstream
        for kind, kind_servers in matrix.items():
            for name in kind_servers:
                dnsperf(servers[name].port, paths["queries"][kind], 10, outstanding=50, timeout=1.0, loops=1)
        for rnd in range(args.rounds):
            for kind, kind_servers in matrix.items():
                for name in kind_servers:
                    run = measure(servers[name], paths["queries"][kind], args)
                    run.update(round=rnd, kind=kind, server=name)
                    result["runs"].append(run)
                    log(f"round {rnd + 1}/{args.rounds} {kind:8} {name:14} cpu {run['cpu_us']:8.1f}us/q "
                        f"at {run['offered_qps']} qps; max {run['max_qps']:8.0f} qps (core {run['max_core_busy']:.0%})")
        result["memory_kb"] = {n: memory_kb(s.pid) for n, s in servers.items() if s.alive()}
    finally:
        stop_all([*servers.values(), *([forward_upstream] if forward_upstream else [])])
        if upstream is not None:
            upstream.stop()
    result["medians"] = summarize(result["runs"])
    result["ratios"] = ratios(result["medians"])
    line = summary_line(result)
    finish(result, line, args.json)
    return 0 if result["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
