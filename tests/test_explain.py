"""``pydns explain`` and the explain plugin's /explain endpoint, over real HTTP and DNS.

One server with a small cluster (manifests), a cache, a fallthrough zone and a forwarder to
a real upstream; each test asks /explain and, where it matters, the same question over DNS.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from pydns.testing import ServerThread
from pydns.testing.upstream import Upstream
from tests.kube_cluster import endpoint, endpoint_slice, external, headless, namespace, pod, service

pytestmark = pytest.mark.timeout(60)

UPSTREAM_RECORDS = {
    ("www.example.org.", "A"): ["192.0.2.80"],
    ("www.example.org.", "AAAA"): ["2001:db8::80"],
    ("api.fall.local.", "A"): ["192.0.2.7"],
}

def publishing_not_ready(svc: dict) -> dict:
    svc["spec"]["publishNotReadyAddresses"] = True
    return svc


CLUSTER = [
    namespace("shop"), namespace("dev"), namespace("prod"), namespace("secret"),
    service("web", "shop", ips=("10.0.0.10",), ports=(("http", 80, "TCP"),)),
    endpoint_slice("web-1", "web", [endpoint("10.1.0.1"), endpoint("10.1.0.2"), endpoint("10.1.0.3", ready=False)],
                   ns="shop"),
    service("api", "dev", ips=("10.0.0.20",)), service("api", "prod", ips=("10.0.0.21",)),
    service("batch", "dev", ips=("10.0.0.22",)),
    service("dual", "shop", ips=("10.0.0.30", "fd00::30")),
    headless("db", "shop", ports=(("sql", 5432, "TCP"),)),
    endpoint_slice("db-1", "db", [endpoint("10.1.1.1", "db-0"), endpoint("10.1.1.2", "db-1")], ns="shop",
                   ports=(("sql", 5432, "TCP"),)),
    headless("queue", "shop"),
    endpoint_slice("queue-1", "queue", [endpoint("10.1.2.1", ready=False), endpoint("10.1.2.2", ready=False),
                                        endpoint("10.1.2.3", ready=False)], ns="shop"),
    publishing_not_ready(headless("peers", "shop")),
    # Marked not ready although the service publishes them: not what the EndpointSlice
    # controller writes, but a manifest may say it, and CoreDNS reads the condition alone.
    endpoint_slice("peers-1", "peers", [endpoint("10.1.3.1", "peer-0"), endpoint("10.1.3.2", "peer-1", ready=False)],
                   ns="shop"),
    service("empty", "shop", ips=("10.0.0.40",)),
    external("docs", "www.example.org", ns="shop"),
    external("alias", "web.shop.svc.cluster.local", ns="shop"),
    service("hidden", "secret", ips=("10.0.0.50",)),
    pod("worker", "10.2.0.5", ns="shop"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = tmp_path_factory.mktemp("explain") / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(CLUSTER))
    up = Upstream(UPSTREAM_RECORDS, ttl=300).start()
    upstream = f"{up.address[0]}:{up.address[1]}"
    corefile = f"""
cluster.local:0 fall.local:0 10.in-addr.arpa:0 {{
  bind 127.0.0.1
  explain 127.0.0.1:0
  cache 30
  kubernetes cluster.local fall.local 10.in-addr.arpa {{
    manifests {path}
    namespaces shop dev prod
    pods verified
    fallthrough fall.local
  }}
  forward . {upstream}
}}
example.org:0 {{
  bind 127.0.0.1
  forward . {upstream}
}}
"""
    srv = ServerThread(corefile).start()
    yield srv
    srv.stop()
    up.stop()


def http_port(srv: ServerThread) -> int:
    return srv.instance.http[("127.0.0.1", 0)].bound_port


def get(srv: ServerThread, target: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", http_port(srv), timeout=20)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "application/json"
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def explain(srv: ServerThread, name: str, qtype: str = "A") -> dict:
    status, out = get(srv, f"/explain?name={name}&type={qtype}")
    assert status == 200, out
    return out


def reasons(out: dict) -> str:
    return "\n".join(f"{s['plugin']}: {s['verdict']}: {s['reason']}" for s in out["steps"])


def step_of(out: dict, plugin: str) -> dict:
    steps = [s for s in out["steps"] if s["plugin"] == plugin]
    assert steps, reasons(out)
    return steps[-1]


def dns_answer(srv: ServerThread, name: str, qtype: str) -> tuple[str, list[str]]:
    """rcode and records (owner, type, data; TTLs aside) of a real query, as explain's query asks it."""
    q = dns.message.make_query(name, qtype, use_edns=0, payload=1232)
    msg = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5)
    rrs = [f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rr.to_text()}" for rrset in msg.answer for rr in rrset]
    return dns.rcode.to_text(msg.rcode()), sorted(rrs)


def explained_answer(out: dict) -> tuple[str, list[str]]:
    rrs = []
    for text in out["answer"]:
        owner, _ttl, _cls, rtype, data = text.split(" ", 4)
        rrs.append(f"{owner} {rtype} {dns.rdata.from_text('IN', rtype, data).to_text()}")
    return out["rcode"], sorted(rrs)


def svc(name: str, ns: str = "shop") -> str:
    return f"{name}.{ns}.svc.cluster.local."


# ------------------------------------------------------------------ verdicts per record kind


def test_a_clusterip_service(cluster):
    out = explain(cluster, svc("web"))
    assert out["rcode"] == "NOERROR" and out["plugin"] == "kubernetes"
    assert out["block"]["zone"] == "cluster.local."
    assert out["chain"] == ["cache", "kubernetes", "forward"]
    assert [a.split()[-1] for a in out["answer"]] == ["10.0.0.10"]
    last = out["steps"][-1]
    assert last["verdict"] == "answered"
    assert last["reason"].startswith("ClusterIP service `shop/web` (10.0.0.10); 2 ready endpoints, 1 not ready, "
                                     "in 1 EndpointSlice; publishNotReadyAddresses is false")
    assert last["ready_endpoints"] == 2 and last["not_ready_endpoints"] == 1 and last["cluster_ips"] == ["10.0.0.10"]


def test_aaaa_of_a_dual_stack_service_and_nodata_of_a_v4_one(cluster):
    out = explain(cluster, svc("dual"), "AAAA")
    assert [a.split()[-1] for a in out["answer"]] == ["fd00::30"]
    out = explain(cluster, svc("api", "dev"), "AAAA")
    assert out["rcode"] == "NOERROR" and out["answer"] == [] and "SOA" in out["authority"][0]
    assert "it has no AAAA records: NODATA" in step_of(out, "kubernetes")["reason"]


def test_srv_of_a_named_port_and_of_a_headless_service(cluster):
    out = explain(cluster, "_http._tcp." + svc("web"), "SRV")
    assert out["answer"][0].endswith("SRV 0 100 80 web.shop.svc.cluster.local.")
    assert "port name `_http._tcp` is matched against its ports (http/tcp 80)" in step_of(out, "kubernetes")["reason"]
    out = explain(cluster, svc("db"), "SRV")
    assert len(out["answer"]) == 2 and len(out["additional"]) == 2
    assert "headless service `shop/db`; 2 ready endpoints" in step_of(out, "kubernetes")["reason"]


def test_an_endpoint_name_and_a_missing_one(cluster):
    out = explain(cluster, "db-0." + svc("db"))
    assert [a.split()[-1] for a in out["answer"]] == ["10.1.1.1"]
    assert "endpoint `db-0` is one of them" in step_of(out, "kubernetes")["reason"]
    out = explain(cluster, "db-9." + svc("db"))
    assert out["rcode"] == "NXDOMAIN"
    assert "no ready endpoint is named `db-9` (ready ones: db-0, db-1)" in step_of(out, "kubernetes")["reason"]


def test_ptr_of_a_cluster_ip_and_of_an_endpoint(cluster):
    out = explain(cluster, "10.0.0.10.in-addr.arpa.", "PTR")
    assert out["answer"][0].endswith("PTR web.shop.svc.cluster.local.")
    assert "10.0.0.10 is the cluster IP of service shop/web" in step_of(out, "kubernetes")["reason"]
    out = explain(cluster, "1.1.1.10.in-addr.arpa.", "PTR")
    assert "10.1.1.1 is a ready endpoint of service shop/db" in step_of(out, "kubernetes")["reason"]
    out = explain(cluster, "9.9.9.10.in-addr.arpa.", "PTR")
    assert out["rcode"] == "NXDOMAIN"
    assert "no service or ready endpoint has address 10.9.9.9" in step_of(out, "kubernetes")["reason"]


def test_a_verified_pod_name(cluster):
    out = explain(cluster, "10-2-0-5.shop.pod.cluster.local.")
    assert [a.split()[-1] for a in out["answer"]] == ["10.2.0.5"]
    assert "`pods verified`: 1 pod in namespace `shop` with address 10.2.0.5" in step_of(out, "kubernetes")["reason"]
    out = explain(cluster, "10-2-0-6.shop.pod.cluster.local.")
    assert out["rcode"] == "NXDOMAIN"
    assert "no pod in namespace `shop` has address 10.2.0.6" in step_of(out, "kubernetes")["reason"]


def test_the_apex_and_dns_version(cluster):
    out = explain(cluster, "cluster.local.", "SOA")
    assert "SOA" in out["answer"][0] and "the zone apex cluster.local." in out["steps"][-1]["reason"]
    out = explain(cluster, "dns-version.cluster.local.", "TXT")
    assert out["answer"][0].endswith('TXT "1.1.0"')


# ------------------------------------------------------------------ failure reasons


QUEUE_NONE_READY = ("headless service `shop/queue`; 0 ready endpoints, 3 not ready, in 1 EndpointSlice; "
                    "publishNotReadyAddresses is false: endpoints that are not ready are never served "
                    "(with true, the EndpointSlice controller marks every endpoint ready); "
                    "a headless service without ready endpoints has no records")


def endpoint_counts(step: dict) -> tuple[int, int, bool]:
    return step["ready_endpoints"], step["not_ready_endpoints"], step["publish_not_ready_addresses"]


def test_headless_service_without_ready_endpoints(cluster):
    out = explain(cluster, svc("queue"))
    assert out["rcode"] == "NXDOMAIN"
    step = step_of(out, "kubernetes")
    assert step["reason"] == QUEUE_NONE_READY
    assert endpoint_counts(step) == (0, 3, False)
    assert explained_answer(out) == dns_answer(cluster, svc("queue"), "A") == ("NXDOMAIN", [])


def test_endpoints_marked_not_ready_although_the_service_publishes_them(cluster):
    out = explain(cluster, "peer-1." + svc("peers"))
    assert out["rcode"] == "NXDOMAIN"
    step = step_of(out, "kubernetes")
    assert step["reason"] == ("headless service `shop/peers`; 1 ready endpoint, 1 not ready, in 1 EndpointSlice; "
                              "publishNotReadyAddresses is true, yet their EndpointSlices mark them not ready, and "
                              "an endpoint's ready condition decides; no ready endpoint is named `peer-1` "
                              "(ready ones: peer-0)")
    assert endpoint_counts(step) == (1, 1, True)
    assert explained_answer(out) == dns_answer(cluster, "peer-1." + svc("peers"), "A") == ("NXDOMAIN", [])
    assert dns_answer(cluster, svc("peers"), "A") == ("NOERROR", [svc("peers") + " A 10.1.3.1"])


def test_clusterip_service_without_endpoints_still_answers(cluster):
    out = explain(cluster, svc("empty"))
    assert [a.split()[-1] for a in out["answer"]] == ["10.0.0.40"]
    assert "ClusterIP service `shop/empty` (10.0.0.40); 0 ready endpoints" in out["steps"][-1]["reason"]


def test_namespace_not_in_namespaces(cluster):
    out = explain(cluster, svc("hidden", "secret"))
    assert out["rcode"] == "NXDOMAIN"
    assert step_of(out, "kubernetes")["reason"] == "namespace `secret` is not in `namespaces` (`dev`, `prod`, `shop`)"


def test_namespace_that_does_not_exist(cluster):
    out = explain(cluster, svc("web", "nope"))
    assert out["rcode"] == "NXDOMAIN"
    assert step_of(out, "kubernetes")["reason"].startswith("namespace `nope` does not exist")


def test_no_such_service_but_elsewhere(cluster):
    out = explain(cluster, svc("api", "shop"))
    assert out["rcode"] == "NXDOMAIN"
    step = step_of(out, "kubernetes")
    assert step["reason"] == "no such service `api` in namespace `shop`; services with that name exist in `dev`, `prod`"
    assert step["service_in"] == ["dev", "prod"]


def test_externalname_target_resolved_through_forward(cluster):
    out = explain(cluster, svc("docs"))
    assert out["rcode"] == "NOERROR"
    assert out["answer"][0].split()[-2:] == ["CNAME", "www.example.org."]
    assert out["answer"][1].split()[-1] == "192.0.2.80"
    assert out["plugin"] == "kubernetes"
    assert "www.example.org. A asked through server block `example.org:0`" in reasons(out)
    assert step_of(out, "forward")["reason"].startswith("upstream 127.0.0.1:")
    assert ("ExternalName service `shop/docs`: CNAME to www.example.org.; the target is outside the cluster's "
                "zone and is resolved through this server's own chain") in step_of(out, "kubernetes")["reason"]


def test_externalname_target_inside_the_cluster(cluster):
    out = explain(cluster, svc("alias"))
    assert out["answer"][-1].split()[-1] == "10.0.0.10"
    assert out["plugin"] == "kubernetes"
    assert "the target is in the cluster's zone and is looked up in the store" in out["steps"][-1]["reason"]


def test_answer_from_cache_with_its_ttl_left(cluster):
    first = explain(cluster, svc("api", "prod"))
    assert first["plugin"] == "kubernetes"
    assert step_of(first, "cache")["verdict"] == "passed on"
    assert "not in the cache" in step_of(first, "cache")["reason"]
    again = explain(cluster, svc("api", "prod"))
    assert again["plugin"] == "cache"
    assert [a.split()[-1] for a in again["answer"]] == [a.split()[-1] for a in first["answer"]] == ["10.0.0.21"]
    step = again["steps"][-1]
    assert step["plugin"] == "cache" and step["verdict"] == "answered"
    assert 1 <= step["ttl_left"] <= 5
    assert step["reason"] == (f"answer from cache, {step['ttl_left']} s left (kept for 5 s, success cache, "
                              "written by kubernetes)")


def test_search_list_expansion(cluster):
    out = explain(cluster, "google.com.shop.svc.cluster.local.")
    assert out["rcode"] == "NXDOMAIN"
    step = step_of(out, "kubernetes")
    assert ("the name looks like a search-list expansion of google.com. with search domain shop.svc.cluster.local "
            "(the client's ndots made this query") in step["reason"]
    assert step["search_expansion_of"] == "google.com."
    out = explain(cluster, "google.com.cluster.local.")
    assert step_of(out, "kubernetes")["search_domain"] == "cluster.local."
    out = explain(cluster, "google.com.svc.cluster.local.")
    assert step_of(out, "kubernetes")["search_domain"] == "svc.cluster.local."
    # A service name in an existing namespace is no expansion, even when it is missing.
    assert "search_expansion_of" not in step_of(explain(cluster, svc("nothing")), "kubernetes")


def test_forwarded_name_says_which_upstream(cluster):
    out = explain(cluster, "www.example.org.")
    assert out["block"]["keys"] == ["example.org:0"]
    assert out["plugin"] == "forward"
    step = step_of(out, "forward")
    assert step["verdict"] == "asked" and step["upstream"].startswith("127.0.0.1:")
    assert step["reason"] == f"upstream {step['upstream']} answered NOERROR"


def test_fallthrough_between_plugins(cluster):
    out = explain(cluster, "api.fall.local.")
    assert out["rcode"] == "NOERROR" and out["plugin"] == "forward"
    steps = [(s["plugin"], s["verdict"]) for s in out["steps"]]
    assert steps == [("cache", "passed on"), ("kubernetes", "passed on"), ("forward", "asked")]
    assert step_of(out, "kubernetes")["reason"].endswith("; `fallthrough` hands it on")


def test_refused_for_a_name_in_no_zone(cluster):
    out = explain(cluster, "nothing.invalid.")
    assert out["rcode"] == "REFUSED" and out["block"] is None and out["plugin"] is None
    assert out["reason"].startswith("no server block on port 0 serves a zone that holds this name")
    assert "cluster.local." in out["reason"] and "example.org." in out["reason"]


def test_bad_questions_get_400_with_a_reason(cluster):
    assert get(cluster, "/explain")[0] == 400
    status, out = get(cluster, "/explain?name=web.shop.svc.cluster.local&type=NOPE")
    assert status == 400 and "NOPE" in out["error"]
    status, out = get(cluster, f"/explain?name={'a' * 64}.cluster.local")
    assert status == 400
    status, out = get(cluster, "/explain?name=x.cluster.local&port=1")
    assert status == 400 and "does not listen on port 1" in out["error"]


# ------------------------------------------------------------------ explain == DNS

TABLE = [
    (svc("web"), "A"), (svc("web"), "AAAA"), (svc("web"), "SRV"), (svc("web"), "TXT"), (svc("web"), "MX"),
    ("_http._tcp." + svc("web"), "SRV"), ("_http._udp." + svc("web"), "SRV"), ("_nope._tcp." + svc("web"), "SRV"),
    (svc("dual"), "A"), (svc("dual"), "AAAA"), (svc("api", "dev"), "A"), (svc("api", "prod"), "A"),
    (svc("api"), "A"), (svc("db"), "A"), (svc("db"), "SRV"), ("db-0." + svc("db"), "A"), ("db-1." + svc("db"), "SRV"),
    ("db-7." + svc("db"), "A"), (svc("queue"), "A"), (svc("queue"), "SRV"), (svc("peers"), "A"),
    ("peer-1." + svc("peers"), "A"), (svc("empty"), "A"),
    (svc("docs"), "A"), (svc("docs"), "AAAA"), (svc("docs"), "CNAME"), (svc("alias"), "A"),
    (svc("hidden", "secret"), "A"), (svc("web", "nope"), "A"), ("shop.svc.cluster.local.", "A"),
    ("shop.svc.cluster.local.", "TXT"), ("secret.svc.cluster.local.", "A"), ("svc.cluster.local.", "A"),
    ("cluster.local.", "SOA"), ("cluster.local.", "NS"), ("cluster.local.", "A"), ("dns-version.cluster.local.", "TXT"),
    ("10-2-0-5.shop.pod.cluster.local.", "A"), ("10-2-0-6.shop.pod.cluster.local.", "A"),
    ("10.0.0.10.in-addr.arpa.", "PTR"), ("1.1.1.10.in-addr.arpa.", "PTR"), ("9.9.9.10.in-addr.arpa.", "PTR"),
    ("google.com.shop.svc.cluster.local.", "A"), ("google.com.cluster.local.", "AAAA"),
    ("www.example.org.", "A"), ("www.example.org.", "AAAA"), ("missing.example.org.", "A"),
    ("api.fall.local.", "A"), ("gone.fall.local.", "A"), ("nothing.invalid.", "A"),
    ("WEB.Shop.svc.cluster.local.", "A"),
]


@pytest.mark.parametrize("name,qtype", TABLE)
def test_explain_answers_what_dns_answers(cluster, name, qtype):
    explained = explained_answer(explain(cluster, name, qtype))  # for most names the first query: no cache
    assert explained == dns_answer(cluster, name, qtype)


# ------------------------------------------------------------------ the command line


def test_the_cli_explains_against_a_running_server(cluster):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    url = f"http://127.0.0.1:{http_port(cluster)}"
    run = subprocess.run([sys.executable, "-m", "pydns", "explain", svc("batch"), "A", "-url", url],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "batch.shop.svc.cluster.local. A: NXDOMAIN"
    assert "  server block: cluster.local:0 fall.local:0 10.in-addr.arpa:0 (zone cluster.local., port 0)" in lines
    assert "  chain:        cache -> kubernetes -> forward" in lines
    assert "  cache: passed on: not in the cache: asked the next plugin, and the answer may be kept" in lines
    assert ("  kubernetes: answered: no such service `batch` in namespace `shop`; services with that name exist in "
            "`dev`") in lines
    assert lines[-2:] == ["  authority:", lines[-1]] and " IN SOA ns.dns.cluster.local. " in lines[-1]
    run = subprocess.run([sys.executable, "-m", "pydns", "explain", svc("web"), "-url", url, "-json"],
                         capture_output=True, text=True, timeout=30, env=env)
    assert json.loads(run.stdout)["answer"][0].endswith("A 10.0.0.10")
    run = subprocess.run([sys.executable, "-m", "pydns", "explain", svc("web"), "BOGUS", "-url", url],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode == 2 and "BOGUS" in run.stderr


def test_the_cli_says_when_nothing_listens(tmp_path):
    from tests.conftest import free_port

    run = subprocess.run([sys.executable, "-m", "pydns", "explain", "x.cluster.local", "-url",
                          f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "cannot reach" in run.stderr


def test_explain_is_off_unless_the_corefile_names_it(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n whoami\n}\n")
    conn = http.client.HTTPConnection("127.0.0.1", http_port(srv), timeout=5)
    conn.request("GET", "/explain?name=x.")
    assert conn.getresponse().status == 404
    conn.close()


def test_explain_shares_the_ready_listener_and_pipelines_in_order(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n explain 127.0.0.1:0\n whoami\n}\n")
    import socket

    with socket.create_connection(("127.0.0.1", http_port(srv)), timeout=10) as s:
        s.sendall(b"GET /explain?name=a.example. HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    first, _, second = data.partition(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain")
    assert first.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json")
    assert b'"plugin": "whoami"' in first and second.endswith(b"OK")


def test_the_port_asked_about_defaults_to_the_block_naming_explain(serve):
    from tests.conftest import free_port

    first, second = free_port(), free_port()
    srv = serve(f"a.test:{first} {{\n bind 127.0.0.1\n explain 127.0.0.1:0\n whoami\n}}\n"
                f"b.test:{second} {{\n bind 127.0.0.1\n whoami\n}}\n")
    out = explain(srv, "x.b.test.")
    assert out["port"] == first and out["rcode"] == "REFUSED"
    assert out["reason"] == f"no server block on port {first} serves a zone that holds this name (zones: a.test.): REFUSED"
    status, out = get(srv, f"/explain?name=x.b.test.&port={second}")
    assert status == 200 and out["port"] == second and out["plugin"] == "whoami"
    assert out["block"] == {"keys": [f"b.test:{second}"], "zone": "b.test."}


def test_hosts_answers_and_falls_through_to_forward(serve):
    up = Upstream({("www.lan.", "A"): ["192.0.2.9"]}).start()
    try:
        srv = serve(".:0 {\n bind 127.0.0.1\n explain 127.0.0.1:0\n hosts {\n  10.9.9.9 box.lan\n  fallthrough\n }\n"
                    f" forward . {up.address[0]}:{up.address[1]}\n}}\n")
        out = explain(srv, "box.lan.")
        assert out["plugin"] == "hosts" and out["answer"][0].endswith("A 10.9.9.9")
        assert out["steps"][-1]["reason"] == "box.lan. is in the Corefile's inline entries"
        out = explain(srv, "box.lan.", "AAAA")
        assert out["answer"] == [] and out["steps"][-1]["reason"].endswith("without AAAA records: NODATA")
        out = explain(srv, "www.lan.")
        assert [(s["plugin"], s["verdict"]) for s in out["steps"]] == [("hosts", "passed on"), ("forward", "asked")]
        assert out["steps"][0]["reason"] == "not in the hosts file; `fallthrough` hands it on"
        assert out["answer"][0].endswith("A 192.0.2.9")
    finally:
        up.stop()
