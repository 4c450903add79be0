"""What a rewrite costs per query: the same answer with and without a renaming rule in front.

    python bench/rewrite.py [--rounds 5] [--qps 5000] [--json PATH]

Three pydns servers, each pinned to core 0 and loaded in turn by dnsperf from core 1 (rounds
alternate, so the machine's drift hits all of them alike):

* ``plain``: hosts answers ``real.example.org``; queries ask it directly.
* ``renamed``: ``rewrite name exact alias.example.org real.example.org`` in front; queries
  ask ``alias.example.org``, so every one is rewritten, answered and turned back.
* ``passed``: the same rule, queries ask ``real.example.org`` (the rule does not match).

The figures are the server's CPU per query at a fixed offered load and unthrottled, as
medians over the rounds, and the ratio of each to ``plain``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402
from common import (add_dnsperf_options, fmt, machine, median, pin_self, ratio,  # noqa: E402
                    require_tools, scratch_dir, start_pydns, stop_all, wait_until, write_json)

HOSTS = "    hosts {\n        10.0.0.1 real.example.org\n        reload 0\n    }\n"
RULE = "    rewrite name exact alias.example.org real.example.org\n"
SERVERS = {  # name -> (Corefile, the name dnsperf asks)
    "plain": (".:PORT {\n    bind 127.0.0.1\n" + HOSTS + "}\n", "real.example.org"),
    "renamed": (".:PORT {\n    bind 127.0.0.1\n" + RULE + HOSTS + "}\n", "alias.example.org"),
    "passed": (".:PORT {\n    bind 127.0.0.1\n" + RULE + HOSTS + "}\n", "real.example.org"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dnsperf_options(p, rounds=5)
    args = p.parse_args(argv)

    require_tools("dnsperf")
    pin_self()
    workdir = scratch_dir(args.workdir, "pydns-rewrite-")
    servers, datafiles = {}, {}
    try:
        import dns.message
        import dns.query

        for name, (corefile, qname) in SERVERS.items():
            srv, port = start_pydns(name, corefile, workdir)
            servers[name] = srv
            datafiles[name] = os.path.join(workdir, f"{name}.txt")
            with open(datafiles[name], "w") as fh:
                fh.write(f"{qname} A\n")
            reply = wait_until(lambda: dns.query.udp(dns.message.make_query(qname, "A"), "127.0.0.1", port=port,
                                                     timeout=0.5), 30, 0.1, server=srv)
            if [rr.to_text() for rrset in reply.answer for rr in rrset] != ["10.0.0.1"]:
                raise SystemExit(f"{name}: wrong answer for {qname}: {reply}")
        runs = throughput.alternate(servers, datafiles, args)
    finally:
        stop_all(servers.values())
    medians = {n: {key: median([r[key] for r in runs if r["server"] == n]) for key in ("cpu_us", "max_cpu_us", "max_qps")}
               for n in SERVERS}
    ratios = {n: {"cpu_us": ratio(m["cpu_us"], medians["plain"]["cpu_us"]),
                  "max_cpu_us": ratio(m["max_cpu_us"], medians["plain"]["max_cpu_us"])} for n, m in medians.items()}
    line = ("rewrite: CPU per query against no rewrite (fixed load; unthrottled): "
            + ", ".join(f"{n} {fmt(ratios[n]['cpu_us'], 2)}x ({fmt(ratios[n]['max_cpu_us'], 2)}x)"
                        for n in ("renamed", "passed"))
            + f"; plain {fmt(medians['plain']['cpu_us'])}us/q")
    result = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "json"},
              "runs": runs, "medians": medians, "ratios": ratios, "summary": line}
    write_json(args.json, result)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
