"""UDP served on the one event loop: sockets closed with their server, answers that finish later, fairness."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from pydns import loops
from pydns.server import Instance
from pydns.testing import wait_until_answering
from tests.conftest import free_port
from tests.kube_cluster import service

pytestmark = pytest.mark.timeout(60)


def a_records(msg: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in msg.answer for r in rrset)


def test_a_stopped_server_closes_its_udp_socket(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    port = srv.port
    assert srv.query("example.org.", "A").rcode() == dns.rcode.NOERROR
    srv.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the socket is closed, not leaked


def test_a_reload_that_drops_a_port_closes_its_socket(tmp_path):
    from pydns.testing import ServerThread

    ports = [free_port(), free_port()]
    path = tmp_path / "Corefile"
    path.write_text(f".:{ports[0]} {{\n bind 127.0.0.1\n whoami\n}}\n"
                    f"other.test:{ports[1]} {{\n bind 127.0.0.1\n whoami\n}}\n")
    srv = ServerThread("", path=str(path)).start()
    try:
        assert srv.query("x.other.test.", "A", port=ports[1]).rcode() == dns.rcode.NOERROR
        path.write_text(f".:{ports[0]} {{\n bind 127.0.0.1\n whoami\n}}\n")
        assert srv.reload()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", ports[1]))
        assert srv.query("still.here.", "A", port=ports[0]).rcode() == dns.rcode.NOERROR
    finally:
        srv.stop()


def test_a_plain_asyncio_loop_serves_udp(tmp_path):
    """pydns embedded in someone else's asyncio program (not the loop pydns would pick): the same answers."""
    path = tmp_path / "Corefile"
    path.write_text(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    instance = Instance(str(path))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    done = None

    async def main():
        nonlocal done
        done = asyncio.Event()
        await instance.start()
        started.set()
        await done.wait()
        await instance.stop()

    runner = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    runner.start()
    try:
        assert started.wait(10)
        port = next(iter(instance.addresses.values()))
        reply = dns.query.udp(dns.message.make_query("example.org.", "A"), "127.0.0.1", port=port, timeout=3)
        assert reply.rcode() == dns.rcode.NOERROR and reply.additional
    finally:
        loop.call_soon_threadsafe(done.set)
        runner.join(10)
        loop.close()


def test_udp_answers_that_finish_later_on_a_loop_in_debug_mode(serve, tmp_path, monkeypatch):
    """asyncio's debug mode (``-X dev``) checks that nothing is scheduled from another thread:
    UDP is answered, the answers that finish on the loop included."""
    import yaml

    from tests.kube_cluster import external, namespace

    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    monkeypatch.setattr(loops, "uvloop", None)  # debug mode is asyncio's own loop's
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump_all([namespace("default"), service("web", "default", ips=("10.0.0.1",)),
                                           external("ext", "web.default.svc.cluster.local", ns="default")]))
    srv = serve(f".:0 {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  manifests {cluster}\n }}\n}}\n")
    assert srv.loop.get_debug()
    for _ in range(2):
        # an ExternalName is followed by a coroutine, finished on the loop
        msg = srv.query("ext.default.svc.cluster.local.", "A", timeout=2)
        assert [r.to_text() for rrset in msg.answer for r in rrset] == ["web.default.svc.cluster.local.", "10.0.0.1"]
        assert a_records(srv.query("web.default.svc.cluster.local.", "A", timeout=2)) == ["10.0.0.1"]


FLOOD = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
query = bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
sent, deadline = 0, time.monotonic() + seconds
while time.monotonic() < deadline and sent < 5_000_000:
    try:
        s.sendto(query, ("127.0.0.1", port))
        sent += 1
    except BlockingIOError:
        time.sleep(0.0001)
    try:
        while True:
            s.recv(65535)
    except BlockingIOError:
        pass
print(sent)
"""


def test_tcp_and_cluster_changes_are_served_during_a_udp_flood(tmp_path):
    """A UDP socket is read a batch at a time: a flood of UDP queries must not starve TCP or the
    cluster's changes."""
    import subprocess
    import sys

    import yaml

    from tests.kube_cluster import namespace

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump_all([namespace("default")]))
    port = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  manifests {cluster}\n }}\n}}\n")
    server = subprocess.Popen([sys.executable, "-m", "pydns", "-conf", str(corefile), "-quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    flood = None
    try:
        wait_until_answering(port, server)
        ask = dns.message.make_query("nothing.default.svc.cluster.local.", "A")
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(port), "8", ask.to_wire().hex()],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        for i in range(3):
            objects = [namespace("default")] + [service(f"web{n}", "default", ips=(f"10.0.0.{10 + n}",))
                                                for n in range(i + 1)]
            cluster.write_text(yaml.safe_dump_all(objects))
            started = time.monotonic()
            name = dns.message.make_query(f"web{i}.default.svc.cluster.local.", "A")
            while True:
                asked = time.monotonic()
                msg = dns.query.tcp(name, "127.0.0.1", port=port, timeout=5)
                assert time.monotonic() - asked < 1.0, "a TCP query waited behind the flood"
                if a_records(msg) == [f"10.0.0.{10 + i}"]:
                    break
                assert time.monotonic() - started < 4.0, "the manifest change was not served under the flood"
                time.sleep(0.05)
        assert flood.poll() is None  # all of it happened while the flood went on
    finally:
        if flood is not None:
            flood.kill()
            flood.wait(10)
        server.terminate()
        server.wait(10)


def test_a_start_up_that_fails_late_closes_its_listeners(tmp_path):
    """A plugin failing once the sockets are open must not leave them behind."""
    from pydns.plugin import Plugin
    from pydns.testing import ServerThread, plugin_named

    class FailsWhenStarted(Plugin):
        async def started(self):
            raise RuntimeError("cannot announce")

    port = free_port()
    path = tmp_path / "Corefile"
    path.write_text(f".:{port} {{\n bind 127.0.0.1\n erratic\n whoami\n}}\n")
    with plugin_named("erratic", FailsWhenStarted), pytest.raises(RuntimeError, match="cannot announce"):
        ServerThread("", path=str(path)).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_listener_survives_an_error_outside_the_chain(serve, monkeypatch, caplog):
    """Whatever goes wrong answering one datagram, the listener keeps answering the next."""
    from pydns import udp as transport

    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    real = transport.dispatch
    calls = {"n": 0}

    def flaky(router, req):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom outside the chain")
        return real(router, req)

    monkeypatch.setattr(transport, "dispatch", flaky)
    with pytest.raises(dns.exception.Timeout):
        srv.query("first.example.", "A", timeout=0.5)
    assert srv.query("second.example.", "A").rcode() == dns.rcode.NOERROR
    assert "boom outside the chain" in caplog.text


@pytest.fixture
def timer_plugin():
    """A plugin ``timer`` that answers at once and sets a 1 ms timer while answering; the
    times it set and fired each timer are in ``timer_plugin``."""
    from pydns.plugin import Plugin
    from pydns.testing import plugin_named
    from pydns.wire import Answer

    fired: list[tuple[float, float]] = []

    class Timer(Plugin):
        def serve(self, req):
            loop = asyncio.get_running_loop()
            set_at = loop.time()
            loop.call_later(0.001, lambda: fired.append((set_at, loop.time())))
            return Answer.build(req.key, req.qtype, 0)

    with plugin_named("erratic", Timer):
        yield fired


def test_a_timer_set_while_answering_udp_fires_on_time(serve, timer_plugin):
    srv = serve(".:0 {\n bind 127.0.0.1\n erratic\n}\n")
    for i in range(10):
        assert srv.query(f"t{i}.example.", "A").rcode() == dns.rcode.NOERROR
        time.sleep(0.02)  # the loop goes back to waiting for events between queries
    deadline = time.monotonic() + 2
    while len(timer_plugin) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    lateness = sorted(fired - set_at - 0.001 for set_at, fired in timer_plugin)
    assert len(lateness) == 10
    assert lateness[5] < 0.01, f"a 1 ms timer fired {lateness[5] * 1000:.0f} ms late (median)"


def test_a_stalled_upstream_does_not_delay_in_cluster_answers(serve, tmp_path):
    """Hundreds of forwarded queries wait on an upstream that never answers; names pydns
    knows are answered at once meanwhile (a correctness bound, not a benchmark)."""
    import yaml

    from pydns.testing.upstream import Upstream
    from tests.kube_cluster import namespace

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump_all([namespace("default"), service("web", "default", ips=("10.0.0.1",))]))
    with Upstream(mode="dead") as up:
        srv = serve(f".:0 {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  manifests {cluster}\n }}\n"
                    f" forward . 127.0.0.1:{up.port}\n}}\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for i in range(500):
                flood.sendto(dns.message.make_query(f"n{i}.stalled.example.", "A").to_wire(), srv.address)
            time.sleep(0.2)
            worst = 0.0
            for _ in range(20):
                asked = time.monotonic()
                msg = srv.query("web.default.svc.cluster.local.", "A", timeout=2)
                worst = max(worst, time.monotonic() - asked)
                assert a_records(msg) == ["10.0.0.1"]
            assert len(up.queries) >= 100  # the forwarded queries were really in flight
    assert worst < 0.5, f"an in-cluster answer took {worst * 1000:.0f} ms behind the stalled upstream"


def test_answers_waiting_on_an_upstream_are_bounded(serve, monkeypatch):
    """Past the bound, a query that would wait on a stalled upstream is answered SERVFAIL at
    once; names answered without waiting are unaffected."""
    from pydns import udp
    from pydns.testing.upstream import Upstream

    monkeypatch.setattr(udp.UDPListener, "MAX_PENDING", 20)
    with Upstream(mode="dead") as up:
        srv = serve(f".:0 {{\n bind 127.0.0.1\n forward example. 127.0.0.1:{up.port}\n whoami\n}}\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waiting:
            for i in range(20):
                waiting.sendto(dns.message.make_query(f"n{i}.example.", "A").to_wire(), srv.address)
            time.sleep(0.3)
            asked = time.monotonic()
            reply = srv.query("one-more.example.", "A", timeout=2)
            assert reply.rcode() == dns.rcode.SERVFAIL and time.monotonic() - asked < 1.0
            assert srv.query("known.", "A").rcode() == dns.rcode.NOERROR  # whoami: no waiting
