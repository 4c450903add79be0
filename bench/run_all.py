"""Run the whole benchmark suite and write bench/results/latest.json and the scaling figure.

    python bench/run_all.py             # default sizes: about 12 minutes on 2 cores
    python bench/run_all.py --quick     # tiny sizes: checks that every script still works

Steps, each a subprocess whose one summary line is collected:

    gen_cluster   the default cluster (1,000 services), as a record of what is measured
    throughput    CPU per query and max QPS: pydns, dnsmasq, dnslib; cache hits
    scale         start-up, RSS and per-event CPU at several cluster sizes (up to 10,000
                  services / 100,000 endpoints)
    churn         DNS programming latency under 100 EndpointSlice events/s
    hotpath       a sampling profile of pydns answering the query mix (py-spy, else cProfile)
    floor         what a UDP query costs with no DNS work: Python echo servers and dnsmasq
    sweep         throughput at several cluster sizes (A and the mix; pydns and dnsmasq)

then the targets from docs/performance.md are checked against the figures, and CPU per query
and RSS against cluster size are drawn into docs/performance-scaling.svg.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svgplot  # noqa: E402
from common import BENCH, ROOT, log, machine, scratch_dir, write_json  # noqa: E402

FULL = {
    "gen_cluster": ["--services", "1000"],
    "throughput": [],
    "scale": ["--sizes", "100,1000,3000,10000"],
    "churn": [],
    "hotpath": ["--kind", "mix", "--seconds", "6"],
    "floor": [],
    "sweep_sizes": [100, 3000, 10000],
    "sweep": ["--kinds", "a,mix", "--servers", "pydns,dnsmasq,dnsmasq-nosrv", "--rounds", "2"],
}
QUICK = {
    "gen_cluster": ["--services", "20", "--queries", "50", "--external", "5"],
    "throughput": ["--services", "30", "--rounds", "1", "--max-seconds", "0.3", "--cpu-seconds", "0.3",
                   "--queries", "200", "--kinds", "mix,ext", "--qps", "500"],
    "scale": ["--sizes", "10,30", "--endpoints-per-slice", "2", "--events", "20", "--settle", "0",
              "--idle-seconds", "0.2"],
    "churn": ["--services", "20", "--seconds", "1", "--rate", "20", "--sample-every", "4", "--load-qps", "200"],
    "hotpath": ["--services", "20", "--queries", "200", "--seconds", "1", "--rate", "200"],
    "floor": ["--rounds", "1", "--max-seconds", "0.2", "--cpu-seconds", "0.2", "--qps", "500"],
    "sweep_sizes": [40],
    "sweep": ["--kinds", "a", "--servers", "pydns,dnsmasq,dnsmasq-nosrv", "--rounds", "1", "--max-seconds", "0.2",
              "--cpu-seconds", "0.2", "--queries", "200", "--qps", "500"],
}

STEPS = ("gen_cluster", "throughput", "scale", "churn", "hotpath", "floor", "sweep")
# (figure, what is promised, le: at most / ge: at least, limit)
TARGETS = [
    ("cpu_vs_dnsmasq", "CPU per in-cluster query <= 1.3x dnsmasq (mix without SRV, dnsmasq without SRV records)",
     "le", 1.3),
    ("dnslib_vs_pydns", "CPU per in-cluster query >= 20x cheaper than the plain dnslib server (mix)", "ge", 20.0),
    ("qps_vs_dnsmasq", "max QPS on one core >= 0.8x dnsmasq (mix without SRV, dnsmasq without SRV records)",
     "ge", 0.8),
    ("cache_vs_in_cluster", "a cache hit costs the same as an in-cluster answer (within 1.2x)", "le", 1.2),
    ("ready_s", "10k services / 100k endpoints: ready in <= 15 s", "le", 15.0),
    ("rss_mb", "10k services / 100k endpoints: RSS <= 164 MB", "le", 164.0),
    ("event_cost_ratio", "one EndpointSlice event costs the same at 100k as at 1k endpoints (within 2x)", "le", 2.0),
    ("churn_p99_ms", "DNS programming latency p99 <= 100 ms under 100 events/s", "le", 100.0),
]


def run_step(name: str, script: str, extra: list[str], out_dir: str, timeout: float) -> dict:
    """Run one script; its JSON goes to ``out_dir`` (a scratch folder: latest.json keeps every result)."""
    path = os.path.join(out_dir, f"{name}.json")
    cmd = [sys.executable, os.path.join(BENCH, script), *extra, "--json", path]
    log(f"== {name}: {' '.join(cmd[1:])}")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, cwd=ROOT)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        code, out = "timeout", (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    lines = [line for line in out.splitlines() if line.strip()]
    step = {"command": cmd[1:], "exit": code, "seconds": round(time.monotonic() - t0, 1),
            "summary": lines[-1] if lines else ""}
    if code == 0 and os.path.exists(path):
        with open(path) as fh:
            step["result"] = json.load(fh)
    else:
        step["error"] = out[-2000:]
    log(f"   {step['summary'] or step.get('error', '')[-300:]} ({step['seconds']}s)")
    return step


def figures(steps: dict) -> dict:
    """The figures the targets are judged on, None where a step gave none."""
    f: dict = {k: None for k, *_ in TARGETS}
    tp = steps.get("throughput", {}).get("result")
    if tp:
        mix, strict = tp["ratios"].get("mix", {}), tp["ratios"].get("mix-nosrv", {})
        f["cpu_vs_dnsmasq"] = strict.get("cpu_pydns_over_dnsmasq_nosrv")
        f["dnslib_vs_pydns"] = mix.get("cpu_dnslib_over_pydns")
        f["qps_vs_dnsmasq"] = strict.get("qps_per_core_pydns_over_dnsmasq_nosrv")
        # the same questions read other ways, for the record
        f["context"] = {
            "mix_cpu_vs_dnsmasq_same_records": mix.get("cpu_pydns_over_dnsmasq"),
            "mix_qps_per_core_vs_dnsmasq_same_records": mix.get("qps_per_core_pydns_over_dnsmasq"),
            "mix_saturated_cpu_dnslib_over_pydns": mix.get("saturated_cpu_dnslib_over_pydns"),
            "mix_nosrv_saturated_cpu_vs_dnsmasq_nosrv": strict.get("saturated_cpu_pydns_over_dnsmasq_nosrv"),
            "kubeadm_cpu_over_pydns": mix.get("cpu_kubeadm_over_pydns"),
        }
        f["cache_vs_in_cluster"] = tp["ratios"].get("ext", {}).get("cpu_cache_hit_over_in_cluster")
    sc = steps.get("scale", {}).get("result")
    if sc:
        big = sc["largest"]
        f["ready_s"] = big.get("ready_s")
        f["rss_mb"] = big.get("rss_mb")
        f["event_cost_ratio"] = sc.get("event_cost_ratio")
    ch = steps.get("churn", {}).get("result")
    if ch:
        f["churn_p99_ms"] = ch.get("p99_ms")
    return f


def judge(f: dict) -> list[dict]:
    out = []
    for key, text, op, limit in TARGETS:
        value = f.get(key)
        if value is None:
            verdict = "not measured"
        else:
            ok = value <= limit if op == "le" else value >= limit
            verdict = "met" if ok else "missed"
        out.append({"target": key, "description": text, "value": value, "limit": limit, "verdict": verdict})
    return out


SWEEP_SERIES = (("pydns", "a", "pydns, A"), ("pydns", "mix", "pydns, query mix"),
                 ("dnsmasq-nosrv", "a", "dnsmasq without SRV records, A"), ("dnsmasq", "a", "dnsmasq, same records, A"))


def scaling_svg(steps: dict, sweep: dict[int, dict]) -> str:
    results = [step["result"] for step in sweep.values() if step.get("result")]
    tp = steps.get("throughput", {}).get("result")
    if tp:
        results.append(tp)
    cpu: dict[str, dict[int, float]] = {}
    for res in results:
        size = res["config"]["services"]
        for server, kind, label in SWEEP_SERIES:
            v = res["medians"].get(kind, {}).get(server)
            if v and v.get("cpu_us"):
                cpu.setdefault(label, {}).setdefault(size, v["cpu_us"])
    rss, peak, rule = [], [], []
    sc = steps.get("scale", {}).get("result")
    for row in (sc or {}).get("sizes", []):
        if row.get("rss_mb") is not None:
            rss.append((row["services"], row["rss_mb"]))
            peak.append((row["services"], row["peak_rss_mb"]))
            rule.append((row["services"], row["coredns_formula_mb"]))
    qps = next((res["config"]["qps"] for res in results), None)
    panels = [
        svgplot.Panel(f"CPU per query at {qps} qps (µs)", "services in the cluster",
                      [svgplot.Series(label, sorted(cpu[label].items())) for _s, _k, label in SWEEP_SERIES if label in cpu],
                      log_y=True),
        svgplot.Panel("pydns memory (MB)", "services (10 endpoints each)",
                      [svgplot.Series("RSS after sync", rss), svgplot.Series("peak RSS", peak),
                       svgplot.Series("CoreDNS sizing rule", rule, dashed=True)]),
    ]
    m = machine()
    note = f"{m['cpu']}, {m['nproc']} cores, Python {m['python']}, {m['date']}; servers pinned to one core"
    return svgplot.render(panels, title="pydns: cost as the cluster grows", note=note)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and durations (seconds, not minutes)")
    p.add_argument("--out-dir", default=os.path.join(BENCH, "results"),
                   help="where latest.json goes (default %(default)s)")
    p.add_argument("--svg", default=os.path.join(ROOT, "docs", "performance-scaling.svg"),
                   help="the scaling figure (default %(default)s)")
    p.add_argument("--only", default=",".join(STEPS), help="steps to run (default: all of %(default)s)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other steps of the existing latest.json (re-run some steps only)")
    p.add_argument("--step-timeout", type=float, default=1800.0, help="seconds before a step is abandoned")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    only = set(args.only.split(","))
    os.makedirs(args.out_dir, exist_ok=True)
    steps: dict[str, dict] = {}
    sweep: dict[int, dict] = {}
    previous_seconds = 0.0
    latest_path = os.path.join(args.out_dir, "latest.json")
    if args.merge and os.path.exists(latest_path):
        with open(latest_path) as fh:
            old = json.load(fh)
        steps = {k: v for k, v in old["steps"].items() if k not in only}
        if "sweep" not in only:
            sweep = {int(k): v for k, v in old["sweep"].items()}
        previous_seconds = sum(v.get("seconds", 0) for v in (*steps.values(), *sweep.values()))
    t0 = time.monotonic()
    scratch = scratch_dir(None, "pydns-bench-")
    if "gen_cluster" in only:
        steps["gen_cluster"] = run_step("gen_cluster", "gen_cluster.py",
                                        ["--out", os.path.join(scratch, "cluster"), *cfg["gen_cluster"]],
                                        scratch, args.step_timeout)
    for name in ("throughput", "scale", "churn", "hotpath", "floor"):
        if name in only:
            steps[name] = run_step(name, f"{name}.py", cfg[name], scratch, args.step_timeout)
    if "sweep" in only:
        for size in cfg["sweep_sizes"]:
            sweep[size] = run_step(f"sweep-{size}", "throughput.py", ["--services", str(size), *cfg["sweep"]],
                                   scratch, args.step_timeout)
    found = figures(steps)
    targets = judge(found)
    steps = {k: steps[k] for k in STEPS if k in steps}  # in the suite's order, merged or not
    summary = [s["summary"] or f"{name}: failed (exit {s['exit']})" for name, s in steps.items()]
    summary += [s["summary"] or f"sweep {n}: failed (exit {s['exit']})" for n, s in sweep.items()]
    missed = [t["target"] for t in targets if t["verdict"] == "missed"]
    unmeasured = [t["target"] for t in targets if t["verdict"] == "not measured"]
    line = (f"run_all: {len(targets) - len(missed) - len(unmeasured)} of {len(targets)} targets met"
            + (f", missed: {', '.join(missed)}" if missed else "")
            + (f", not measured: {', '.join(unmeasured)}" if unmeasured else "")
            + f" ({time.monotonic() - t0:.0f}s)")
    latest = {"machine": machine(), "quick": args.quick, "seconds": round(time.monotonic() - t0 + previous_seconds, 1),
              "targets": targets, "figures": found, "summary": summary + [line],
              "steps": steps, "sweep": {str(k): v for k, v in sweep.items()}}
    write_json(latest_path, latest)
    if sweep or "scale" in steps:
        os.makedirs(os.path.dirname(os.path.abspath(args.svg)), exist_ok=True)
        with open(args.svg, "w") as fh:
            fh.write(scaling_svg(steps, sweep))
    for s in summary:
        print(s)
    print(line)
    failed = [n for n, s in {**steps, **{f"sweep-{k}": v for k, v in sweep.items()}}.items() if s["exit"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
