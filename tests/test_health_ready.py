"""The health and ready plugins over real HTTP, including health's lameduck on shutdown."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import time

import dns.exception
import dns.message
import dns.query
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pydns.corefile import CorefileError
from pydns.plugin import REGISTRY, Plugin, register
from pydns.testing import ServerThread
from tests.conftest import free_port


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def http_port(srv: ServerThread) -> int:
    return srv.instance.http[("127.0.0.1", 0)].bound_port


def scrape_value(port: int, name: str) -> float:
    status, body = http_get(port, "/metrics")
    assert status == 200
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)


def test_health_says_ok(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0\n whoami\n}\n")
    port = http_port(srv)
    assert http_get(port, "/health") == (200, "OK")
    assert http_get(port, "/ready")[0] == 404


def test_health_checks_itself_every_second(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0\n prometheus 127.0.0.1:0\n}\n")
    port = http_port(srv)
    before = scrape_value(port, "coredns_health_request_duration_seconds_count")
    deadline = time.monotonic() + 5
    while scrape_value(port, "coredns_health_request_duration_seconds_count") < before + 1:
        assert time.monotonic() < deadline, "no self health check was recorded"
        time.sleep(0.2)
    assert scrape_value(port, "coredns_health_request_failures_total") == 0


def test_lameduck_keeps_answering_while_ready_says_shutting_down(serve, caplog):
    caplog.set_level(logging.INFO)
    srv = serve(".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0 {\n  lameduck 1500ms\n }\n ready 127.0.0.1:0\n whoami\n}\n")
    port, dns_port = http_port(srv), srv.port
    assert http_get(port, "/ready") == (200, "OK")
    stopping = asyncio.run_coroutine_threadsafe(srv.instance.stop(), srv.loop)
    time.sleep(0.2)
    assert srv.query("still.here.", "A", port=dns_port).additional  # DNS still answers
    assert http_get(port, "/health") == (200, "OK")
    assert http_get(port, "/ready") == (503, "Shutting down")
    assert not stopping.done()  # all of the above happened during the lameduck
    stopping.result(10)
    assert "Going into lameduck mode for 1.5s" in caplog.text
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("gone.", "A"), "127.0.0.1", port=dns_port, timeout=0.5)
    with pytest.raises(OSError):
        http_get(port, "/health")


class _Warming(Plugin):
    """Reports readiness as the test says (CoreDNS's erratic plugin reports readiness too)."""

    reports_ready = True
    is_ready = False

    def ready(self) -> bool:
        return _Warming.is_ready


@pytest.fixture
def warming_plugin():
    previous = REGISTRY.get("erratic")
    register("erratic")(_Warming)
    _Warming.is_ready = False
    yield _Warming
    if previous is None:
        REGISTRY.pop("erratic", None)
    else:
        REGISTRY["erratic"] = previous


@pytest.mark.parametrize("monitor, after", [("until-ready", (200, "OK")), ("continuously", (503, "erratic"))])
def test_ready_waits_for_plugins_that_report_readiness(serve, warming_plugin, monitor, after):
    srv = serve(f".:0 {{\n bind 127.0.0.1\n ready 127.0.0.1:0 {{\n  monitor {monitor}\n }}\n erratic\n whoami\n}}\n")
    port = http_port(srv)
    assert http_get(port, "/ready") == (503, "erratic")
    warming_plugin.is_ready = True
    assert http_get(port, "/ready") == (200, "OK")
    # Once ready, until-ready stops asking; continuously notices the plugin going back.
    warming_plugin.is_ready = False
    assert http_get(port, "/ready") == after


def test_ready_counts_plugins_of_every_server_block(serve, warming_plugin):
    srv = serve("a.test:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n whoami\n}\n"
                "b.test:0 {\n bind 127.0.0.1\n erratic\n whoami\n}\n")
    assert http_get(http_port(srv), "/ready") == (503, "erratic")
    warming_plugin.is_ready = True
    assert http_get(http_port(srv), "/ready") == (200, "OK")


def test_ready_says_ok_when_every_plugin_is_ready(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0 {\n  monitor continuously\n }\n whoami\n}\n")
    assert http_get(http_port(srv), "/ready") == (200, "OK")


def test_ready_names_the_plugins_that_are_not_ready(serve):
    closed = free_port()
    srv = serve(".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n"
                f" kubernetes cluster.local {{\n  endpoint http://127.0.0.1:{closed}\n  startup_timeout 1s\n }}\n}}\n")
    assert http_get(http_port(srv), "/ready") == (503, "kubernetes")


def test_blocks_on_one_address_share_the_endpoints(serve):
    port = free_port()
    srv = serve(f"a.test:0 {{\n bind 127.0.0.1\n health 127.0.0.1:{port}\n ready 127.0.0.1:{port}\n whoami\n}}\n"
                f"b.test:0 {{\n bind 127.0.0.1\n health 127.0.0.1:{port}\n ready 127.0.0.1:{port}\n whoami\n}}\n")
    assert list(srv.instance.http) == [("127.0.0.1", port)]
    assert http_get(port, "/health") == (200, "OK")
    assert http_get(port, "/ready") == (200, "OK")


@pytest.mark.parametrize("body, message", [
    ("health localhost", "plugin/health: address localhost: missing port in address"),
    ("health [::1]", "plugin/health: address [::1]: missing port in address"),
    ("health a:1 b:2", "plugin/health: wrong argument count"),
    ("health :8080 {\n foo\n }", "plugin/health: unknown property 'foo'"),
    ("health :8080 {\n lameduck\n }", "plugin/health: wrong argument count or unexpected line ending after 'lameduck'"),
    ("health :8080 {\n lameduck soon\n }", "plugin/health: unable to parse lameduck duration value: 'soon'"),
    ("health 127.0.0.1:0\n health 127.0.0.1:0", "plugin/health: this plugin can only be used once per Server Block"),
    ("ready :abc", "plugin/ready: address :abc: invalid port 'abc'"),
    ("ready {\n monitor sometimes\n }", "plugin/ready: monitor type 'sometimes' not supported"),
    ("ready {\n monitor\n }", "plugin/ready: wrong argument count"),
    ("ready {\n bar\n }", "plugin/ready: unknown property 'bar'"),
    ("ready 127.0.0.1:0\n ready 127.0.0.1:0", "plugin/ready: this plugin can only be used once per Server Block"),
])
def test_setup_errors(tmp_path, body, message):
    conf = tmp_path / "Corefile"
    conf.write_text(f".:0 {{\n {body}\n}}\n")
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(conf)).start()
    assert message in str(err.value)
    assert str(err.value).split(": ")[0] in (f"{conf}:2", f"{conf}:3")


@pytest.mark.parametrize("plugin", ["health", "ready"])
def test_busy_port_fails_start_up_naming_the_line(tmp_path, plugin):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        conf = tmp_path / "Corefile"
        conf.write_text(f".:0 {{\n bind 127.0.0.1\n {plugin} 127.0.0.1:{port}\n whoami\n}}\n")
        with pytest.raises(CorefileError) as err:
            ServerThread("", path=str(conf)).start()
    assert str(err.value) == f"{conf}:3: plugin/{plugin}: listen tcp 127.0.0.1:{port}: bind: address already in use"


def test_ready_is_not_ok_while_start_up_waits_for_the_kubernetes_sync(tmp_path):
    """/ready opens before the kubernetes plugin has synced; it must not say OK meanwhile."""
    import threading

    from pydns.testing.fakeapi import FakeApiServer

    api = FakeApiServer([{"kind": "Namespace", "metadata": {"name": "default"}}]).start()
    api.forbid("EndpointSlice")  # the first sync cannot finish
    ready = free_port()
    text = (f".:0 {{\n bind 127.0.0.1\n ready 127.0.0.1:{ready}\n kubernetes cluster.local {{\n"
            f"  kubeconfig {api.kubeconfig(str(tmp_path / 'kubeconfig'))}\n  startup_timeout 2s\n }}\n}}\n")
    seen: list[tuple[int, str]] = []
    polling = True

    def poll():
        while polling:
            try:
                seen.append(http_get(ready, "/ready"))
            except OSError:
                pass
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    srv = ServerThread(text).start()  # returns once the start-up timeout has passed
    try:
        assert seen and all(status == 503 for status, _ in seen), seen[:5]
        assert http_get(ready, "/ready") == (503, "kubernetes")
        api.allow("EndpointSlice")
        deadline = time.monotonic() + 10
        while http_get(ready, "/ready") != (200, "OK"):
            assert time.monotonic() < deadline, "never ready after the sync"
            time.sleep(0.05)
    finally:
        polling = False
        poller.join(2)
        srv.stop()
        api.stop()
