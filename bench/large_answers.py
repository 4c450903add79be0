"""What a name with thousands of records costs per query, next to a small name, same run.

    python bench/large_answers.py [--endpoints 10000] [--rounds 3] [--max-seconds 3]

pydns serves a headless service with ``--endpoints`` ready endpoints (one A record each)
and one with two, behind kubeadm's plugins (errors, kubernetes, cache, loadbalance), pinned
to core 0.  dnsperf (core 1) asks one name at a time over plain UDP, unthrottled, in
alternating rounds; the big name's answers do not fit in 512 bytes, so each reply is the
shuffled addresses that fit, with TC.  Reported: the median QPS of each name and their
ratio; a ratio near 1 means a big name costs what a small one does.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_dnsperf_options, ask, dnsperf, finish, fmt, log, machine, median, pin_self, ratio,  # noqa: E402
                    require_tools, scratch_dir, start_pydns, stop_all, wait_until)

COREFILE = """.:PORT {{
    bind 127.0.0.1
    errors
    kubernetes cluster.local {{
        manifests {manifests}
    }}
    cache 30
    loadbalance
}}
"""
NAMES = {"small": "small.default.svc.cluster.local.", "big": "big.default.svc.cluster.local."}


def headless(name: str, ips: list[str]) -> list[dict]:
    """A headless Service and its EndpointSlices (at most 1,000 endpoints each, as Kubernetes)."""
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    slices = [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
               "metadata": {"name": f"{name}-{n // 1000}", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": name}},
               "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips[n : n + 1000]],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
              for n in range(0, len(ips), 1000)]
    return [svc, *slices]


def write_cluster(workdir: str, endpoints: int) -> str:
    first = ipaddress.ip_address("10.64.0.1")
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
               *headless("small", ["10.32.0.1", "10.32.0.2"]),
               *headless("big", [str(first + i) for i in range(endpoints)])]
    path = os.path.join(workdir, "cluster.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump_all(objects, fh)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=10000, help="endpoints of the big name (default %(default)s)")
    add_dnsperf_options(p, rounds=3, max_seconds=3.0, outstanding=100, fixed_load=False,
                        max_seconds_flags=("--max-seconds", "--seconds"))
    args = p.parse_args(argv)
    require_tools("dnsperf")
    workdir = scratch_dir(args.workdir, "pydns-large-")
    pin_self()
    corefile = COREFILE.format(manifests=write_cluster(workdir, args.endpoints))
    server, port = start_pydns("pydns-large", corefile, workdir)
    files = {}
    for key, name in NAMES.items():
        files[key] = os.path.join(workdir, f"{key}.txt")
        with open(files[key], "w") as fh:
            fh.write(f"{name} A\n")
    runs: dict[str, list] = {key: [] for key in NAMES}
    try:
        wait_until(lambda: len(ask(port, NAMES["big"]).answer), 120, server=server)
        for rnd in range(args.rounds):
            for key in NAMES:
                run = dnsperf(port, files[key], args.max_seconds, outstanding=args.outstanding)
                runs[key].append(run["qps"])
                log(f"round {rnd + 1}/{args.rounds} {key:5} {run['qps']:9.0f} qps, {run.get('lost', 0)} lost")
    finally:
        stop_all([server])
    small, big = median(runs["small"]), median(runs["big"])
    result = {"machine": machine(), "endpoints": args.endpoints, "rounds": runs,
              "qps_small": small, "qps_big": big, "ratio_big_to_small": ratio(big, small)}
    finish(result, f"large answers: {args.endpoints}-endpoint name {fmt(big)} qps, small name {fmt(small)} qps "
                   f"(ratio {fmt(ratio(big, small), 2)}, medians of {args.rounds} rounds, UDP, TC)", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
