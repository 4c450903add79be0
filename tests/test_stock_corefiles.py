"""Every Corefile in corefile_examples/ starts unchanged but for its paths and ports, and answers.

Each stock Corefile is run as written, with only what points outside the test rewritten:
ports become free ones on 127.0.0.1, forward's upstreams (/etc/resolv.conf or addresses)
become a test upstream on a free port (a resolv.conf cannot name a port, so it is replaced by
the address), the kubernetes plugin reads a fake API server (through a kubeconfig) or
manifests, and k3s's NodeHosts and the custom imports (k3s, AKS) are test files holding
typical user additions.  Nothing binds a fixed port, so parallel runs cannot clash.
"""

from __future__ import annotations

import os
import re
import urllib.request

import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest

from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer
from pydns.testing.upstream import Upstream
from pydns.corefile import CorefileError
from tests.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "corefile_examples")
# Kept as their distribution generates them, and expected to stop with this error (line, text).
FAILING = {"openshift-generated.Corefile": (28, "plugin 'ocp_dnsnameresolver' is OpenShift-specific")}
STARTING = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".Corefile") and f not in FAILING)
# What operators add through custom imports: k3s's *.override (AAAA blocked on a v4-only
# cluster), AKS's coredns-custom (a rewrite to the cluster's names), and an extra server block.
OVERRIDE = 'template IN AAAA . {\n    rcode NOERROR\n}\nrewrite name substring corp-alias.example default.svc.cluster.local\n'
EXTRA_SERVER = "extra.test:0 {\n    bind 127.0.0.1\n    whoami\n}\n"

CLUSTER = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
              "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
]


@pytest.fixture(scope="module")
def upstream():
    """The test upstream every forward is pointed at, on a free port."""
    # It also stands in for the cluster DNS that NodeLocal DNSCache forwards cluster names to.
    up = Upstream(records={("example.org.", "A"): ["192.0.2.10"], ("corp.example.", "A"): ["192.0.2.20"],
                           ("kubernetes.default.svc.cluster.local.", "A"): ["10.96.0.1"]})
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
    text = re.sub(r"^(\S.*?):(53|1053|5353) \{$", r"\1:0 {", text, flags=re.M)
    text = re.sub(r"^\s+bind .*\n", "", text, flags=re.M)  # NodeLocal DNSCache's link-local addresses
    text = re.sub(r"^(\S[^(]*?)\{$", lambda m: m.group(0) + "\n    bind 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^(\s+)health(?:\s+\S*:8080)?(\s*\{)?\s*$",
                  lambda m: f"{m.group(1)}health 127.0.0.1:{http['health']}{m.group(2) or ''}", text, flags=re.M)
    text = re.sub(r"^(\s+)ready\s*$", lambda m: f"{m.group(1)}ready 127.0.0.1:{http['ready']}", text, flags=re.M)
    text = re.sub(r"prometheus\s+\S*:(9153|9253)", f"prometheus 127.0.0.1:{http['prometheus']}", text)
    if not re.search(r"^\s+(?:kubeconfig|manifests)\s", text, flags=re.M):  # not the comments' words
        text = re.sub(r"^(\s+kubernetes .*\{)$", lambda m: m.group(1) + f"\n       kubeconfig {kubeconfig}", text, flags=re.M)
    text = re.sub(r"forward(\s+)\.\s+(?:/etc/resolv\.conf|(?:\d+\.){3}\d+(?: (?:\d+\.){3}\d+)*)",
                  lambda m: f"forward{m.group(1)}. 127.0.0.1:{upstream.port}", text)
    text = text.replace("/etc/coredns/", f"{tmp}/coredns/")
    return text, http


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def ask(srv, name: str, rdtype: str, rdclass: str = "IN"):
    host, port = srv.address
    return dns.query.udp(dns.message.make_query(name, rdtype, rdclass), host, port=port, timeout=3)


@pytest.mark.parametrize("name", STARTING)
def test_stock_corefile_starts_and_answers(name, tmp_path, monkeypatch, api, upstream):
    with open(os.path.join(EXAMPLES, name)) as fh:
        original = fh.read()
    # What a reader can rely on: each example says in a comment what it is for.
    assert original.startswith("# "), f"{name} must open with a line saying what it is for"
    for custom in (tmp_path / "coredns" / "custom", tmp_path / "custom"):  # absolute (k3s) and relative (AKS)
        custom.mkdir(parents=True)
        (custom / "extra.override").write_text(OVERRIDE)
        (custom / "extra.server").write_text(EXTRA_SERVER)
    (tmp_path / "coredns" / "NodeHosts").write_text("192.0.2.50 node-1\n")
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
        if "corp.example" in original:
            assert [rr.address for rr in srv.query("corp.example", "A").answer[0]] == ["192.0.2.20"]
        if "custom/*.override" in original:
            # The imported override: AAAA answered empty by the template, the alias rewritten.
            blocked = srv.query("example.org", "AAAA")
            assert blocked.rcode() == dns.rcode.NOERROR and not blocked.answer
            alias = srv.query("kubernetes.corp-alias.example", "A")
            assert [rr.address for rr in alias.answer[0]] == ["10.96.0.1"]
        if "custom/*.server" in original:
            # The imported *.server block serves its own zone (whoami answers with the client's address).
            extra = srv.query("who.extra.test", "A")
            assert extra.rcode() == dns.rcode.NOERROR and extra.additional
        if "chaos" in original:
            reply = ask(srv, "hostname.bind", "TXT", "CH")
            assert reply.answer and reply.answer[0].rdclass == dns.rdataclass.CH
        if "internal.cloudapp.net" in original:
            assert srv.query("a.b.c.d.internal.cloudapp.net", "A").rcode() == dns.rcode.NXDOMAIN
            assert srv.query("x.reddog.microsoft.com", "A").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name", sorted(FAILING))
def test_distribution_only_plugins_are_named_as_such(name, tmp_path):
    path = os.path.join(EXAMPLES, name)
    line, message = FAILING[name]
    with open(path) as fh:
        lines = fh.read().splitlines()
    assert lines[line - 1].strip().startswith("ocp_dnsnameresolver")
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=path).start()
    assert str(err.value).startswith(f"{path}:{line}: ") and message in str(err.value)
