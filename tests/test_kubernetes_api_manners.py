"""How the kubernetes plugin treats an API server that misbehaves, over real HTTP.

Backoff through an outage, Retry-After, a blackholed watch, relists that queries must see
whole, start-up before the first sync, in-flight caps, and the REST client metrics.  The
bounds (backoff steps, the bookmark interval) are lowered through ApiSource's options or
the module's constants so that minutes of real behaviour take seconds here.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import dns.rcode
import pytest

from pydns import metrics
from pydns.plugins.kubernetes import api as api_module
from pydns.plugins.kubernetes.objects import NOT_READY_COUNT
from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer
from tests.conftest import free_port
from tests.test_kubernetes_api import (ZONE, addresses, api, dns_server, endpoint_slice, loop, namespace,  # noqa: F401
                                       query_of, service, small_cluster, source, svc_name, synced, syncs, wait_for,
                                       wait_for_answer)
from tests.test_kubernetes_records import ready_status

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- backoff


def clusters(times, within=0.12):
    """Start times of the bursts in ``times`` (attempts closer than ``within`` are one burst)."""
    starts, sizes = [], []
    for t in times:
        if starts and t - last < within:
            sizes[-1] += 1
        else:
            starts.append(t)
            sizes.append(1)
        last = t
    return starts, sizes


def outage_bursts(server, seconds):
    """Reset every connection for ``seconds``; (start, burst start times, burst sizes)."""
    began = time.monotonic()
    server.outage("reset")
    time.sleep(seconds)
    attempts = [r.at for r in server.requests if r.verb == "connect" and r.at >= began]
    server.recover()
    return (began, *clusters(attempts))


def assert_backoff(began, starts, base, cap, first_step):
    """Each wait is drawn from [step, 2 x step), the step doubling from ``first_step`` up to ``cap``."""
    gaps = [b - a for a, b in zip([began, *starts], starts)]
    steps = [min(cap, first_step * 2 ** i) for i in range(len(gaps))]
    for gap, step in zip(gaps, steps):
        assert step * 0.95 <= gap <= 2 * step + 0.3, (gaps, step)
    return [gap / step for gap, step in zip(gaps, steps)]


def test_an_outage_is_retried_with_shared_exponential_backoff_that_resets_only_after_health(api, source):
    base, cap, reset = 0.25, 2.0, 7.0
    server = api(small_cluster())
    synced(source(server, backoff_base=base, backoff_cap=cap, backoff_reset=reset))
    server.wait_for_watches(3)

    # The API goes away (every connection reset): the three kinds retry together, once per
    # step, the steps doubling up to the cap.
    began, starts, sizes = outage_bursts(server, 4.5)
    assert len(starts) >= 3, starts
    ratios = assert_backoff(began, starts, base, cap, base)
    assert len({round(r, 2) for r in ratios}) > 1, ratios  # jitter: not the same fraction of each step
    assert all(size <= 2 * 3 for size in sizes), sizes  # one request per kind (and urllib3's one reconnect)
    server.wait_for_watches(3, timeout=15)
    assert syncs(server) == 3  # history was kept: the watches resumed, nothing was listed again

    # Back for less than the reset time: a new outage goes on from where the backoff was.
    began, starts, _ = outage_bursts(server, 2 * cap + 0.5)
    assert starts and starts[0] - began >= 2 * base, (began, starts)
    server.wait_for_watches(3, timeout=15)

    # Healthy for longer than the reset time: the backoff starts again from its first step.
    time.sleep(reset + 0.5)
    began, starts, _ = outage_bursts(server, 1.0)
    assert starts, "no attempt within a second"
    assert_backoff(began, starts[:2], base, cap, base)
    server.wait_for_watches(3, timeout=15)


def test_too_many_requests_with_retry_after_holds_back_every_kind(api, source):
    server = api(small_cluster())
    synced(source(server, backoff_base=0.02, backoff_cap=0.1))
    server.wait_for_watches(3)
    server.fail_next(3, 429, verb="watch", retry_after=1.5)
    dropped = time.monotonic()
    server.drop_watches()
    kinds = ("Namespace", "Service", "EndpointSlice")

    def watches(kind):
        return [r.at for r in server.requests if r.kind == kind and r.verb == "watch" and r.at >= dropped]

    wait_for(lambda: all(len(watches(kind)) >= 2 for kind in kinds), what="every kind to watch again")
    for kind in kinds:
        times = watches(kind)
        assert len(times) == 2, (kind, times)  # the 429, then one retry
        assert times[1] - times[0] >= 1.45, (kind, times)


# ---------------------------------------------------------------- a watch that goes silent


def test_a_blackholed_watch_is_reopened_and_a_change_made_meanwhile_is_served(api, dns_server, monkeypatch,
                                                                             caplog):
    caplog.set_level(logging.WARNING, logger="plugin/kubernetes")
    interval = 0.4  # bookmarks every 0.4 s: a watch silent for 1 s is dead
    monkeypatch.setattr(api_module, "BOOKMARK_INTERVAL", interval)
    monkeypatch.setattr(api_module, "BACKOFF_BASE", 0.1)
    server = api(small_cluster(), bookmark_interval=interval)
    srv = dns_server(server)
    server.wait_for_watches(3)
    version = server.resource_version
    assert server.blackhole("Service") == 1
    changed = time.monotonic()
    server.create(service("meanwhile", ip="10.0.0.88"))
    wait_for_answer(srv, svc_name("meanwhile"), (dns.rcode.NOERROR, ["10.0.0.88"]), timeout=10)
    took = time.monotonic() - changed
    bound = api_module.SILENCE_FACTOR * interval
    assert bound * 0.9 <= took <= bound + 0.2 + 1.0, took  # the silence bound, then one short backoff step
    watches = query_of(server, "watch", "Service")
    assert watches[-1]["resourceVersion"] == str(version)  # reopened from where it was, not relisted
    assert syncs(server) == 3
    # the watches that kept receiving bookmarks were never taken for dead
    assert len(query_of(server, "watch", "Namespace")) == 1
    said = [r.getMessage() for r in caplog.records if "no event and no bookmark" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("services:") and f"watch from resourceVersion {version}" in said[0]


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2) to read the kernel's socket timers")
def test_connections_to_the_api_server_have_tcp_keepalive(api, source):
    server = api(small_cluster())
    synced(source(server))
    server.wait_for_watches(3)
    out = subprocess.run(["ss", "-tnoH", "state", "established", "dst", f"127.0.0.1:{server.port}"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) >= 3, out  # one per watch at least
    timers = [re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:([\d.]+)sec)?", line) for line in out]
    assert all(timers), out
    # client-go's 30 s before the first probe (the kernel's own default is two hours)
    assert all(int(t.group(1) or 0) * 60 + float(t.group(2) or 0) <= 30 for t in timers), out


# ---------------------------------------------------------------- relists are atomic


def many(prefix, n, octet):
    return [service(f"{prefix}{i}", ip=f"10.{octet}.{i // 250}.{i % 250 + 1}") for i in range(n)]


def observe(srv, names, stop):
    """Ask for ``names`` in turn until ``stop``; each observation is (name, rcode)."""
    seen = []
    while not stop.is_set():
        for name in names:
            seen.append((name, srv.query(svc_name(name), "A").rcode()))
    return seen


@pytest.mark.parametrize("mode", ["streaming", "list"])
def test_queries_during_a_relist_never_see_old_and_new_state_mixed(api, dns_server, mode):
    # list mode: more services than one page, read from etcd after the cached relist is 410
    n = 50 if mode == "streaming" else 600
    server = api([namespace("default"), *many("old", n, 1)], watch_list=(mode == "streaming"))
    srv = dns_server(server)
    server.wait_for_watches(3)
    assert addresses(srv, svc_name("old0"))[0] == dns.rcode.NOERROR

    # While the API is away every old service goes and new ones come; history is lost (410).
    server.outage("refuse")
    for i in range(n):
        server.delete("Service", "default", f"old{i}")
    for obj in many("new", n, 2):
        server.create(obj)
    server.compact()
    if mode == "streaming":
        server.stall("Service", "watch", after=n // 2)  # half of the initial events, then nothing
    else:
        server.fail_next(1, 410, kind="Service", verb="list", paged=False)
        server.stall("Service", "list", paged=True)  # the first page, then nothing
    relisting = time.monotonic()
    server.recover()
    wait_for(lambda: any(r.kind == "Service" and r.at >= relisting and (r.query.get("continue") or
                                                                        r.query.get("sendInitialEvents"))
                         for r in server.requests), what="the relist to be under way")
    stop = threading.Event()
    names = ["old0", f"new{n - 1}", f"old{n - 1}", "new0"]
    result: list = []
    querier = threading.Thread(target=lambda: result.extend(observe(srv, names, stop)))
    querier.start()
    try:
        time.sleep(1.0)  # the relist is half read all this time
        assert addresses(srv, svc_name("new0"))[0] == dns.rcode.NXDOMAIN
        server.unstall()
        wait_for_answer(srv, svc_name("new0"), (dns.rcode.NOERROR, ["10.2.0.1"]))
        time.sleep(0.3)
    finally:
        stop.set()
        querier.join(10)
    # Each observation says which state it saw; the states never interleave.
    states = ["old" if (name.startswith("old")) == (rcode == dns.rcode.NOERROR) else "new" for name, rcode in result]
    assert set(rcode for _, rcode in result) <= {dns.rcode.NOERROR, dns.rcode.NXDOMAIN}
    switch = states.index("new")
    assert states[:switch] == ["old"] * switch and states[switch:] == ["new"] * (len(states) - switch), states
    assert switch > 4 and len(states) - switch > 4


# ---------------------------------------------------------------- start-up


@pytest.mark.parametrize("watch_list", [True, False], ids=["streaming", "list"])
def test_startup_answers_what_is_known_and_servfails_only_what_may_be_unknown(api, tmp_path, watch_list):
    headless = service("db", ip="None")
    headless["spec"].update(clusterIP="None", clusterIPs=["None"])
    server = api(small_cluster() + [headless, endpoint_slice("db-1", "db", ips=("10.1.0.5",))], watch_list=watch_list)
    server.stall("EndpointSlice")  # services and namespaces arrive; endpoint slices do not
    path = server.kubeconfig(str(tmp_path / "kubeconfig"))
    text = (".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n"
            f" kubernetes {ZONE} in-addr.arpa {{\n  kubeconfig {path}\n  startup_timeout 1s\n }}\n}}\n")
    with ServerThread(text) as srv:
        assert addresses(srv, svc_name("svc1")) == (dns.rcode.NOERROR, ["10.0.0.11"])  # a known ClusterIP
        assert addresses(srv, svc_name("nope"))[0] == dns.rcode.SERVFAIL  # may only be unknown yet
        assert addresses(srv, svc_name("db"))[0] == dns.rcode.SERVFAIL  # its endpoints are not known yet
        assert addresses(srv, svc_name("svc1"), "AAAA")[0] == dns.rcode.SERVFAIL  # NODATA, until synced
        assert addresses(srv, "11.0.0.10.in-addr.arpa", "PTR")[0] == dns.rcode.NOERROR
        assert ready_status(srv) == 503
        server.unstall()
        wait_for_answer(srv, svc_name("nope"), (dns.rcode.NXDOMAIN, []))
        assert addresses(srv, svc_name("db")) == (dns.rcode.NOERROR, ["10.1.0.5"])
        assert addresses(srv, svc_name("svc1"), "AAAA") == (dns.rcode.NOERROR, [])
        assert ready_status(srv) == 200


# ---------------------------------------------------------------- in-flight cap and metrics


@pytest.mark.parametrize("cap,expected", [(1, 1), (0, 3)])
def test_apiserver_max_inflight_caps_requests_waiting_for_an_answer(api, source, cap, expected):
    server = api(small_cluster())
    server.stall()  # every request hangs before its answer
    src = source(server, max_inflight=cap)
    wait_for(lambda: len(server.requests) >= expected, what="the first requests")
    time.sleep(0.5)
    assert len(server.requests) == expected
    server.unstall()
    synced(src)
    server.wait_for_watches(3)  # an open watch holds no slot: all three stream at once


def metric_samples(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    return body


def test_rest_client_metrics_count_requests_by_code_method_and_host(api, tmp_path):
    server = api(small_cluster())
    server.forbid("EndpointSlice")
    metrics_port = free_port()
    path = server.kubeconfig(str(tmp_path / "kubeconfig"))
    text = (f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n"
            f" kubernetes {ZONE} {{\n  kubeconfig {path}\n  startup_timeout 300ms\n"
            f"  apiserver_max_inflight 2\n }}\n}}\n")
    host = f"127.0.0.1:{server.port}"
    body = ""

    def value(name, **labels):
        pattern = name + r"\{" + ",".join(f'{k}="{re.escape(v)}"' for k, v in sorted(labels.items())) + r"\} (\S+)"
        found = re.search(pattern, body)
        return float(found.group(1)) if found else 0.0

    def observed() -> bool:
        # The fake counts a request when it arrives; the client observes it once the answer is in.
        nonlocal body
        body = metric_samples(metrics_port)
        return value("coredns_kubernetes_rest_client_request_duration_seconds_count", host=host, verb="GET") >= 4

    with ServerThread(text):
        wait_for(lambda: server.count(kind="EndpointSlice") >= 2, what="the forbidden kind to be retried")
        wait_for(observed, what="the requests to be observed by the client")

    assert value("coredns_kubernetes_rest_client_requests_total", code="200", host=host, method="GET") >= 2
    assert value("coredns_kubernetes_rest_client_requests_total", code="403", host=host, method="GET") >= 2
    assert value("coredns_kubernetes_rest_client_request_duration_seconds_count", host=host, verb="GET") >= 4
    assert value("coredns_kubernetes_rest_client_rate_limiter_duration_seconds_count", host=host, verb="GET") >= 4
    assert 'le="2.5"' in body  # prometheus's default buckets, as CoreDNS's


def test_rest_client_metrics_count_requests_that_got_no_answer(api, source):
    server = api(small_cluster())
    server.outage("refuse")

    def errors():
        sample = metrics.registry.get_sample_value("coredns_kubernetes_rest_client_requests_total",
                                                   {"code": "<error>", "method": "GET",
                                                    "host": f"127.0.0.1:{server.port}"})
        return sample or 0.0

    assert errors() == 0.0
    source(server, backoff_base=0.02, backoff_cap=0.1)
    wait_for(lambda: errors() >= 3, what="failed requests to be counted")


# ---------------------------------------------------------------- what is kept of an object


def test_objects_are_slimmed_before_they_are_kept(api, source):
    svc = service("heavy", ip="10.0.0.30")
    svc["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    svc["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "me"}
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "x"}], "hostname": "p1"},
           "status": {"phase": "Running", "podIP": "10.2.0.1", "podIPs": [{"ip": "10.2.0.1"}],
                      "conditions": [{"type": "Ready"}]}}
    server = api(small_cluster() + [svc, pod])
    index = synced(source(server, kinds=("Namespace", "Service", "EndpointSlice", "Pod")))
    kept = index.get("Service", "default", "heavy")
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["annotations"] == {"keep": "me"}
    assert kept["spec"]["clusterIP"] == "10.0.0.30"
    assert index.get("Pod", "default", "p") == {
        "metadata": index.get("Pod", "default", "p")["metadata"], "spec": {"hostname": "p1"},
        "status": {"phase": "Running", "podIP": "10.2.0.1", "podIPs": [{"ip": "10.2.0.1"}]}}


# ---------------------------------------------------------------- the fake server's own protocol


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, (json.loads(resp.readline()) if "watch=true" in url else json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_fake_serves_resource_version_semantics_and_streaming_lists_as_kube_apiserver():
    with FakeApiServer(small_cluster(services=5)) as server, FakeApiServer(small_cluster(), watch_list=False) as old:
        base = f"{server.url}/api/v1/services"
        code, body = get_json(f"{base}?limit=2&resourceVersion=0")
        assert code == 200 and len(body["items"]) == 5 and "continue" not in body["metadata"]  # the cache
        code, body = get_json(f"{base}?limit=2")
        assert code == 200 and len(body["items"]) == 2 and body["metadata"]["continue"]  # etcd pages
        old_version = server.resource_version
        server.create(service("x", ip="10.0.0.99"))
        server.compact()
        code, body = get_json(f"{base}?limit=2&resourceVersion={old_version}")
        assert code == 410 and body["reason"] == "Expired"  # rv with limit and no match: Exact
        code, body = get_json(f"{base}?limit=2&resourceVersion={old_version}&resourceVersionMatch=NotOlderThan")
        assert code == 200 and len(body["items"]) == 6
        code, body = get_json(f"{base}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
        assert code == 422 and body["reason"] == "Invalid"  # bookmarks are required
        code, event = get_json(f"{base}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                               "&allowWatchBookmarks=true")
        assert code == 200 and event["type"] == "ADDED"
        code, body = get_json(f"{old.url}/api/v1/services?watch=true&sendInitialEvents=true"
                              "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        assert code == 422 and "WatchList" in body["message"]


def test_endpoint_slices_keep_only_ready_endpoints_and_what_names_them(api, source):
    raw = endpoint_slice("web-1", "web", ips=("10.1.0.1", "10.1.0.2"))
    raw["endpoints"][0].update(hostname="a", nodeName="node-1", zone="z1",
                               targetRef={"kind": "Pod", "name": "web-a", "namespace": "default", "uid": "u"},
                               conditions={"ready": True, "serving": True, "terminating": False})
    raw["endpoints"][1]["conditions"] = {"ready": False}
    server = api([namespace("default"), service("web"), raw])
    index = synced(source(server))
    kept = index.get("EndpointSlice", "default", "web-1")
    # the zone names it too: the ``zonal`` option's names
    assert kept["endpoints"] == [{"addresses": ["10.1.0.1"], "hostname": "a", "zone": "z1",
                                  "targetRef": {"name": "web-a"}}]
    assert kept["addressType"] == "IPv4" and kept["ports"] == raw["ports"]
    assert kept[NOT_READY_COUNT] == 1  # of the endpoints not served, only their count
    assert kept["metadata"]["labels"] == {"kubernetes.io/service-name": "web"}


class _Pieces:
    """A response body that arrives in pieces of ``size`` bytes."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = data, size

    def stream(self, _amt):
        for i in range(0, len(self.data), self.size):
            yield self.data[i:i + self.size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100000])
def test_a_list_body_is_read_item_by_item_whatever_the_pieces_it_arrives_in(size):
    from pydns.plugins.kubernetes.responses import ListBody

    items = [{"metadata": {"name": f"s{i}", "annotations": {"note": "ünï ☃"}}, "n": 12345 + i, "f": [1.5, None, True]}
             for i in range(5)]
    doc = {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "42", "continue": "abc"},
           "items": items}
    body = ListBody(_Pieces(json.dumps(doc, ensure_ascii=False, indent=1).encode(), size))
    assert list(body.items()) == items
    body.finish()
    assert body.fields == {"kind": "ServiceList", "apiVersion": "v1",
                           "metadata": {"resourceVersion": "42", "continue": "abc"}}
    with pytest.raises(ValueError):
        broken = ListBody(_Pieces(b'{"items": [{"a": 1}, {"b": ', size))
        list(broken.items())
