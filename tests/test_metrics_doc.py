"""docs/metrics.md lists exactly the metric families a server with every plugin exports."""

from __future__ import annotations

import os
import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pydns.testing import ServerThread
from pydns.testing.upstream import Upstream
from tests.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_metrics_doc_matches_what_is_exported(tmp_path):
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
    (tmp_path / "hosts").write_text("192.0.2.1 one\n")
    port = free_port()
    up = Upstream(records={("example.org.", "A"): ["192.0.2.2"]})
    up.start()
    corefile = f""".:0 {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:0
    ready 127.0.0.1:0
    prometheus 127.0.0.1:{port}
    reload
    hosts {tmp_path}/hosts {{
        fallthrough
    }}
    kubernetes cluster.local {{
        manifests {tmp_path}/cluster.yaml
    }}
    cache 30
    loadbalance
    forward . 127.0.0.1:{up.port}
    loop
}}
"""
    try:
        with ServerThread(corefile) as srv:
            srv.query("example.org", "A")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                body = resp.read().decode()
    finally:
        up.stop()
    exported = set()
    for family in text_string_to_metric_families(body):
        if family.name.startswith("coredns_"):
            exported.add(family.name + ("_total" if family.type == "counter" else ""))
    with open(os.path.join(ROOT, "docs", "metrics.md"), encoding="utf-8") as fh:
        documented = set(re.findall(r"^\| `(coredns_[a-z_]+)` \|", fh.read(), re.M))
    assert exported == documented, f"only exported: {exported - documented}; only documented: {documented - exported}"
