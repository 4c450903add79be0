"""bench/burst.py runs end to end in a tiny configuration, so that it cannot rot.

Nothing here judges speed; what must hold is that the script starts pydns (kubeadm's stock
Corefile) and dnsmasq and the upstream, walks the search list like a stub resolver for both
kinds of names, and reports every figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(110)
def test_burst_benchmark_runs_in_a_tiny_configuration(tmp_path):
    out = tmp_path / "burst.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "burst.py"), "--levels", "3,5", "--rounds", "1",
                           "--services", "20", "--pause", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=100, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert proc.stdout.startswith("burst: ") and result["summary"] == proc.stdout.strip()
    for kind in ("cluster", "forwarded"):
        for level in ("3", "5"):
            for server in ("pydns", "dnsmasq"):
                row = result["table"][kind][level][server]
                assert row["lookups"] == int(level) and row["not_found"] == 0, (kind, level, server, row)
                assert {"p50_ms", "p99_ms", "max_ms", "over_1s", "drops", "retries", "cpu_ms_per_burst"} <= set(row)
