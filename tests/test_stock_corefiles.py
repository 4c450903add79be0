"""Every Corefile in corefile_examples/ starts unchanged but for its paths and ports, and answers.

Each stock Corefile is run as written, with only what points outside the test rewritten:
ports become free ones on 127.0.0.1, /etc/resolv.conf names a test upstream, the
kubernetes plugin reads a fake API server (through a kubeconfig) or manifests, and k3s's
NodeHosts and custom imports are test files.
"""

from __future__ import annotations

import os
import re
import urllib.request

import dns.rcode
import pytest

from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer
from pydns.testing.upstream import Upstream
from tests.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "corefile_examples")

CLUSTER = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
              "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
]


@pytest.fixture(scope="module")
def upstream():
    """A test upstream on 127.0.0.1:53, where a resolv.conf's nameserver lines point."""
    up = Upstream(records={("example.org.", "A"): ["192.0.2.10"], ("corp.example.", "A"): ["192.0.2.20"]}, port=53)
    up.start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def api():
    server = FakeApiServer(CLUSTER)
    server.start()
    yield server
    server.stop()


def localise(text: str, tmp, api, upstream) -> tuple[str, dict[str, int]]:
    """Point a stock Corefile at test files and free loopback ports; returns it and the HTTP ports."""
    http = {"health": free_port(), "ready": free_port(), "prometheus": free_port()}
    kubeconfig = api.kubeconfig(str(tmp / "kubeconfig"))
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    text = re.sub(r"^(\S.*?):(53|1053) \{$", r"\1:0 {", text, flags=re.M)
    text = re.sub(r"^(\S[^(]*?)\{$", lambda m: m.group(0) + "\n    bind 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^(\s+)health( \{)?$", lambda m: f"{m.group(1)}health 127.0.0.1:{http['health']}{m.group(2) or ''}", text, flags=re.M)
    text = re.sub(r"^(\s+)ready$", lambda m: f"{m.group(1)}ready 127.0.0.1:{http['ready']}", text, flags=re.M)
    text = text.replace("prometheus :9153", f"prometheus 127.0.0.1:{http['prometheus']}")
    if "kubeconfig" not in text and "manifests" not in text:
        text = re.sub(r"^(\s+kubernetes .*\{)$", lambda m: m.group(1) + f"\n       kubeconfig {kubeconfig}", text, flags=re.M)
    text = text.replace("/etc/resolv.conf", str(resolv))
    text = re.sub(r"forward \. (?:\d+\.){3}\d+(?: (?:\d+\.){3}\d+)*", f"forward . 127.0.0.1:{upstream.port}", text)
    text = text.replace("/etc/coredns/", f"{tmp}/coredns/")
    return text, http


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".Corefile")))
def test_stock_corefile_starts_and_answers(name, tmp_path, monkeypatch, api, upstream):
    with open(os.path.join(EXAMPLES, name)) as fh:
        original = fh.read()
    # What a reader can rely on: each example says in a comment what it is for.
    assert original.startswith("# "), f"{name} must open with a line saying what it is for"
    (tmp_path / "coredns" / "custom").mkdir(parents=True)
    (tmp_path / "coredns" / "NodeHosts").write_text("192.0.2.50 node-1\n")
    (tmp_path / "coredns" / "custom" / "extra.override").write_text("log\n")
    (tmp_path / "coredns" / "custom" / "extra.server").write_text("extra.test:0 {\n    bind 127.0.0.1\n    whoami\n}\n")
    (tmp_path / ".kube").mkdir()
    api.kubeconfig(str(tmp_path / ".kube" / "config"))
    (tmp_path / "cluster.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\n"
        "spec: {clusterIP: 10.96.0.1, clusterIPs: [10.96.0.1], ports: [{name: https, port: 443, protocol: TCP}]}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PYDNS_MANIFESTS", str(tmp_path / "cluster.yaml"))
    text, http = localise(original, tmp_path, api, upstream)
    (tmp_path / "Corefile").write_text(text)
    with ServerThread(text, path=str(tmp_path / "Corefile")) as srv:
        reply = srv.query("kubernetes.default.svc.cluster.local", "A")
        assert reply.rcode() == dns.rcode.NOERROR, text
        assert [rr.address for rr in reply.answer[0]] == ["10.96.0.1"]
        forwarded = srv.query("example.org", "A")
        assert forwarded.rcode() == dns.rcode.NOERROR
        assert [rr.address for rr in forwarded.answer[0]] == ["192.0.2.10"]
        if "health" in original:
            assert get(http["health"], "/health") == (200, "OK")
        if "\n    ready" in original:
            assert get(http["ready"], "/ready")[0] == 200
        if "prometheus" in original:
            status, body = get(http["prometheus"], "/metrics")
            assert status == 200 and "coredns_dns_requests_total" in body
        if "NodeHosts" in original:
            node = srv.query("node-1", "A")
            assert [rr.address for rr in node.answer[0]] == ["192.0.2.50"]
            # The imported *.server block serves its own zone (whoami answers with the client's address).
            extra = srv.query("who.extra.test", "A")
            assert extra.rcode() == dns.rcode.NOERROR and extra.additional
        if "corp.example" in original:
            assert [rr.address for rr in srv.query("corp.example", "A").answer[0]] == ["192.0.2.20"]
