"""DNS programming latency: from an EndpointSlice write to the DNS answer changing, under churn.

    python bench/churn.py [--services 1000] [--rate 100] [--seconds 30] [--load-qps 2000]

pydns runs as a subprocess (pinned to core 0) with ``kubernetes { kubeconfig ... }`` against
a FakeApiServer holding a generated cluster.  While dnsperf sends a steady --load-qps of the
usual query mix, this process writes --rate EndpointSlice updates per second (one endpoint
address changed each) for --seconds.  Every --sample-every'th event goes to a headless
service kept for sampling: the time of the write is handed to a poller (a separate process,
so the fake API's threads do not delay it) that asks pydns for the service's A records about
every millisecond until the new address appears.  The latency is that moment minus the
moment just before the write.  Reported: p50, p90, p99 and max over the samples, samples
that never changed within --give-up seconds, and how the steady load fared (answered, lost).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_cluster  # noqa: E402
from common import (CLIENT_CORE, answers_correctly, can_pin, finish, fmt, machine, percentile,  # noqa: E402
                    pin_self, pinned, require_tools, scratch_dir, start_pydns, wait_until)
from scale import Churner  # noqa: E402

COREFILE = """\
.:PORT {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig KUBECONFIG
    }
}
"""


def poller(conn, port: int, interval: float, give_up: float) -> None:
    """Runs in its own process: for each (name, ip, t_write), ask until ip is in the A answer."""
    import socket

    import dns.message
    import dns.rdatatype

    if can_pin():
        os.sched_setaffinity(0, {CLIENT_CORE})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.05)
    polls = 0
    while True:
        job = conn.recv()
        if job is None:
            conn.send(("polls", polls))
            return
        name, ip, t_write = job
        query = dns.message.make_query(name, "A")
        wire_ip = bytes(int(x) for x in ip.split("."))
        latency = None
        while time.monotonic() - t_write < give_up:
            next_at = time.monotonic() + interval
            query.id = (query.id + 1) & 0xFFFF
            try:
                sock.send(query.to_wire())
                data = sock.recv(4096)
                polls += 1
            except OSError:
                continue
            # the address's 4 bytes in the reply are enough to tell, without a full parse
            if wire_ip in data[12:]:
                msg = dns.message.from_wire(data)
                if any(rd.address == ip for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset):
                    latency = time.monotonic() - t_write
                    break
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        conn.send((name, latency))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000, help="services in the cluster (default %(default)s)")
    p.add_argument("--rate", type=float, default=100.0, help="EndpointSlice updates per second (default %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the churn lasts (default %(default)s)")
    p.add_argument("--sample-every", type=int, default=10, help="sample one event in N (default %(default)s)")
    p.add_argument("--load-qps", type=int, default=2000, help="steady dnsperf query load, 0 for none (default %(default)s)")
    p.add_argument("--poll-interval", type=float, default=0.001, help="seconds between the poller's questions (default %(default)s)")
    p.add_argument("--give-up", type=float, default=5.0, help="a sample not seen after this many seconds is lost (default %(default)s)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for pydns to answer")
    p.add_argument("--workdir", help="keep the Corefile, kubeconfig and logs here")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)
    if args.load_qps:
        require_tools("dnsperf")
    try:
        from pydns.testing.fakeapi import FakeApiServer
    except ImportError:
        sys.exit("churn: pydns.testing.fakeapi (FakeApiServer) is not available")
    pin_self()
    workdir = scratch_dir(args.workdir, "pydns-churn-")

    cluster = gen_cluster.make_cluster(services=args.services, nx_names=min(1000, args.services))
    sampled_names = set(cluster.headless)
    sampled = [s for s in cluster.slices if _fqdn(s, cluster.zone) in sampled_names]
    background = [s for s in cluster.slices if _fqdn(s, cluster.zone) not in sampled_names]
    api = FakeApiServer(cluster.objects)
    api.start()
    srv = load = poll_proc = None
    latencies: list[float | None] = []
    events = 0
    result: dict = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "json"}}
    try:
        kubeconfig = api.kubeconfig(os.path.join(workdir, "kubeconfig"))
        srv, port = start_pydns("pydns-churn", COREFILE.replace("KUBECONFIG", kubeconfig), workdir)
        probe = [{"name": cluster.v4only[-1], "type": "A", "rcode": "NOERROR",
                  "answers": cluster.records[cluster.v4only[-1]]["A"]}]
        wait_until(lambda: not answers_correctly(port, probe, 0.5), args.start_timeout, 0.05, server=srv)

        ctx = multiprocessing.get_context("spawn")  # no fork of a process running the fake API's threads
        parent, child = ctx.Pipe()
        poll_proc = ctx.Process(target=poller, args=(child, port, args.poll_interval, args.give_up),
                                            daemon=True)
        poll_proc.start()
        if args.load_qps:
            mix = os.path.join(workdir, "mix.txt")
            with open(mix, "w") as fh:
                fh.write("\n".join(gen_cluster.queries(cluster, "mix", 10000)) + "\n")
            cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", mix, "-l", f"{args.seconds + 2:g}",
                   "-Q", str(args.load_qps), "-t", "1"]
            load = subprocess.Popen(pinned(cmd, CLIENT_CORE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1.0)  # the load is steady before the churn starts

        bg = Churner(api, background or sampled, cluster.zone)
        fg = Churner(api, sampled or background, cluster.zone)
        busy = False
        start = time.monotonic()
        total = int(args.rate * args.seconds)
        for k in range(total):
            due = start + k / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if busy and parent.poll():
                latencies.append(parent.recv()[1])
                busy = False
            if k % args.sample_every == 0 and not busy:
                t_write = time.monotonic()
                fqdn, _name, ip = fg.event()
                parent.send((fqdn, ip, t_write))
                busy = True
            else:
                bg.event()
            events += 1
        churn_wall = time.monotonic() - start
        if busy:
            latencies.append(parent.recv()[1])
        parent.send(None)
        polls = parent.recv()[1]
        poll_proc.join(5)
        if load is not None:
            out, _ = load.communicate(timeout=args.seconds + 60)
            completed = re.search(r"Queries completed:\s+(\d+)", out)
            lost = re.search(r"Queries lost:\s+(\d+)", out)
            result["load"] = {"qps": args.load_qps, "answered": int(completed.group(1)) if completed else None,
                              "lost": int(lost.group(1)) if lost else None}
            load = None
    finally:
        if load is not None:
            load.kill()
            load.wait()
        if poll_proc is not None and poll_proc.is_alive():
            poll_proc.kill()
        if srv is not None:
            srv.stop()
        api.stop()

    seen = [x * 1000 for x in latencies if x is not None]
    result.update({
        "events": events, "events_per_s": events / churn_wall if churn_wall else None, "samples": len(latencies),
        "lost_samples": sum(1 for x in latencies if x is None), "polls": polls,
        "p50_ms": percentile(seen, 50), "p90_ms": percentile(seen, 90), "p99_ms": percentile(seen, 99),
        "max_ms": max(seen) if seen else None, "latencies_ms": seen,
    })
    load_text = ""
    if "load" in result:
        load_text = f" under {args.load_qps} qps ({result['load']['answered']} answered, {result['load']['lost']} lost)"
    line = (f"churn: {result['events']} EndpointSlice updates at {fmt(result['events_per_s'], 0)}/s{load_text}: "
            f"write-to-answer p50 {fmt(result['p50_ms'], 1)} ms, p99 {fmt(result['p99_ms'], 1)} ms, "
            f"max {fmt(result['max_ms'], 1)} ms over {len(seen)} samples ({result['lost_samples']} never seen)")
    finish(result, line, args.json)
    return 0


def _fqdn(s: dict, zone: str) -> str:
    meta = s["metadata"]
    return f"{meta['labels']['kubernetes.io/service-name']}.{meta['namespace']}.svc.{zone}."


if __name__ == "__main__":
    sys.exit(main())
