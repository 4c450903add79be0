"""Warm start (``snapshot PATH [INTERVAL]``): pydns answers from its snapshot file at once, with
the API down, and takes the API's state once it is back; a bad snapshot is never served.

Everything over real sockets: DNS over UDP, /ready and /metrics over HTTP, the kubernetes
plugin reading the fake API server through the official client."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from pydns.corefile import CorefileError, parse
from pydns.plugins.kubernetes import api as api_module
from pydns.plugins.kubernetes.snapshot import MAX_BYTES, SCHEMA
from pydns.server import Instance, build
from pydns.testing.fakeapi import FakeApiServer
from tests.conftest import free_port
from tests.kube_api_dns import answer, http_get, kube_server, metric, setup_error, wait_for
from tests.kube_cluster import cluster, endpoint, endpoint_slice, headless, service
from tests.test_explain import endpoint_counts, explain, step_of

pytestmark = pytest.mark.timeout(90)

SVC1 = "svc1.testns.svc.cluster.local"
FRESH = "fresh.testns.svc.cluster.local"
GAUGE = "pydns_kubernetes_snapshot_serving"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """An API that comes back is noticed within a fraction of a second."""
    monkeypatch.setattr(api_module, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(api_module, "BACKOFF_CAP", 0.3)


@pytest.fixture
def api():
    server = FakeApiServer(cluster()).start()
    yield server
    server.stop()


def snapshot_options(path, interval="1h", more=""):
    return f"  snapshot {path} {interval}\n  startup_timeout 1s\n{more}"


def plugins(ready, prom):
    return f" ready 127.0.0.1:{ready}\n prometheus 127.0.0.1:{prom}\n"


def make_snapshot(api, tmp_path, path) -> bytes:
    """Run pydns once against the live API so that it writes its snapshot; the file's bytes."""
    srv = kube_server(api, tmp_path, snapshot_options(path))
    try:
        assert answer(srv, SVC1) == ("NOERROR", ["10.0.0.1"])
        wait_for(path.exists, what="the first snapshot")
    finally:
        srv.stop()
    return path.read_bytes()


def test_warm_start_serves_the_snapshot_while_the_api_is_down_then_the_apis_state(api, tmp_path):
    path = tmp_path / "dns.snapshot"
    ready, prom = free_port(), free_port()
    srv = kube_server(api, tmp_path, snapshot_options(path), plugins=plugins(ready, prom))
    try:
        wait_for(path.exists, what="the snapshot written after the first sync")
        first = path.read_bytes()
        # A change after that write (the interval is an hour) reaches the file only at shutdown.
        api.create(service("late", ips=("10.0.0.77",)))
        wait_for(lambda: answer(srv, "late.testns.svc.cluster.local")[0] == "NOERROR", what="late")
        assert metric(prom, GAUGE) == 0
    finally:
        srv.stop()
    assert path.read_bytes() != first

    # While pydns is away: svc1 is deleted, another service created; then the API goes down too.
    api.delete("Service", "testns", "svc1")
    api.create(service("fresh", ips=("10.0.0.88",)))
    api.outage()
    srv = kube_server(api, tmp_path, snapshot_options(path), plugins=plugins(ready, prom))
    try:
        # At once, from the snapshot: its names, and NXDOMAIN (not SERVFAIL) for names it lacks.
        assert answer(srv, SVC1) == ("NOERROR", ["10.0.0.1"])
        assert answer(srv, "late.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.77"])
        assert answer(srv, "hdls1.testns.svc.cluster.local") == ("NOERROR", sorted(
            ["172.0.0.2", "172.0.0.3", "172.0.0.4", "172.0.0.5", "172.0.0.7"]))
        assert answer(srv, "ep1a.svc1.testns.svc.cluster.local") == ("NOERROR", ["172.0.0.1"])
        assert answer(srv, "1.0.0.10.in-addr.arpa", "PTR") == ("NOERROR", ["svc1.testns.svc.cluster.local."])
        assert answer(srv, FRESH)[0] == "NXDOMAIN"
        assert answer(srv, "svc1.testns.svc.cluster.local", "AAAA") == ("NOERROR", [])
        assert http_get(ready, "/ready") == (503, "kubernetes (serving from snapshot)")
        assert metric(prom, GAUGE) == 1

        api.recover()
        wait_for(lambda: answer(srv, SVC1)[0] == "NXDOMAIN", what="svc1, deleted meanwhile, to disappear")
        assert answer(srv, FRESH) == ("NOERROR", ["10.0.0.88"])
        assert answer(srv, "late.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.77"])
        wait_for(lambda: http_get(ready, "/ready") == (200, "OK"), what="ready once synced")
        wait_for(lambda: metric(prom, GAUGE) == 0, what="the gauge to say the snapshot is left behind")
    finally:
        srv.stop()


def test_not_ready_counts_are_kept_even_when_only_they_changed(api, tmp_path):
    """What ``pydns explain`` says of endpoints that are not ready (their count, the service's
    publishNotReadyAddresses) comes back from the snapshot, also after a change of the count
    alone, which changes no answer."""
    path = tmp_path / "dns.snapshot"
    name = "hdls-notready.testns.svc.cluster.local."
    with_explain = " explain 127.0.0.1:0\n"
    published = headless("hdls-notready")
    published["spec"]["publishNotReadyAddresses"] = True
    api.update(published)
    srv = kube_server(api, tmp_path, snapshot_options(path), plugins=with_explain)
    try:
        wait_for(path.exists, what="the snapshot written after the first sync")
        assert step_of(explain(srv, name), "kubernetes")["not_ready_endpoints"] == 1
        # Only the count changes from here on: no answer does, yet the file must.
        api.update(endpoint_slice("hdls-notready-abcde", "hdls-notready",
                                  [endpoint("172.0.0.40", ready=False), endpoint("172.0.0.41", ready=False)]))
        wait_for(lambda: step_of(explain(srv, name), "kubernetes")["not_ready_endpoints"] == 2, what="the new count")
    finally:
        srv.stop()  # writes the snapshot at shutdown
    api.outage()
    srv = kube_server(api, tmp_path, snapshot_options(path), plugins=with_explain, name="kubeconfig2")
    try:
        out = explain(srv, name)
        step = step_of(out, "kubernetes")
        assert endpoint_counts(step) == (0, 2, True)
        assert out["rcode"] == "NXDOMAIN" and answer(srv, name)[0] == "NXDOMAIN"
    finally:
        srv.stop()


def _rewrite(data: bytes, header_change=None, body_change=None) -> bytes:
    """The snapshot with its header or body changed (the checksum made to match the new body)."""
    magic, header, body = data.split(b"\n", 2)
    fields = json.loads(header)
    if body_change is not None:
        body = body_change(body)
        fields["length"], fields["sha256"] = len(body), hashlib.sha256(body).hexdigest()
    if header_change is not None:
        header_change(fields)
    return b"\n".join([magic, json.dumps(fields).encode(), body])


def _is_good(path) -> bool:
    if path.stat().st_size > MAX_BYTES:
        return False
    try:
        _magic, header, body = path.read_bytes().split(b"\n", 2)
        fields = json.loads(header)
    except ValueError:  # still the bad one
        return False
    return fields["schema"] == SCHEMA and fields["sha256"] == hashlib.sha256(body).hexdigest()


def _flip_byte(data: bytes) -> bytes:
    at = len(data) - 20
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _bad_address(body: bytes) -> bytes:
    return body.replace(b'"10.0.0.1"', b'"10.0.0.999"', 1)


BAD = {
    "corrupt": (lambda d, p: p.write_bytes(_flip_byte(d)), "", "checksum mismatch"),
    "truncated": (lambda d, p: p.write_bytes(d[: len(d) // 2]), "", "truncated"),
    "header cut": (lambda d, p: p.write_bytes(d[:40]), "", "header"),
    "not a snapshot": (lambda d, p: p.write_bytes(b"\x00garbage" * 100), "", "not a pydns snapshot"),
    "old schema": (lambda d, p: p.write_bytes(_rewrite(d, header_change=lambda h: h.update(schema=0))), "",
                   "schema 0"),
    "invalid contents": (lambda d, p: p.write_bytes(_rewrite(d, body_change=_bad_address)), "", "invalid contents"),
    "too large": (lambda d, p: p.open("ab").truncate(MAX_BYTES + 1), "", "larger than"),
    "other options": (lambda d, p: p.write_bytes(d), "  labels app=svc1\n", "labels="),
    "other cluster": (lambda d, p: p.write_bytes(d), None, "api="),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_snapshot_is_logged_and_ignored_never_served(api, tmp_path, case, caplog):
    spoil, more, reason = BAD[case]
    path = tmp_path / "dns.snapshot"
    good = make_snapshot(api, tmp_path, path)
    spoil(good, path)
    target = api
    if more is None:  # the same file, read by a server whose API server is another one
        target, more = FakeApiServer(cluster()).start(), ""
    target.outage()
    caplog.set_level(logging.INFO, logger="plugin/kubernetes")
    srv = kube_server(target, tmp_path, snapshot_options(path, more=more), name="kubeconfig2")
    try:
        ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
        assert len(ignored) == 1 and reason in ignored[0], ignored
        # Nothing of the snapshot is served: unsynced, a name it holds is not known.
        assert answer(srv, SVC1)[0] == "SERVFAIL"
        target.recover()
        expected = ("NXDOMAIN" if case == "other options" else "NOERROR")
        wait_for(lambda: answer(srv, "svc-ports.testns.svc.cluster.local")[0] == expected, what="the API's state")
        if case != "other options":
            assert answer(srv, SVC1) == ("NOERROR", ["10.0.0.1"])
        # Once synced, a good snapshot takes the bad one's place.
        wait_for(lambda: _is_good(path), what="a good snapshot")
    finally:
        srv.stop()
        if target is not api:
            target.stop()


@pytest.mark.parametrize("option,message", [
    ("snapshot", "wrong argument count"),
    ("snapshot a b c", "wrong argument count"),
    ("snapshot /no/such/folder/dns.snapshot", "snapshot: no such directory: '/no/such/folder'"),
    ("snapshot {folder}", "is a directory, not a file"),
    ("snapshot {folder}/s 0s", "the interval must be greater than 0"),
    ("snapshot {folder}/s soon", "snapshot: invalid interval 'soon'"),
])
def test_snapshot_setup_errors_name_file_and_line(tmp_path, option, message):
    err = setup_error(tmp_path, "  startup_timeout 1s\n  " + option.format(folder=tmp_path))
    assert err is not None and message in err.message and err.message.startswith("plugin/kubernetes: ")
    assert str(err).startswith(f"{tmp_path / 'Corefile'}:6: ")


def test_snapshot_cannot_be_combined_with_manifests(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    err = setup_error(tmp_path, f"  snapshot {tmp_path}/s")
    assert err is None  # with an API server it sets up
    text = f".:0 {{\n kubernetes cluster.local {{\n  manifests {tmp_path}/c.yaml\n  snapshot {tmp_path}/s\n }}\n}}\n"
    with pytest.raises(CorefileError) as exc:
        build(parse(text, "Corefile"), 53, Instance(None, text))
    assert "'snapshot' cannot be combined with 'manifests'" in str(exc.value) and exc.value.line == 4
