"""The benchmark suite runs end to end in a tiny configuration, so its scripts cannot rot.

Nothing here judges speed: the figures of a few-second run on a shared machine mean nothing.
What must hold is that every script runs, checks its servers' answers, measures pydns and
its references, and writes its JSON, the combined results and the figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_benchmark_script_runs_in_a_tiny_configuration(tmp_path):
    out_dir, svg = tmp_path / "results", tmp_path / "scaling.svg"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--quick",
                           "--out-dir", str(out_dir), "--svg", str(svg)],
                          capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]

    latest = json.loads((out_dir / "latest.json").read_text())
    steps = latest["steps"]
    assert set(steps) == {"gen_cluster", "throughput", "scale", "churn", "hotpath", "floor"}
    for name, step in steps.items():
        assert step["exit"] == 0 and step["summary"].startswith(name.split("_")[0]), (name, step)
    assert len(latest["sweep"]) == 1 and all(s["exit"] == 0 for s in latest["sweep"].values())
    printed = proc.stdout.strip().splitlines()
    assert printed[-1].startswith("run_all: ") and len(printed) == len(steps) + len(latest["sweep"]) + 1

    gen = steps["gen_cluster"]["result"]
    assert gen["services"] == 20 and gen["endpoints"] > 0

    tp = steps["throughput"]["result"]
    assert not any(tp["wrong_answers"].values()), tp["wrong_answers"]
    measured = {(r["kind"], r["server"]) for r in tp["runs"] if r["answered"] > 0}
    for server in ("pydns", "pydns-kubeadm", "dnsmasq", "dnsmasq-nosrv", "dnslib"):
        assert any(s == server for _, s in measured), f"{server} was not measured"
    assert ("ext", "pydns-cache") in measured and ("ext", "dnsmasq") in measured
    mix = tp["medians"]["mix"]
    assert mix["pydns"]["cpu_us"] > 0 and mix["dnsmasq"]["max_qps"] > 0
    assert tp["ratios"]["mix"]["cpu_pydns_over_dnsmasq"] is not None

    scale = steps["scale"]["result"]
    assert [row["services"] for row in scale["sizes"]] == [10, 30]
    for row in scale["sizes"]:
        assert row["ready_s"] > 0 and row["rss_mb"] > 0 and row["event_cpu_us_raw"] > 0
    assert scale["event_cost_ratio"] is not None

    churn = steps["churn"]["result"]
    assert churn["samples"] > 0 and churn["lost_samples"] == 0 and churn["p50_ms"] is not None

    hot = steps["hotpath"]["result"]
    assert hot["queries"] > 0 and (hot["lines"] or hot["functions"])

    floor = steps["floor"]["result"]["medians"]
    assert set(floor) == {"echo-asyncio", "echo-blocking", "dnsmasq"} and all(v["cpu_us"] for v in floor.values())

    report = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "report.py"), "--latest",
                             str(out_dir / "latest.json")], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert report.returncode == 0 and "| target | measured | verdict |" in report.stdout, report.stderr

    assert {t["target"] for t in latest["targets"]} >= {"cpu_vs_dnsmasq", "rss_mb", "churn_p99_ms"}
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 3
