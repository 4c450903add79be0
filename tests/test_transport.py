"""UDP served by a thread of its own beside the event loop, and by the loop's selector elsewhere."""

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

from pydns.server import Instance
from tests.conftest import free_port
from tests.kube_cluster import service

pytestmark = pytest.mark.timeout(60)


def udp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("udp dns://")]


def a_records(msg: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in msg.answer for r in rrset)


def test_udp_is_answered_by_its_own_thread_which_ends_with_the_server(serve):
    before = set(udp_threads())
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    port = srv.port
    assert srv.query("example.org.", "A").rcode() == dns.rcode.NOERROR
    mine = [t for t in udp_threads() if t not in before]
    assert [t.name for t in mine] == [f"udp dns://127.0.0.1:{port}"]
    srv.stop()
    assert not mine[0].is_alive()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the socket is closed, not leaked


def test_a_reload_that_drops_a_port_ends_its_thread(serve, tmp_path):
    from pydns.testing import ServerThread

    ports = [free_port(), free_port()]
    path = tmp_path / "Corefile"
    path.write_text(f".:{ports[0]} {{\n bind 127.0.0.1\n whoami\n}}\n"
                    f"other.test:{ports[1]} {{\n bind 127.0.0.1\n whoami\n}}\n")
    srv = ServerThread("", path=str(path)).start()
    try:
        threads = [t for t in udp_threads() if any(t.name.endswith(f":{p}") for p in ports)]
        assert len(threads) == 2
        path.write_text(f".:{ports[0]} {{\n bind 127.0.0.1\n whoami\n}}\n")
        assert srv.reload()
        gone = [t for t in threads if t.name.endswith(f":{ports[1]}")][0]
        assert not gone.is_alive()
        assert srv.query("still.here.", "A", port=ports[0]).rcode() == dns.rcode.NOERROR
    finally:
        srv.stop()


def test_a_plain_asyncio_loop_serves_udp_from_its_selector(tmp_path):
    """pydns embedded in someone else's asyncio program: no thread, the same answers."""
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

    before = set(udp_threads())
    runner = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    runner.start()
    try:
        assert started.wait(10)
        port = next(iter(instance.addresses.values()))
        reply = dns.query.udp(dns.message.make_query("example.org.", "A"), "127.0.0.1", port=port, timeout=3)
        assert reply.rcode() == dns.rcode.NOERROR and reply.additional
        assert set(udp_threads()) == before
    finally:
        loop.call_soon_threadsafe(done.set)
        runner.join(10)
        loop.close()


def test_udp_answers_that_finish_later_on_a_loop_in_debug_mode(serve, tmp_path, monkeypatch):
    """asyncio's debug mode (``-X dev``) refuses work scheduled from another thread: UDP must
    still be answered, the answers that finish on the loop included."""
    import yaml

    from tests.kube_cluster import external, namespace

    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
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
    """The loop goes first: a flood of UDP queries must not starve TCP or the cluster's changes."""
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
        ask = dns.message.make_query("nothing.default.svc.cluster.local.", "A")
        deadline = time.monotonic() + 20
        while True:
            try:
                dns.query.tcp(ask, "127.0.0.1", port=port, timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "pydns did not start"
                time.sleep(0.1)
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
    """A plugin failing once the sockets are open must not leave them (or their threads) behind."""
    from pydns.plugin import REGISTRY, Plugin, register
    from pydns.testing import ServerThread

    class FailsWhenStarted(Plugin):
        async def started(self):
            raise RuntimeError("cannot announce")

    previous = REGISTRY.get("erratic")
    register("erratic")(FailsWhenStarted)
    port = free_port()
    path = tmp_path / "Corefile"
    path.write_text(f".:{port} {{\n bind 127.0.0.1\n erratic\n whoami\n}}\n")
    try:
        with pytest.raises(RuntimeError, match="cannot announce"):
            ServerThread("", path=str(path)).start()
    finally:
        if previous is None:
            REGISTRY.pop("erratic", None)
        else:
            REGISTRY["erratic"] = previous
    assert not [t for t in udp_threads() if t.name == f"udp dns://127.0.0.1:{port}"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_listener_survives_an_error_outside_the_chain(serve, monkeypatch, caplog):
    """Whatever goes wrong answering one datagram, the UDP thread keeps answering the next."""
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


def test_where_shutdown_does_not_wake_the_thread_a_datagram_does(serve, monkeypatch):
    """Not every system wakes a blocked recvfrom on shutdown(); closing must not hang or leak."""
    before = set(udp_threads())
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    port = srv.port
    mine = [t for t in udp_threads() if t not in before]
    monkeypatch.setattr(socket.socket, "shutdown", lambda self, how: None)
    srv.stop()
    assert mine and not mine[0].is_alive()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
