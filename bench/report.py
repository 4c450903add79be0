"""Markdown tables of the latest figures, for docs/performance.md.

    python bench/report.py                      # print the tables from bench/results/latest.json
    python bench/report.py --write docs/performance.md

With --write, the text between ``<!-- figures:begin -->`` and ``<!-- figures:end -->`` in
the given file is replaced by the tables, so the page always shows what the last full run
of run_all.py measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BENCH  # noqa: E402

BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
KIND_NAMES = {"a": "A, ClusterIP", "headless": "A, headless (5 records)", "srv": "SRV _http._tcp",
              "aaaa": "AAAA, NODATA", "nx": "A, NXDOMAIN", "mix": "query mix", "mix-nosrv": "mix without SRV (derived)",
              "ext": "outside names, from cache"}
SERVERS = ("pydns", "pydns-kubeadm", "pydns-cache", "dnsmasq", "dnsmasq-nosrv", "dnslib")


def num(v, digits: int = 1, suffix: str = "") -> str:
    if v is None:
        return "–"
    if abs(v) >= 10000:
        return f"{v / 1000:.0f}k{suffix}"
    if abs(v) >= 1000 and digits == 0:
        return f"{v / 1000:.1f}k{suffix}"
    return f"{v:.{digits}f}{suffix}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def kind_rows(med: dict, servers: list[str], cell) -> list[list[str]]:
    """A row per query kind measured: its name, then ``cell(figures)`` per server (blank if none)."""
    return [[KIND_NAMES[kind], *(cell(med[kind][s]) if med[kind].get(s) else "" for s in servers)]
            for kind in KIND_NAMES if kind in med]


def machine_line(latest: dict) -> str:
    m = latest["machine"]
    return (f"Measured {m['date']} on {m['cpu']}, nproc {m['nproc']}, Linux {m.get('kernel', '?')}, "
            f"Python {m['python']}; servers pinned to core 0 and dnsperf to core 1: {m['pinned']}; "
            f"the whole suite took {latest['seconds'] / 60:.0f} minutes.")


def render(latest: dict) -> str:
    out = [machine_line(latest), ""]
    out += ["**Targets**", ""]
    out += table(["target", "measured", "verdict"],
                 [[t["description"], num(t["value"], 2), t["verdict"]] for t in latest["targets"]])
    ctx = latest["figures"].get("context") or {}
    if ctx:
        out += ["The same questions read other ways: pydns/dnsmasq with the same records (SRV included) on the "
                f"mix {num(ctx.get('mix_cpu_vs_dnsmasq_same_records'), 2)}x CPU and "
                f"{num(ctx.get('mix_qps_per_core_vs_dnsmasq_same_records'), 2)}x QPS per core-second; "
                f"dnslib/pydns at saturation {num(ctx.get('mix_saturated_cpu_dnslib_over_pydns'), 1)}x; "
                f"pydns/dnsmasq-nosrv at saturation {num(ctx.get('mix_nosrv_saturated_cpu_vs_dnsmasq_nosrv'), 2)}x; "
                f"kubeadm's plugin chain costs {num(ctx.get('kubeadm_cpu_over_pydns'), 2)}x the bare kubernetes plugin.",
                ""]
    tp = latest["steps"].get("throughput", {}).get("result")
    if tp:
        med = tp["medians"]
        servers = [s for s in SERVERS if any(s in med[k] for k in med)]
        qps = tp["config"]["qps"]
        out += [f"**CPU per query** (µs, median of {tp['config']['rounds']} rounds; at {qps} qps offered, or half "
                "the server's maximum where that is lower: dnslib; in brackets: unthrottled)", ""]
        cpu = lambda v: f"{num(v['cpu_us'])} ({num(v['max_cpu_us'])})"  # noqa: E731
        out += table(["queries", *servers], kind_rows(med, servers, cpu))
        out += ["**Queries per second on one core** (answered per CPU-second of the server, unthrottled; "
                "in brackets: measured QPS, which dnsperf's single core can cap)", ""]
        out += table(["queries", *servers], kind_rows(
            med, servers, lambda v: f"{num(v['qps_per_core'], 0)} ({num(v['max_qps'], 0)})" if v.get("max_qps")
            else num(v["qps_per_core"], 0)))
        mem = tp.get("memory_kb", {})
        if mem:
            out += ["RSS after the throughput runs (1,000 services): "
                    + ", ".join(f"{s} {mem[s]['VmRSS'] / 1024:.0f} MB" for s in servers if s in mem) + ".", ""]
    sc = latest["steps"].get("scale", {}).get("result")
    if sc:
        out += ["**Scale** (FakeApiServer, kubeconfig; each service has one EndpointSlice of "
                f"{sc['config']['endpoints_per_slice']} endpoints)", ""]
        rows = [[f"{r['services']:,}", f"{r['endpoints']:,}", num(r.get("ready_s"), 2), num(r.get("startup_cpu_s"), 2),
                 num(r.get("rss_mb"), 0), num(r.get("peak_rss_mb"), 0), num(r.get("coredns_formula_mb"), 0),
                 num(r.get("event_cpu_us"), 0)] for r in sc["sizes"]]
        out += table(["services", "endpoints", "ready (s)", "pydns CPU to ready (s)", "RSS (MB)", "peak RSS (MB)",
                      "CoreDNS rule (MB)", "CPU per EndpointSlice event (µs)"], rows)
        out += [f"One EndpointSlice event at the largest size costs {num(sc.get('event_cost_ratio'), 2)}x "
                "what it costs at the smallest.", ""]
    ch = latest["steps"].get("churn", {}).get("result")
    if ch:
        load = ch.get("load") or {}
        out += [f"**DNS programming latency** under {num(ch['events_per_s'], 0)} EndpointSlice updates/s "
                f"and {load.get('qps', 0)} qps of the query mix ({load.get('answered')} answered, {load.get('lost')} lost), "
                f"{ch['samples']} samples: p50 {num(ch['p50_ms'])} ms, p90 {num(ch['p90_ms'])} ms, "
                f"p99 {num(ch['p99_ms'])} ms, max {num(ch['max_ms'])} ms; {ch['lost_samples']} never seen.", ""]
    fl = latest["steps"].get("floor", {}).get("result")
    if fl:
        out += [f"**The floor** (no DNS work; µs per query at {fl['config']['qps']} qps, in brackets unthrottled)", ""]
        out += table(["server", "CPU per query (µs)"],
                     [[n, f"{num(v['cpu_us'])} ({num(v['max_cpu_us'])})"] for n, v in fl["medians"].items()])
    hp = latest["steps"].get("hotpath", {}).get("result")
    if hp:
        out += [f"**Where pydns's time goes** ({hp['tool']}, {hp['server']}, {hp['kind']}, unthrottled, "
                f"{hp['queries']:,} queries)", ""]
        if hp["steps"]:  # a sampling profiler (py-spy) sees lines and whole stacks
            out += table(["step", "share of samples"], [[k, f"{v:.0%}"] for k, v in hp["steps"].items()])
            out += table(["share", "line", "code"],
                         [[f"{r['share']:.1%}", f"{r['file']}:{r['line']}", f"`{r['source']}`"]
                          for r in hp["lines"][:10]])
        else:  # cProfile sees functions only, and counts time blocked in recvfrom/epoll as theirs
            out += table(["own time", "with callees", "calls", "function"],
                         [[f"{r['share']:.1%}", f"{r['inclusive']:.1%}", f"{r['calls']:,}",
                           f"`{r['function']}` ({r['file']}:{r['line']})"] for r in hp["functions"][:10]])
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latest", default=os.path.join(BENCH, "results", "latest.json"))
    p.add_argument("--write", metavar="MARKDOWN", help="replace the figures section of this file")
    args = p.parse_args(argv)
    with open(args.latest) as fh:
        text = render(json.load(fh))
    if not args.write:
        print(text, end="")
        return 0
    with open(args.write) as fh:
        doc = fh.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{args.write} has no {BEGIN} ... {END} section")
    head, rest = doc.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    with open(args.write, "w") as fh:
        fh.write(f"{head}{BEGIN}\n{text}{END}{tail}")
    print(f"report: figures from {args.latest} written into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
