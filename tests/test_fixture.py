"""The pytest fixture that test authors use: pydns serving a cluster they describe and change."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import dns.rcode
import dns.resolver
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_GETADDRINFO = socket.getaddrinfo

WEB = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"],
             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
}
SHOP = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}

DB_YAML = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- addresses: [10.244.0.7]
  hostname: db-0
  conditions: {ready: true}
"""


@pytest.mark.pydns(objects=[SHOP, WEB])
def test_serves_the_objects_of_the_marker(pydns_cluster):
    answer = pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")
    assert [r.address for r in answer] == ["10.96.5.5"]
    srv = pydns_cluster.resolver.resolve("_http._tcp.web.shop.svc.cluster.local", "SRV")
    assert [(r.port, r.target.to_text()) for r in srv] == [(80, "web.shop.svc.cluster.local.")]


@pytest.mark.pydns(objects=[SHOP])
def test_objects_change_while_the_test_runs(pydns_cluster):
    with pytest.raises(dns.resolver.NXDOMAIN):
        pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")
    pydns_cluster.apply(WEB)
    assert pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")[0].address == "10.96.5.5"
    pydns_cluster.apply({**WEB, "spec": {**WEB["spec"], "clusterIP": "10.96.5.6", "clusterIPs": ["10.96.5.6"]}})
    assert pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")[0].address == "10.96.5.6"
    pydns_cluster.delete("Service", "shop", "web")
    reply = pydns_cluster.query("web.shop.svc.cluster.local", "A", tcp=True)
    assert reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.pydns(objects=[SHOP])
def test_yaml_text_and_headless_services(pydns_cluster):
    pydns_cluster.apply(DB_YAML)
    assert pydns_cluster.resolver.resolve("db-0.db.shop.svc.cluster.local", "A")[0].address == "10.244.0.7"
    pydns_cluster.delete(DB_YAML)
    with pytest.raises(dns.resolver.NXDOMAIN):
        pydns_cluster.resolver.resolve("db.shop.svc.cluster.local", "A")


def test_manifest_files_and_another_zone(pydns_factory, tmp_path):
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    (tmp_path / "db.yaml").write_text(DB_YAML)
    cluster = pydns_factory(manifests=[str(tmp_path)], zone="corp.internal")
    assert cluster.resolver.resolve("db-0.db.shop.svc.corp.internal", "A")[0].address == "10.244.0.7"
    assert cluster.address[0] == "127.0.0.1" and cluster.port > 0


# ---------------------------------------------------------------- the code under test resolving through it

API = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "api", "namespace": "shop"},
    "spec": {"clusterIP": "127.0.0.1", "clusterIPs": ["127.0.0.1"], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
}


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from api"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_on_loopback():
    """An HTTP server on 127.0.0.1 (where the Service API points) and a free port."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.pydns(objects=[SHOP, WEB, API])
def test_application_code_resolves_through_the_fixture(pydns_cluster, http_on_loopback):
    system = {name: getattr(socket, name) for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")}
    with pydns_cluster.as_system_resolver(namespace="shop"):
        # What an application calls, with the short names a pod in "shop" would use.
        infos = socket.getaddrinfo("web", 80, type=socket.SOCK_STREAM)
        assert {info[4][:2] for info in infos} == {("10.96.5.5", 80)}
        assert socket.getaddrinfo("web.shop.svc.cluster.local", 80, socket.AF_INET, socket.SOCK_STREAM, 0,
                                  socket.AI_ADDRCONFIG)[0][4] == ("10.96.5.5", 80)
        assert socket.gethostbyname("web.shop") == "10.96.5.5"
        assert socket.gethostbyname_ex("web.shop.svc.cluster.local")[2] == ["10.96.5.5"]
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("nothing-here", 80)
        # A real client, end to end: urllib resolves api.shop through pydns, then connects.
        with urllib.request.urlopen(f"http://api.shop.svc.cluster.local:{http_on_loopback}/", timeout=5) as reply:
            assert reply.read() == b"hello from api"
        # localhost is the system's, as a pod's /etc/hosts answers it.
        assert socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4] == ("127.0.0.1", 80)
        # asyncio resolves through the socket module too.
        async def lookup():
            return await asyncio.get_running_loop().getaddrinfo("web.shop.svc.cluster.local", 443,
                                                                type=socket.SOCK_STREAM)

        infos = asyncio.run(lookup())
        assert {info[4][:2] for info in infos} == {("10.96.5.5", 443)}
    assert {name: getattr(socket, name) for name in system} == system
    asked = pydns_cluster.journal.names("A")
    assert "web.shop.svc.cluster.local" in asked and "api.shop.svc.cluster.local" in asked
    assert "localhost" not in pydns_cluster.journal.names()


@pytest.mark.pydns(objects=[SHOP, WEB])
def test_python_subprocesses_resolve_through_the_fixture(pydns_cluster):
    code = "import socket; print(socket.gethostbyname('web'))"
    env = pydns_cluster.subprocess_env(namespace="shop")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "10.96.5.5"
    assert pydns_cluster.journal[-1].name == "web.shop.svc.cluster.local"


# ---------------------------------------------------------------- journal and wait_for


@pytest.mark.pydns(objects=[SHOP, WEB])
def test_the_journal_records_what_was_asked(pydns_cluster):
    assert pydns_cluster.journal == []
    pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")
    pydns_cluster.query("nope.shop.svc.cluster.local", "AAAA", tcp=True)
    pydns_cluster.wait_for("web.shop.svc.cluster.local", "A", value="10.96.5.5")  # the fixture's own: left out
    first, second = pydns_cluster.journal
    assert (first.name, first.type, first.rcode, first.proto) == ("web.shop.svc.cluster.local", "A", "NOERROR", "udp")
    assert (second.name, second.type, second.rcode, second.proto) == ("nope.shop.svc.cluster.local", "AAAA", "NXDOMAIN", "tcp")
    assert first.client[0] == "127.0.0.1" and first.client[1] > 0
    assert pydns_cluster.journal.names("AAAA") == ["nope.shop.svc.cluster.local"]


def test_wait_for_sees_changes_made_on_disk(pydns_factory, tmp_path):
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(yaml.safe_dump_all([SHOP]))
    cluster = pydns_factory(manifests=[str(tmp_path)])
    assert cluster.wait_for("web.shop.svc.cluster.local", absent=True, timeout=1) == []
    manifest.write_text(yaml.safe_dump_all([SHOP, WEB]))  # picked up within 2 seconds
    assert cluster.wait_for("web.shop.svc.cluster.local", "A", timeout=10) == ["10.96.5.5"]
    moved = {**WEB, "spec": {**WEB["spec"], "clusterIP": "10.96.5.6", "clusterIPs": ["10.96.5.6"]}}
    manifest.write_text(yaml.safe_dump_all([SHOP, moved]))
    assert cluster.wait_for("web.shop.svc.cluster.local", value="10.96.5.6", timeout=10) == ["10.96.5.6"]
    manifest.write_text(yaml.safe_dump_all([SHOP]))
    assert cluster.wait_for("web.shop.svc.cluster.local", absent=True, timeout=10) == []
    with pytest.raises(TimeoutError, match="NXDOMAIN"):
        cluster.wait_for("web.shop.svc.cluster.local", timeout=0.2)
    assert cluster.journal == []


# ---------------------------------------------------------------- one server per session, reset per test

SEEN: dict[str, object] = {}


@pytest.mark.pydns(objects=[SHOP, WEB])
def test_session_server_first_test_leaves_a_mess(pydns_cluster):
    SEEN["port"] = pydns_cluster.port
    pydns_cluster.apply(DB_YAML)
    pydns_cluster.resolver.resolve("db-0.db.shop.svc.cluster.local", "A")
    pydns_cluster.as_system_resolver()  # never restored by the test itself
    assert socket.getaddrinfo is not SYSTEM_GETADDRINFO


@pytest.mark.pydns(objects=[SHOP])
def test_session_server_next_test_starts_clean(pydns_cluster):
    assert pydns_cluster.port == SEEN["port"]  # the same server...
    assert pydns_cluster.journal == []  # ...with an empty journal,
    assert socket.getaddrinfo is SYSTEM_GETADDRINFO  # the system resolver back,
    for name in ("web.shop.svc.cluster.local", "db-0.db.shop.svc.cluster.local"):  # only this test's objects
        assert pydns_cluster.query(name, "A").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.pydns(objects=[SHOP, WEB], zone="corp.internal")
def test_a_test_that_shapes_the_server_gets_its_own(pydns_cluster):
    assert pydns_cluster.port != SEEN["port"]
    assert pydns_cluster.resolver.resolve("web.shop.svc.corp.internal", "A")[0].address == "10.96.5.5"


def test_log_in_extra_is_refused_with_a_reason(pydns_factory):
    with pytest.raises(ValueError, match="journal"):
        pydns_factory(extra="log\ncache 30")


# ---------------------------------------------------------------- the docs' example, as written


def test_the_example_in_docs_testing_runs_as_written(tmp_path):
    text = (ROOT / "docs" / "testing.md").read_text()
    (example,) = re.findall(r"```python\n(# test_checkout\.py\n.*?)```", text, re.S)
    (tmp_path / "test_checkout.py").write_text(example)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_checkout.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"\b\d+ passed\b", out.stdout) and "failed" not in out.stdout


def test_the_overhead_benchmark_runs(tmp_path):
    """bench/fixture_overhead.py (docs/testing.md's figures) in a tiny configuration; no timing judged."""
    out = tmp_path / "overhead.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fixture_overhead.py"), "--tests", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tests_per_kind"] == 3 and result["shared_ms"] > 0 and result["dedicated_ms"] > 0
    assert proc.stdout.strip().splitlines()[-1].startswith("fixture_overhead: ")


def test_journals_of_overlapping_servers_stay_apart_and_the_query_log_level_comes_back(pydns_factory):
    querylog = logging.getLogger("querylog")
    level, filters = querylog.level, list(querylog.filters)  # the session's server may be running
    first, second = pydns_factory([SHOP, WEB]), pydns_factory([SHOP])
    first.query("web.shop.svc.cluster.local")
    first.stop()  # the other keeps its journal going
    second.query("nope.shop.svc.cluster.local")
    assert first.journal.names() == ["web.shop.svc.cluster.local"]
    assert second.journal.names() == ["nope.shop.svc.cluster.local"]
    second.stop()
    assert querylog.level == level and querylog.filters == filters
