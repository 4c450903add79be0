"""Start-up time, memory and the cost of a watch event, against a large fake API server.

    python bench/scale.py [--sizes 100,10000] [--endpoints-per-slice 10] [--events 1000]

For each size (a number of services; each has one EndpointSlice of --endpoints-per-slice
endpoints, so 10,000 services are 10,000 slices and 100,000 endpoints) a FakeApiServer is
filled with the cluster and pydns is started as a subprocess (pinned to core 0; this
process and the fake API run on core 1) with ``kubernetes { kubeconfig ... }``.  Measured:

    ready_s         from starting the process to /ready answering 200 and a known name
                    answering with its address
    startup_cpu_s   pydns's own CPU time until then (the rest is the fake API and waiting)
    peak_rss_mb     VmHWM from /proc/PID/status once ready
    rss_mb          VmRSS after the sync has settled
    event_cpu_us    CPU per EndpointSlice update: --events updates (one address changed each)
                    are written to the API, pydns's CPU is read before the first and once the
                    last is visible in DNS, minus its idle CPU over the same time, divided by
                    the number of events
    relist_s        a forced relist: every resourceVersion is made too old (410 Gone) and the
                    watches are ended, so pydns lists every kind again; from then until every
                    kind was listed, its watch is open again and a service created meanwhile
                    answers
    relist_peak_rss_mb  VmHWM over the relist (the peak is reset just before it through
                    /proc/PID/clear_refs), and rss_after_relist_mb VmRSS once it is done
    api_requests_startup, api_requests_relist
                    the requests pydns made to the API server until ready, and for a forced
                    relist (history compacted and the watches dropped: every kind syncs again),
                    by verb: streaming_list, list (pages), watch

and the ratio of event_cpu_us at the largest size to the smallest (the cost of one event
should not grow with the cluster).  RSS is compared with CoreDNS's sizing rule for its
memory limit: (pods + services) / 1000 + 54 MB, taking one pod per endpoint.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import ipaddress
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_cluster  # noqa: E402
from common import (answers_correctly, cpu_seconds, CpuMeter, finish, fmt, free_port, log, machine,  # noqa: E402
                    memory_kb, pin_self, ratio, scratch_dir, start_pydns, wait_until)

COREFILE = """\
.:PORT {
    bind 127.0.0.1
    ready 127.0.0.1:READY
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig KUBECONFIG
        startup_timeout 1s
    }
}
"""
FRESH_V4 = ipaddress.IPv4Address("10.250.0.1")


def coredns_memory_mb(pods: int, services: int) -> float:
    """CoreDNS's documented memory sizing: (pods + services) / 1000 + 54 MB."""
    return (pods + services) / 1000 + 54


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM again from the current RSS (Linux: 5 > /proc/PID/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def forced_relist(api, srv, port: int, cluster, timeout: float) -> dict:
    """Make pydns relist everything (see relist_s above); its time and memory."""
    kinds = ("Namespace", "Service", "EndpointSlice")
    watches = {kind: api.open_watches(kind) for kind in kinds}
    reset = reset_peak_rss(srv.pid)
    t0 = time.monotonic()
    api.compact()
    api.drop_watches()
    ns = cluster.namespaces[0]["metadata"]["name"]
    ip = "10.251.0.1"
    api.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "relist-marker", "namespace": ns},
                "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    marker = [{"name": f"relist-marker.{ns}.svc.{cluster.zone}.", "type": "A", "rcode": "NOERROR", "answers": [ip]}]

    def done() -> bool:
        return (syncs(api_requests(api, t0)) >= KINDS and all(api.open_watches(kind) >= watches[kind] for kind in kinds)
                and not answers_correctly(port, marker, 0.5))

    wait_until(done, timeout, 0.02, server=srv)
    mem = memory_kb(srv.pid)
    return {"relist_s": time.monotonic() - t0, "relist_peak_rss_mb": mem["VmHWM"] / 1024 if reset else None,
            "rss_after_relist_mb": mem["VmRSS"] / 1024, "api_requests_relist": api_requests(api, t0)}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except Exception:
        return False


class Churner:
    """Writes EndpointSlice updates to the fake API: one address changed per event."""

    def __init__(self, api, slices: list[dict], zone: str):
        self.api = api
        self.slices = [copy.deepcopy(s) for s in slices]
        self.zone = zone
        self.next_ip = int(FRESH_V4)
        self.turn = 0

    def event(self, which: int | None = None) -> tuple[str, str, str]:
        """Apply one update; returns (service FQDN, endpoint name of the new address, new address)."""
        index = self.turn % len(self.slices) if which is None else which
        self.turn += 1
        s = self.slices[index]
        ip = str(ipaddress.IPv4Address(self.next_ip))
        self.next_ip += 1
        ep = s["endpoints"][self.turn % len(s["endpoints"])]
        ep["addresses"] = [ip]
        ep.pop("hostname", None)
        self.api.update(copy.deepcopy(s))
        meta = s["metadata"]
        service = meta["labels"]["kubernetes.io/service-name"]
        fqdn = f"{service}.{meta['namespace']}.svc.{self.zone}."
        return fqdn, f"{gen_cluster.dashed(ip)}.{fqdn}", ip


KINDS = 3  # the Corefile's kubernetes block watches namespaces, services and endpoint slices


def api_requests(api, since: float = 0.0) -> dict[str, int]:
    """The requests made to the fake API server since ``since``, by verb."""
    counts: dict[str, int] = {}
    for r in list(api.requests):
        if r.at >= since:
            verb = "streaming_list" if r.verb == "watch" and r.query.get("sendInitialEvents") == "true" else r.verb
            counts[verb] = counts.get(verb, 0) + 1
    return counts


def syncs(counts: dict[str, int]) -> int:
    return counts.get("streaming_list", 0) + counts.get("list", 0)


def measure_size(services: int, args, workdir: str) -> dict:
    from pydns.testing.fakeapi import FakeApiServer

    cluster = gen_cluster.make_cluster(services=services, headless_ratio=0.1, headless_endpoints=args.endpoints_per_slice,
                                       clusterip_endpoints=args.endpoints_per_slice, dual_stack_ratio=0.2, nx_names=10)
    objects = cluster.objects
    api = FakeApiServer(objects)
    api.start()
    result = {"services": services, "endpoint_slices": len(cluster.slices), "endpoints": cluster.endpoints,
              "namespaces": len(cluster.namespaces)}
    srv = None
    try:
        kubeconfig = api.kubeconfig(os.path.join(workdir, f"kubeconfig-{services}"))
        ready_port = free_port()
        text = COREFILE.replace("READY", str(ready_port)).replace("KUBECONFIG", kubeconfig)
        last = cluster.v4only[-1]
        probe = [{"name": last, "type": "A", "rcode": "NOERROR", "answers": cluster.records[last]["A"]}]
        t0 = time.monotonic()
        srv, port = start_pydns(f"pydns-scale-{services}", text, workdir)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{ready_port}/ready") and not answers_correctly(port, probe, 0.5),
                   args.start_timeout, 0.02, server=srv)
        result["ready_s"] = time.monotonic() - t0
        result["api_requests_startup"] = api_requests(api)
        result["startup_cpu_s"] = cpu_seconds(srv.pid)
        result["peak_rss_mb"] = memory_kb(srv.pid)["VmHWM"] / 1024
        time.sleep(args.settle)
        mem = memory_kb(srv.pid)
        result["rss_mb"] = mem["VmRSS"] / 1024
        result["peak_rss_mb"] = max(result["peak_rss_mb"], mem["VmHWM"] / 1024)
        result["coredns_formula_mb"] = coredns_memory_mb(cluster.endpoints, services)
        result["rss_over_formula"] = result["rss_mb"] / result["coredns_formula_mb"]

        # idle CPU, to subtract from the event measurement
        idle = CpuMeter(srv.pid).start()
        time.sleep(args.idle_seconds)
        idle_rate = idle.stop() / idle.wall
        churn = Churner(api, cluster.slices, cluster.zone)
        meter = CpuMeter(srv.pid).start()
        for _ in range(args.events - 1):
            churn.event()
        _fqdn, name, ip = churn.event()
        seen = [{"name": name, "type": "A", "rcode": "NOERROR", "answers": [ip]}]
        wait_until(lambda: not answers_correctly(port, seen, 0.5), 60, 0.005, server=srv)
        cpu = meter.stop()
        result["events"] = args.events
        result["events_wall_s"] = meter.wall
        result["idle_cpu_per_s"] = idle_rate
        result["event_cpu_us"] = max(cpu - idle_rate * meter.wall, 0) / args.events * 1e6
        result["event_cpu_us_raw"] = cpu / args.events * 1e6
        result["rss_after_events_mb"] = memory_kb(srv.pid)["VmRSS"] / 1024
        result.update(forced_relist(api, srv, port, cluster, args.start_timeout))
    finally:
        if srv is not None:
            srv.stop()
        api.stop()
    log(f"scale {services} services/{cluster.endpoints} endpoints: ready {result.get('ready_s', 0):.2f}s, "
        f"RSS {result.get('rss_mb', 0):.0f} MB (peak {result.get('peak_rss_mb', 0):.0f}), "
        f"event {result.get('event_cpu_us', 0):.0f}us, relist {result.get('relist_s', 0):.2f}s "
        f"(peak RSS {fmt(result.get('relist_peak_rss_mb'), 0)} MB), API requests at start-up "
        f"{result.get('api_requests_startup')}, on a relist {result.get('api_requests_relist')}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,10000", help="numbers of services to measure, comma-separated (default %(default)s)")
    p.add_argument("--endpoints-per-slice", type=int, default=10, help="endpoints in each service's slice (default %(default)s)")
    p.add_argument("--events", type=int, default=1000, help="EndpointSlice updates for the per-event cost (default %(default)s)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds after ready before reading RSS (default %(default)s)")
    p.add_argument("--idle-seconds", type=float, default=1.0, help="idle CPU is measured this long (default %(default)s)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for ready (default %(default)s)")
    p.add_argument("--workdir", help="keep Corefiles, kubeconfigs and logs here")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)
    if importlib.util.find_spec("pydns.testing.fakeapi") is None:
        sys.exit("scale: pydns.testing.fakeapi (FakeApiServer) is not available")
    pin_self()
    workdir = scratch_dir(args.workdir, "pydns-scale-")
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    rows = [measure_size(n, args, workdir) for n in sizes]
    small, big = rows[0], rows[-1]
    result = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "json"}, "sizes": rows,
              "event_cost_ratio": ratio(big.get("event_cpu_us"), small.get("event_cpu_us")),
              "largest": big}
    line = (f"scale: {big['services']} services/{big['endpoints']} endpoints ready in {fmt(big.get('ready_s'), 2)}s "
            f"(pydns CPU {fmt(big.get('startup_cpu_s'), 2)}s), RSS {fmt(big.get('rss_mb'), 0)} MB "
            f"(peak {fmt(big.get('peak_rss_mb'), 0)} MB; CoreDNS rule {fmt(big.get('coredns_formula_mb'), 0)} MB); "
            f"forced relist {fmt(big.get('relist_s'), 2)}s, peak RSS {fmt(big.get('relist_peak_rss_mb'), 0)} MB; "
            f"EndpointSlice event {fmt(big.get('event_cpu_us'), 0)}us at {big['endpoints']} endpoints vs "
            f"{fmt(small.get('event_cpu_us'), 0)}us at {small['endpoints']} ({fmt(result['event_cost_ratio'], 2)}x); "
            f"API requests at start-up {big.get('api_requests_startup')}, on a relist {big.get('api_requests_relist')}")
    finish(result, line, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
