"""``pydns explain`` with the kubernetes plugin reading a (fake) API server through the official
client: the reasons follow the API's state, and say when the plugin is not synced yet; and the
explain endpoint's HTTP side when a client goes away while its explanation is under way."""

from __future__ import annotations

import socket
import time

import dns.rcode
import pytest

from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer
from pydns.testing.upstream import Upstream
from tests.kube_cluster import endpoint, endpoint_slice, headless
from tests.test_explain import QUEUE_NONE_READY, dns_answer, endpoint_counts, explain, get, http_port, step_of

pytestmark = pytest.mark.timeout(60)


def namespace(name):
    return {"kind": "Namespace", "metadata": {"name": name}}


def service(name, ns, ip):
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


@pytest.fixture
def api():
    server = FakeApiServer([namespace("shop"), namespace("dev"), service("web", "shop", "10.0.0.10")]).start()
    yield server
    server.stop()


@pytest.fixture
def served(api, tmp_path):
    started = []

    def start(extra: str = "") -> ServerThread:
        kubeconfig = api.kubeconfig(str(tmp_path / f"kubeconfig{len(started)}"))
        srv = ServerThread(".:0 {\n bind 127.0.0.1\n explain 127.0.0.1:0\n"
                           f" kubernetes cluster.local {{\n  kubeconfig {kubeconfig}\n{extra} }}\n}}\n").start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def wait_for_rcode(srv: ServerThread, name: str, rcode: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        out = explain(srv, name)
        if out["rcode"] == rcode:
            return out
        assert time.monotonic() < deadline, out
        time.sleep(0.05)


def test_reasons_follow_the_api(api, served):
    srv = served()
    out = explain(srv, "api.shop.svc.cluster.local.")
    assert step_of(out, "kubernetes")["reason"] == "no such service `api` in namespace `shop`"
    api.create(service("api", "dev", "10.0.0.20"))
    deadline = time.monotonic() + 10
    while "exist in `dev`" not in step_of(out, "kubernetes")["reason"]:
        assert time.monotonic() < deadline, out
        time.sleep(0.05)
        out = explain(srv, "api.shop.svc.cluster.local.")
    assert out["rcode"] == "NXDOMAIN"
    assert srv.query("api.shop.svc.cluster.local.", "A").rcode() == dns.rcode.NXDOMAIN
    api.create(service("api", "shop", "10.0.0.21"))
    out = wait_for_rcode(srv, "api.shop.svc.cluster.local.", "NOERROR")
    assert step_of(out, "kubernetes")["reason"].startswith("ClusterIP service `shop/api` (10.0.0.21); 0 ready endpoints")


def test_an_unsynced_plugin_says_why_it_answers_servfail(api, served):
    api.outage("refuse")
    srv = served("  startup_timeout 300ms\n")
    out = explain(srv, "web.shop.svc.cluster.local.")
    assert out["rcode"] == "SERVFAIL" and out["plugin"] == "kubernetes"
    assert step_of(out, "kubernetes")["reason"].endswith(
        "the plugin has not finished its first sync with the API, so a name it does not know yet answers "
        "SERVFAIL, not NXDOMAIN or NODATA")
    api.recover()
    out = wait_for_rcode(srv, "web.shop.svc.cluster.local.", "NOERROR")
    assert [a.split()[-1] for a in out["answer"]] == ["10.0.0.10"]


def wait_for_reason(srv: ServerThread, name: str, part: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        out = explain(srv, name)
        if part in step_of(out, "kubernetes")["reason"]:
            return out
        assert time.monotonic() < deadline, out
        time.sleep(0.05)


def soa_serial(srv: ServerThread, name: str) -> int:
    """The zone's SOA serial in a NODATA answer: the time of the store's last change."""
    msg = srv.query(name, "TXT")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer, msg
    return msg.authority[0][0].serial


def queue_slice(*endpoints) -> dict:
    return endpoint_slice("queue-1", "queue", list(endpoints), ns="shop")


def test_not_ready_endpoints_are_counted_and_change_no_answer(api, served):
    queue = "queue.shop.svc.cluster.local."
    api.create(headless("queue", "shop"))
    api.create(queue_slice(*(endpoint(f"10.1.2.{i}", ready=False) for i in (2, 3, 4))))
    srv = served()
    out = wait_for_reason(srv, queue, "3 not ready")
    step = step_of(out, "kubernetes")
    assert step["reason"] == QUEUE_NONE_READY  # as from manifests (test_explain)
    assert endpoint_counts(step) == (0, 3, False)
    assert out["rcode"] == "NXDOMAIN" and dns_answer(srv, queue, "A") == ("NXDOMAIN", [])

    api.update(queue_slice(endpoint("10.1.2.1"), *(endpoint(f"10.1.2.{i}", ready=False) for i in (2, 3, 4))))
    out = wait_for_rcode(srv, queue, "NOERROR")
    assert step_of(out, "kubernetes")["reason"].startswith(
        "headless service `shop/queue`; 1 ready endpoint, 3 not ready, in 1 EndpointSlice")
    answered = dns_answer(srv, queue, "A")
    assert answered == ("NOERROR", [queue + " A 10.1.2.1"])
    serial = soa_serial(srv, queue)
    time.sleep(1.1)  # a change that reached the answers would show in the SOA serial (seconds)

    # One more endpoint that is not ready: explain counts it, and no answer changes at all.
    api.update(queue_slice(endpoint("10.1.2.1"), *(endpoint(f"10.1.2.{i}", ready=False) for i in (2, 3, 4, 5))))
    step = step_of(wait_for_reason(srv, queue, "4 not ready"), "kubernetes")
    assert (step["ready_endpoints"], step["not_ready_endpoints"]) == (1, 4)
    assert dns_answer(srv, queue, "A") == answered
    assert soa_serial(srv, queue) == serial

    # The service publishing not-ready addresses: the EndpointSlice controller then marks them ready.
    published = headless("queue", "shop")
    published["spec"]["publishNotReadyAddresses"] = True
    api.update(published)
    api.update(queue_slice(*(endpoint(f"10.1.2.{i}") for i in (1, 2, 3, 4, 5))))
    out = wait_for_reason(srv, queue, "5 ready endpoints in 1 EndpointSlice")
    step = step_of(out, "kubernetes")
    assert (step["not_ready_endpoints"], step["publish_not_ready_addresses"]) == (0, True)
    assert dns_answer(srv, queue, "A") == ("NOERROR", sorted(f"{queue} A 10.1.2.{i}" for i in (1, 2, 3, 4, 5)))


def test_a_client_that_leaves_during_an_explanation_costs_nothing(serve):
    up = Upstream({("slow.example.", "A"): ["192.0.2.1"]}, mode="slow", delay=1.0).start()
    try:
        srv = serve(f".:0 {{\n bind 127.0.0.1\n explain 127.0.0.1:0\n forward . {up.address[0]}:{up.address[1]}\n}}\n")
        port = http_port(srv)
        for _ in range(5):  # each leaves while the upstream still thinks
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /explain?name=slow.example. HTTP/1.1\r\nHost: x\r\n\r\n")
        listener = srv.instance.http[("127.0.0.1", 0)]
        status, out = get(srv, "/explain?name=slow.example.")
        assert status == 200 and out["answer"][0].endswith("A 192.0.2.1")
        assert out["steps"][-1]["reason"].startswith("upstream ")
        deadline = time.monotonic() + 5
        while listener.open:
            assert time.monotonic() < deadline, "connections left open"
            time.sleep(0.05)
    finally:
        up.stop()
