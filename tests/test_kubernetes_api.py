"""The kubernetes plugin's API source (list+watch with the official client) against FakeApiServer.

The first part drives ``ApiSource`` directly with a recording index on a real event loop; the
second asks DNS questions of a running server whose kubernetes plugin reads the fake API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import urllib.request

import dns.rcode
import dns.rdatatype
import pytest

from pydns.plugins.kubernetes.api import ApiConfigError, ApiSource
from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- objects


def namespace(name, **labels):
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def service(name, ns="default", ip="10.0.0.10", **labels):
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def endpoint_slice(name, svc, ns="default", ips=("10.1.0.1",), **labels):
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc, **labels}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def pod(name, ip, phase="Running", ns="default"):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


def small_cluster(services=3):
    return ([namespace("default"), namespace("kube-system")]
            + [service(f"svc{i}", ip=f"10.0.0.{10 + i}") for i in range(services)]
            + [endpoint_slice("svc0-abc", "svc0")])


# ---------------------------------------------------------------- a recording index on a real loop


class RecordingIndex:
    """Applies replace/upsert/delete like the real index would, and remembers every call."""

    def __init__(self):
        self.lock = threading.Lock()
        self.state: dict[str, dict[tuple[str, str], dict]] = {}
        self.calls: list[tuple[str, str, object]] = []
        self.threads: set[int] = set()

    @staticmethod
    def key(obj):
        meta = obj["metadata"]
        return (meta.get("namespace", ""), meta["name"])

    def replace(self, kind, objects):
        """A full state of a kind, in one call."""
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls.append(("replace", kind, sorted(self.key(o)[1] for o in objects)))
            self.state[kind] = {self.key(o): o for o in objects}

    def upsert(self, kind, obj):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls.append(("upsert", kind, obj["metadata"]["name"]))
            self.state.setdefault(kind, {})[self.key(obj)] = obj

    def delete(self, kind, obj):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls.append(("delete", kind, obj["metadata"]["name"]))
            self.state.setdefault(kind, {}).pop(self.key(obj), None)

    def names(self, kind):
        with self.lock:
            return sorted(name for _, name in self.state.get(kind, {}))

    def get(self, kind, ns, name):
        with self.lock:
            return self.state.get(kind, {}).get((ns, name))

    def count(self, op, kind):
        with self.lock:
            return sum(1 for c in self.calls if c[0] == op and c[1] == kind)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    loop.thread_id = None
    loop.call_soon_threadsafe(lambda: setattr(loop, "thread_id", threading.get_ident()))
    wait_for(lambda: loop.thread_id is not None)
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def api(fake_apis):
    return fake_apis


@pytest.fixture
def source(loop, tmp_path):
    """``source(api_server, **options)`` starts an ApiSource (kubeconfig unless told otherwise)."""
    started = []

    def start(server=None, index=None, **kw):
        index = index if index is not None else RecordingIndex()
        if server is not None and "endpoint" not in kw and "kubeconfig" not in kw:
            kw["kubeconfig"] = (server.kubeconfig(str(tmp_path / f"kubeconfig{len(started)}")), None)
        kw.setdefault("backoff_base", 0.05)
        kw.setdefault("backoff_cap", 0.5)
        src = ApiSource(index, **kw)
        asyncio.run_coroutine_threadsafe(src.start(), loop).result(10)
        started.append(src)
        src.recording = index
        return src

    yield start
    for src in started:
        asyncio.run_coroutine_threadsafe(src.stop(), loop).result(10)


def synced(src, timeout=10.0):
    wait_for(src.synced, timeout, "the source to sync")
    return src.recording


def query_of(server, verb, kind):
    return [r.query for r in server.requests if (verb is None or r.verb == verb) and r.kind == kind]


def starts_sync(r):
    """A request that reads a kind's whole state: a list's first page, or a streaming list."""
    return (r.verb == "list" and not r.query.get("continue")) or \
        (r.verb == "watch" and r.query.get("sendInitialEvents") == "true")


def syncs(server, kind=None):
    return sum(1 for r in server.requests if starts_sync(r) and (kind is None or r.kind == kind))


# ---------------------------------------------------------------- list


def test_streaming_list_syncs_each_kind_in_one_step_on_the_loop_thread(api, source, loop):
    server = api(small_cluster(services=7))
    index = synced(source(server, page_size=3))
    assert index.names("Service") == [f"svc{i}" for i in range(7)]
    assert index.names("Namespace") == ["default", "kube-system"]
    assert index.names("EndpointSlice") == ["svc0-abc"]
    assert server.count("list") == 0
    first = query_of(server, "watch", "Service")[0]
    assert first["sendInitialEvents"] == "true" and first["resourceVersionMatch"] == "NotOlderThan"
    assert first["allowWatchBookmarks"] == "true" and "resourceVersion" not in first
    assert [c for c in index.calls if c[1] == "Service"] == [("replace", "Service", [f"svc{i}" for i in range(7)])]
    assert index.threads == {loop.thread_id}
    # the same stream goes on as the watch
    server.create(service("later", ip="10.0.0.90"))
    wait_for(lambda: "later" in index.names("Service"), what="the event after the initial ones")
    assert len(query_of(server, "watch", "Service")) == 1


def test_without_streaming_lists_it_lists_at_resource_version_0_then_watches(api, source, loop):
    server = api(small_cluster(services=7), watch_list=False)
    index = synced(source(server, page_size=3))
    assert index.names("Service") == [f"svc{i}" for i in range(7)]
    assert index.names("EndpointSlice") == ["svc0-abc"]
    lists = query_of(server, "list", "Service")
    # served from the watch cache, which does not page: one request
    assert [(q.get("resourceVersion"), q.get("limit"), q.get("continue")) for q in lists] == [("0", "3", None)]
    assert index.count("replace", "Service") == 1 and index.count("upsert", "Service") == 0
    assert index.threads == {loop.thread_id}
    server.wait_for_watches(3)
    watches = query_of(server, "watch", "Service")
    # one refused streaming list at most, then the watch from the list's version
    assert watches[-1]["resourceVersion"] == str(server.resource_version) and "sendInitialEvents" not in watches[-1]
    assert watches[-1]["allowWatchBookmarks"] == "true"
    assert sum(1 for q in watches if q.get("sendInitialEvents")) <= 1
    # once the server has said it has no streaming lists, nobody asks again
    assert sum(1 for r in server.requests if r.query.get("sendInitialEvents")) <= 3
    relisting = time.monotonic()
    server.compact()
    server.create(service("later", ip="10.0.0.90"))
    server.drop_watches()
    wait_for(lambda: "later" in index.names("Service"), what="the relist")
    assert not [r for r in server.requests if r.at >= relisting and r.query.get("sendInitialEvents")]


def test_a_relist_that_gets_410_pages_through_a_quorum_read_and_restarts_on_an_expired_token(api, source):
    server = api(small_cluster(services=5), watch_list=False)
    server.fail_next(1, 410, kind="Service", verb="list", paged=False)  # the cached list
    server.fail_next(1, 410, kind="Service", verb="list", paged=True)  # the first continue token
    index = synced(source(server, page_size=2))
    assert index.names("Service") == [f"svc{i}" for i in range(5)]
    lists = [(q.get("resourceVersion"), q.get("limit"), bool(q.get("continue")))
             for q in query_of(server, "list", "Service")]
    assert lists == [("0", "2", False), (None, "2", False), (None, "2", True),
                     (None, "2", False), (None, "2", True), (None, "2", True)]
    assert index.count("replace", "Service") == 1


# ---------------------------------------------------------------- watch


def test_creates_updates_and_deletes_arrive_object_by_object(api, source):
    server = api(small_cluster())
    index = synced(source(server))
    server.wait_for_watches(3)
    server.create(service("new", ip="10.0.0.99"))
    wait_for(lambda: "new" in index.names("Service"), what="the new service")
    server.update(service("new", ip="10.0.0.98"))
    wait_for(lambda: index.get("Service", "default", "new")["spec"]["clusterIP"] == "10.0.0.98", what="the update")
    server.delete("Service", "default", "svc1")
    wait_for(lambda: "svc1" not in index.names("Service"), what="the deletion")
    server.create(endpoint_slice("new-xyz", "new", ips=("10.1.0.7",)))
    server.create(namespace("team-a"))
    wait_for(lambda: "new-xyz" in index.names("EndpointSlice") and "team-a" in index.names("Namespace"))
    assert index.count("replace", "Service") == 1
    assert ("upsert", "Service", "new") in index.calls and ("delete", "Service", "svc1") in index.calls
    assert syncs(server, "Service") == 1


@pytest.mark.parametrize("abrupt", [False, True], ids=["clean-end", "cut"])
def test_dropped_watch_resumes_from_last_version_without_relisting(api, source, abrupt):
    server = api(small_cluster())
    index = synced(source(server))
    server.wait_for_watches(3)
    server.create(service("before", ip="10.0.0.50"))
    wait_for(lambda: "before" in index.names("Service"))
    seen = server.resource_version
    assert server.drop_watches(abrupt=abrupt) == 3
    server.create(service("during", ip="10.0.0.51"))  # made while no watch is open
    wait_for(lambda: "during" in index.names("Service"), what="the change made while disconnected")
    server.wait_for_watches(3)
    assert syncs(server) == 3  # one sync per kind, ever
    resumed = query_of(server, "watch", "Service")[1]
    assert resumed["resourceVersion"] == str(seen)
    assert index.count("replace", "Service") == 1


def test_watch_timeout_renews_the_watch_from_where_it_was(api, source):
    server = api(small_cluster())
    index = synced(source(server, watch_timeout=0.5))  # the server ends each watch after 1 s
    server.wait_for_watches(3)
    server.create(service("renewed", ip="10.0.0.52"))
    wait_for(lambda: "renewed" in index.names("Service"))
    seen = server.resource_version
    wait_for(lambda: len(query_of(server, "watch", "Service")) >= 2, what="the watch to be renewed")
    first, second = query_of(server, "watch", "Service")[:2]
    assert first["timeoutSeconds"] == "1" and second["resourceVersion"] == str(seen)
    assert syncs(server) == 3


def test_bookmarks_move_the_resume_point(api, source):
    server = api(small_cluster())
    index = synced(source(server))
    server.wait_for_watches(3)
    for i in range(3):
        server.create(namespace(f"ns{i}"))  # versions move on; services see none of it
    wait_for(lambda: "ns2" in index.names("Namespace"))
    server.bookmark()
    time.sleep(0.2)
    server.drop_watches()
    wait_for(lambda: len(query_of(server, "watch", "Service")) == 2, what="the watch to resume")
    assert query_of(server, "watch", "Service")[1]["resourceVersion"] == str(server.resource_version)


@pytest.mark.parametrize("gone", ["event", "http"])
def test_gone_after_an_outage_relists_and_replaces_state(api, source, gone):
    server = api(small_cluster())
    index = synced(source(server))
    server.wait_for_watches(3)
    server.outage("refuse")
    server.delete("Service", "default", "svc1")
    server.delete("EndpointSlice", "default", "svc0-abc")
    server.create(service("born-offline", ip="10.0.0.77"))
    server.compact(gone=gone)
    time.sleep(0.3)
    # while the API is away the last known state stays
    assert "svc1" in index.names("Service") and "svc0-abc" in index.names("EndpointSlice")
    server.recover()
    wait_for(lambda: index.names("Service") == ["born-offline", "svc0", "svc2"], what="the relisted services")
    wait_for(lambda: index.names("EndpointSlice") == [], what="the relisted endpoint slices")
    assert index.count("replace", "Service") == 2
    assert syncs(server, "Service") == 2
    # the relist asks for state no older than what was already served
    relist = [r.query for r in server.requests if starts_sync(r) and r.kind == "Service"][1]
    assert relist["resourceVersionMatch"] == "NotOlderThan" and int(relist["resourceVersion"]) > 0


# ---------------------------------------------------------------- errors


def test_forbidden_kind_logs_one_clear_line_and_recovers_when_allowed(api, source, caplog):
    caplog.set_level(logging.INFO, logger="plugin/kubernetes")
    server = api(small_cluster())
    server.forbid("EndpointSlice")
    src = source(server)
    wait_for(lambda: syncs(server, "EndpointSlice") >= 4, what="retries of the forbidden list")
    index = src.recording
    assert index.names("Service") == ["svc0", "svc1", "svc2"]  # the other kinds are unaffected
    assert not src.synced()
    rbac = [r for r in caplog.records if "RBAC" in r.getMessage()]
    assert len(rbac) == 1, [r.getMessage() for r in rbac]
    line = rbac[0].getMessage()
    assert rbac[0].levelno == logging.ERROR
    for part in ("list", "endpointslices", '"discovery.k8s.io"', "ClusterRole", '"watch"'):
        assert part in line, line
    assert all(t.is_alive() for t in threading.enumerate() if t.name == "kubernetes-endpointslices")
    server.allow("EndpointSlice")
    synced(src)
    assert index.names("EndpointSlice") == ["svc0-abc"]


def test_server_errors_are_retried_with_growing_backoff(api, source, caplog):
    caplog.set_level(logging.INFO, logger="plugin/kubernetes")
    server = api(small_cluster(), watch_list=False)
    server.fail_next(4, 500, kind="Service", verb="list")
    index = synced(source(server, backoff_base=0.1, backoff_cap=5.0))
    assert index.names("Service") == ["svc0", "svc1", "svc2"]
    times = [r.at for r in server.requests if r.verb == "list" and r.kind == "Service"]
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.05 and gaps[-1] >= 0.4, gaps  # 4th retry waits at least half of 0.8s
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "services" in r.getMessage()]
    assert len(warnings) == 1 and "500" in warnings[0].getMessage()


def test_watch_error_event_resumes_without_relisting(api, source):
    server = api(small_cluster())
    index = synced(source(server))
    server.wait_for_watches(3)
    server.fail_next(1, 500, kind="Service", verb="watch")
    server.drop_watches()
    server.create(service("after-error", ip="10.0.0.60"))
    wait_for(lambda: "after-error" in index.names("Service"))
    assert syncs(server, "Service") == 1


def test_requests_honour_qps_and_burst(api, source):
    server = api(small_cluster())
    server.fail_next(100000, 500)  # every request fails, and the retry delay is next to nothing
    qps, burst = 5.0, 2
    src = source(server, qps=qps, burst=burst, backoff_base=0.001, backoff_cap=0.002)
    time.sleep(1.6)
    times = [r.at for r in server.requests]
    span = times[-1] - times[0]
    # a token bucket allows the burst at once, then qps a second
    assert 3 <= len(times) <= burst + qps * span + 1, (len(times), span)
    assert not src.synced()


def test_the_further_pages_of_a_list_take_no_tokens(api, source):
    server = api(small_cluster(services=9), watch_list=False)
    server.fail_next(1, 410, kind="Service", verb="list", paged=False)  # so the service list is read in pages
    # one token every 4 s: the first requests (a list per kind, the service list again, two watches)
    # use up the burst; the four further pages of the service list would need four more
    index = synced(source(server, qps=0.25, burst=6, page_size=2, streaming=False), timeout=3.0)
    assert index.names("Service") == [f"svc{i}" for i in range(9)]
    pages = [r.at for r in server.requests if r.verb == "list" and r.kind == "Service"][1:]
    assert len(pages) == 5 and pages[-1] - pages[0] < 2.0


def test_too_many_requests_waits_as_told(api, source):
    server = api(small_cluster())
    server.fail_next(1, 429, kind="Service")  # with Retry-After: 1
    index = synced(source(server, backoff_base=0.01, backoff_cap=5.0))
    times = [r.at for r in server.requests if starts_sync(r) and r.kind == "Service"]
    assert len(times) == 2 and times[1] - times[0] >= 1.0
    assert index.names("Service") == ["svc0", "svc1", "svc2"]


def test_pause_holds_sync_until_resumed(api, source):
    server = api(small_cluster())
    server.pause()
    src = source(server)
    time.sleep(0.3)
    assert not src.synced()
    server.resume()
    index = synced(src)
    server.wait_for_watches(3)
    server.pause()
    server.create(service("while-paused", ip="10.0.0.61"))
    time.sleep(0.2)
    assert "while-paused" not in index.names("Service")
    server.resume()
    wait_for(lambda: "while-paused" in index.names("Service"))


def test_outage_with_503_keeps_data_and_catches_up(api, source):
    server = api(small_cluster())
    index = synced(source(server))
    server.wait_for_watches(3)
    server.outage("503")
    server.create(service("later", ip="10.0.0.62"))
    time.sleep(0.3)
    assert index.names("Service") == ["svc0", "svc1", "svc2"]
    server.recover()
    wait_for(lambda: "later" in index.names("Service"))
    assert syncs(server, "Service") == 1  # history was kept: resumed, not relisted


# ---------------------------------------------------------------- selectors


def test_label_selectors_go_to_the_server_and_follow_label_changes(api, source):
    objects = [namespace("default", team="dns"), namespace("other", team="web"),
               service("web", app="web", tier="front"), service("db", ip="10.0.0.2", app="db"),
               service("cache", ip="10.0.0.3", app="web", tier="cache"), service("misc", ip="10.0.0.4"),
               endpoint_slice("web-1", "web", app="web"), endpoint_slice("misc-1", "misc")]
    server = api(objects)
    index = synced(source(server, labels="app in (web, db),tier!=cache", namespace_labels="team=dns"))
    assert index.names("Service") == ["db", "web"]
    assert index.names("EndpointSlice") == ["web-1"]
    assert index.names("Namespace") == ["default"]
    assert query_of(server, None, "Service")[0]["labelSelector"] == "app in (web, db),tier!=cache"
    assert query_of(server, None, "Namespace")[0]["labelSelector"] == "team=dns"
    server.wait_for_watches(3)
    server.update(service("db", ip="10.0.0.2", app="db", tier="cache"))  # stops matching
    server.update(service("misc", ip="10.0.0.4", app="web"))  # starts matching
    wait_for(lambda: index.names("Service") == ["misc", "web"], what="the selector transitions")
    assert ("delete", "Service", "db") in index.calls


def test_pods_are_watched_without_finished_ones(api, source):
    server = api(small_cluster() + [pod("runner", "10.2.0.1"), pod("done", "10.2.0.2", phase="Succeeded")])
    index = synced(source(server, kinds=("Namespace", "Service", "EndpointSlice", "Pod")))
    assert index.names("Pod") == ["runner"]
    assert "status.phase!=Succeeded" in query_of(server, None, "Pod")[0]["fieldSelector"]
    server.wait_for_watches(4)
    server.update(pod("runner", "10.2.0.1", phase="Failed"))
    wait_for(lambda: index.names("Pod") == [], what="the failed pod to go")


# ---------------------------------------------------------------- connecting


def test_endpoint_with_client_certificate(api, source, caplog):
    server = api(small_cluster(), tls=True)
    index = synced(source(server, endpoint=server.url, tls=server.tls_files()))
    assert index.names("Service") == ["svc0", "svc1", "svc2"]
    # without a client certificate the TLS handshake is refused: retried, never synced
    caplog.set_level(logging.WARNING, logger="plugin/kubernetes")
    cert, key, ca = server.tls_files()
    bare = source(server, endpoint=server.url, tls=(None, None, ca))
    wait_for(lambda: any("failed" in r.getMessage() for r in caplog.records), what="a logged failure")
    assert not bare.synced()


def test_kubeconfig_token_and_named_context(api, source, tmp_path, caplog):
    server = api(small_cluster(), token="s3cret")
    path = server.kubeconfig(str(tmp_path / "config"), context="staging")
    index = synced(source(server, kubeconfig=(path, "staging")))
    assert index.names("Namespace") == ["default", "kube-system"]
    caplog.set_level(logging.WARNING, logger="plugin/kubernetes")
    anonymous = source(server, endpoint=server.url)
    wait_for(lambda: any("401" in r.getMessage() for r in caplog.records), what="the 401 to be logged")
    assert not anonymous.synced()


def test_bad_configuration_fails_at_construction(tmp_path):
    with pytest.raises(ApiConfigError, match="kubeconfig"):
        ApiSource(RecordingIndex(), kubeconfig=(str(tmp_path / "missing"), None))
    server = FakeApiServer()
    path = server.kubeconfig(str(tmp_path / "config"))
    with pytest.raises(ApiConfigError, match="nope"):
        ApiSource(RecordingIndex(), kubeconfig=(path, "nope"))
    env = {k: os.environ.pop(k) for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT") if k in os.environ}
    try:
        with pytest.raises(ApiConfigError, match="in-cluster"):
            ApiSource(RecordingIndex())
    finally:
        os.environ.update(env)


def test_stop_ends_every_thread_and_applies_nothing_after(api, source, loop):
    server = api(small_cluster())
    src = source(server)
    index = synced(src)
    server.wait_for_watches(3)
    asyncio.run_coroutine_threadsafe(src.stop(), loop).result(10)
    assert not [t for t in threading.enumerate() if t.name.startswith("kubernetes-") and t.is_alive()]
    wait_for(lambda: server.open_watches() == 0, what="the watches to close")
    calls = len(index.calls)
    server.create(service("too-late", ip="10.0.0.70"))
    time.sleep(0.2)
    assert len(index.calls) == calls


# ---------------------------------------------------------------- the fake server's own protocol


def test_fake_watch_from_a_compacted_version_gets_a_410_error_event(api):
    server = api(small_cluster())
    old = server.resource_version
    server.create(service("x", ip="10.0.0.80"))
    server.compact()
    url = f"{server.url}/api/v1/services?watch=true&resourceVersion={old}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        event = json.loads(resp.readline())
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
    with urllib.request.urlopen(f"{server.url}/api/v1/services", timeout=5) as resp:
        listed = json.loads(resp.read())
    assert listed["kind"] == "ServiceList" and int(listed["metadata"]["resourceVersion"]) == server.resource_version
    assert "kind" not in listed["items"][0]


# ---------------------------------------------------------------- through DNS: the kubernetes plugin reading the fake API

ZONE = "cluster.local"


def corefile(kubeconfig: str, extra: str = "") -> str:
    return (".:0 {\n bind 127.0.0.1\n"
            f" kubernetes {ZONE} in-addr.arpa ip6.arpa {{\n  kubeconfig {kubeconfig}\n{extra} }}\n}}\n")


@pytest.fixture
def dns_server(tmp_path):
    """``dns_server(api_server, extra_options)``: pydns with the kubernetes plugin reading that server."""
    started = []

    def start(server, extra="", **kw):
        path = server.kubeconfig(str(tmp_path / f"dns-kubeconfig{len(started)}"))
        srv = ServerThread(corefile(path, extra), **kw).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def addresses(srv, name, rdtype="A", tcp=False):
    """(rcode, sorted addresses) of a question asked of the server."""
    msg = srv.query(name, rdtype, tcp=tcp)
    found = sorted(rr.to_text() for rrset in msg.answer for rr in rrset
                   if rrset.rdtype == dns.rdatatype.from_text(rdtype))
    return msg.rcode(), found


def wait_for_answer(srv, name, expected, rdtype="A", timeout=15.0):
    wait_for(lambda: addresses(srv, name, rdtype) == expected, timeout, f"{name} {rdtype} -> {expected}")


def svc_name(name, ns="default"):
    return f"{name}.{ns}.svc.{ZONE}"


def test_dns_follows_services_created_changed_and_deleted(api, dns_server):
    server = api(small_cluster())
    srv = dns_server(server)
    assert addresses(srv, svc_name("svc1")) == (dns.rcode.NOERROR, ["10.0.0.11"])
    server.create(service("fresh", ip="10.0.0.42"))
    wait_for_answer(srv, svc_name("fresh"), (dns.rcode.NOERROR, ["10.0.0.42"]))
    assert addresses(srv, svc_name("fresh"), tcp=True) == (dns.rcode.NOERROR, ["10.0.0.42"])
    server.update(service("fresh", ip="10.0.0.43"))
    wait_for_answer(srv, svc_name("fresh"), (dns.rcode.NOERROR, ["10.0.0.43"]))
    server.delete("Service", "default", "fresh")
    wait_for_answer(srv, svc_name("fresh"), (dns.rcode.NXDOMAIN, []))
    assert syncs(server, "Service") == 1  # every change came through the watch


def test_dns_servfail_while_the_api_is_down_at_startup_then_answers(api, dns_server):
    server = api(small_cluster())
    server.outage("refuse")
    srv = dns_server(server, "  startup_timeout 1s\n")
    assert srv.query(svc_name("svc0"), "A").rcode() == dns.rcode.SERVFAIL
    server.recover()
    wait_for_answer(srv, svc_name("svc0"), (dns.rcode.NOERROR, ["10.0.0.10"]))


def test_dns_keeps_answering_through_dropped_watches(api, dns_server):
    server = api(small_cluster())
    srv = dns_server(server)
    server.wait_for_watches(3)
    server.drop_watches(abrupt=True)
    server.create(service("after-drop", ip="10.0.0.44"))
    assert addresses(srv, svc_name("svc2")) == (dns.rcode.NOERROR, ["10.0.0.12"])
    wait_for_answer(srv, svc_name("after-drop"), (dns.rcode.NOERROR, ["10.0.0.44"]))
    assert syncs(server, "Service") == 1


def test_dns_gone_after_an_outage_replaces_what_changed_meanwhile(api, dns_server):
    server = api(small_cluster())
    srv = dns_server(server)
    server.wait_for_watches(3)
    server.outage("refuse")
    server.delete("Service", "default", "svc1")
    server.create(service("born-offline", ip="10.0.0.45"))
    server.compact()
    # the last known records keep being served while the API is away
    assert addresses(srv, svc_name("svc1")) == (dns.rcode.NOERROR, ["10.0.0.11"])
    server.recover()
    wait_for_answer(srv, svc_name("born-offline"), (dns.rcode.NOERROR, ["10.0.0.45"]))
    wait_for_answer(srv, svc_name("svc1"), (dns.rcode.NXDOMAIN, []))
    assert syncs(server, "Service") == 2


def test_dns_forbidden_endpointslices_servfail_and_log_until_allowed(api, dns_server, caplog):
    caplog.set_level(logging.INFO, logger="plugin/kubernetes")
    server = api(small_cluster())
    server.forbid("EndpointSlice")
    srv = dns_server(server, "  startup_timeout 1s\n")
    # the services are known: their cluster IPs answer; a name that may only be unknown yet does not
    assert addresses(srv, svc_name("svc0")) == (dns.rcode.NOERROR, ["10.0.0.10"])
    assert srv.query(svc_name("nope"), "A").rcode() == dns.rcode.SERVFAIL
    rbac = [r.getMessage() for r in caplog.records if "RBAC" in r.getMessage()]
    assert len(rbac) == 1 and "endpointslices" in rbac[0]
    server.allow("EndpointSlice")
    wait_for_answer(srv, svc_name("nope"), (dns.rcode.NXDOMAIN, []))


def test_dns_headless_endpoints_follow_endpointslice_events(api, dns_server):
    headless = service("db", ip="None")
    headless["spec"].update(clusterIP="None", clusterIPs=["None"])
    server = api(small_cluster() + [headless, endpoint_slice("db-1", "db", ips=("10.1.0.5", "10.1.0.6"))])
    srv = dns_server(server)
    assert addresses(srv, svc_name("db")) == (dns.rcode.NOERROR, ["10.1.0.5", "10.1.0.6"])
    server.update(endpoint_slice("db-1", "db", ips=("10.1.0.6", "10.1.0.7")))
    wait_for_answer(srv, svc_name("db"), (dns.rcode.NOERROR, ["10.1.0.6", "10.1.0.7"]))
    server.create(endpoint_slice("db-2", "db", ips=("10.1.0.8",)))
    wait_for_answer(srv, svc_name("db"), (dns.rcode.NOERROR, ["10.1.0.6", "10.1.0.7", "10.1.0.8"]))
    server.delete("EndpointSlice", "default", "db-1")
    wait_for_answer(srv, svc_name("db"), (dns.rcode.NOERROR, ["10.1.0.8"]))


def test_dns_through_an_endpoint_with_client_certificates(api):
    server = api(small_cluster(), tls=True)
    cert, key, ca = server.tls_files()
    text = (".:0 {\n bind 127.0.0.1\n"
            f" kubernetes {ZONE} {{\n  endpoint {server.url}\n  tls {cert} {key} {ca}\n }}\n}}\n")
    with ServerThread(text) as srv:
        assert addresses(srv, svc_name("svc0"), tcp=True) == (dns.rcode.NOERROR, ["10.0.0.10"])
        server.create(service("over-tls", ip="10.0.0.46"))
        wait_for_answer(srv, svc_name("over-tls"), (dns.rcode.NOERROR, ["10.0.0.46"]))
