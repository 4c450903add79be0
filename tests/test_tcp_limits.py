"""Hostile TCP clients meet bounds: memory, deadlines, connection caps (docs/limits.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pydns.tcp
from dnslib import QTYPE, RR, A
from pydns.plugin import Plugin
from pydns.wire import Answer
from pydns.testing import ServerThread, free_port, plugin_named
from pydns.testing.upstream import Upstream
from tests.tcp_clients import (connect, frame, hung_up, read_replies, refused, rss_bytes, wait_hung_up,
                               wait_reset_unread)

# What one connection can make the server hold (docs/limits.md): its read buffer (one
# message), its unread replies up to the limit plus the reply that crossed it, and its answers
# in flight (small: a few KB each).
PER_CONNECTION_BOUND = 65537 + pydns.tcp.TCP_MAX_PENDING_BYTES + 65537 + pydns.tcp.TCP_MAX_INFLIGHT * 8192
SLACK = 24 * 1024 * 1024  # the interpreter's own allocator, the probes, the metrics scrape


def tcp_metric(port: int, name: str) -> dict[str, float]:
    """label value -> sample of a pydns_tcp_* counter with one label, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    for family in text_string_to_metric_families(body):
        if family.name == name:
            return {next(iter(s.labels.values())): s.value for s in family.samples if s.name.endswith("_total")}
    raise AssertionError(f"{name} is not exported")


def answers_normally(srv: ServerThread) -> bool:
    udp = srv.query("probe.example.org", timeout=2.0)
    tcp = srv.query("probe.example.org", tcp=True, timeout=2.0)
    return len(udp.additional) == 2 and len(tcp.additional) == 2


def test_a_client_that_never_reads_holds_bounded_memory_and_is_closed():
    metrics_port = free_port()
    # 60,000 pipelined queries for a name of 40 addresses: 42 MB of replies, ten times what
    # the kernel's socket buffers hold.
    flood = frame("flood.example.org") * 60000
    hosts = "\n".join(f"  10.0.0.{i} flood.example.org" for i in range(1, 41))
    corefile = (f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n hosts {{\n{hosts}\n  fallthrough\n }}\n"
                " whoami\n}\n")
    with ServerThread(corefile) as srv:
        assert answers_normally(srv)
        closed_before = tcp_metric(metrics_port, "pydns_tcp_closed").get("write_timeout", 0)
        before = rss_bytes()
        peak = before
        attacker = connect(srv.port, rcvbuf=4096, timeout=20.0)
        sent = threading.Thread(target=_send_quietly, args=(attacker, flood), daemon=True)
        started = time.monotonic()
        sent.start()
        probes = 0
        while time.monotonic() - started < 4.0:  # the write timeout (5 s) has not run out yet
            peak = max(peak, rss_bytes())
            assert not hung_up_unread(attacker)
            assert answers_normally(srv)
            probes += 1
            time.sleep(0.1)
        assert probes >= 5
        assert peak - before < PER_CONNECTION_BOUND + SLACK, f"RSS grew by {(peak - before) >> 20} MiB"
        # The server stopped reading the flood, and hangs up at the write timeout.
        assert wait_reset_unread(attacker, 6.0) is not None
        peak = max(peak, rss_bytes())
        sent.join(20)
        attacker.close()
        assert answers_normally(srv)
        assert peak - before < PER_CONNECTION_BOUND + SLACK, f"RSS grew by {(peak - before) >> 20} MiB"
        assert tcp_metric(metrics_port, "pydns_tcp_closed")["write_timeout"] == closed_before + 1


def _send_quietly(sock, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server hung up


def hung_up_unread(sock) -> bool:
    return wait_reset_unread(sock, 0) is not None


def test_answers_in_flight_per_connection_are_bounded():
    up = Upstream(mode="slow", delay=1.0)
    up.start()
    try:
        corefile = f".:0 {{\n bind 127.0.0.1\n forward . 127.0.0.1:{up.port}\n}}\n"
        for i in range(100):
            up.set(f"n{i}.example.org.", "A", ["192.0.2.1"])
        with ServerThread(corefile) as srv:
            with connect(srv.port) as s:
                s.sendall(b"".join(frame(f"n{i}.example.org", qid=i) for i in range(100)))
                time.sleep(0.6)  # the first answers are still on their way
                assert 0 < len(up.queries) <= pydns.tcp.TCP_MAX_INFLIGHT
                replies = read_replies(s, 100, timeout=15.0)
            assert sorted(r.id for r in replies) == list(range(100))
            assert all(r.answer for r in replies)
    finally:
        up.stop()


class _SlowBig(Plugin):
    """Answers every query with 3,000 A records (48 KB), 50 ms later: answers that complete
    while the client is not reading."""

    def setup(self, d) -> None:
        records = [RR("big.example.org", QTYPE.A, rdata=A(f"10.{i >> 8}.{i & 255}.1"), ttl=60) for i in range(3000)]
        self.big = Answer.build("big.example.org", QTYPE.A, answer=records)

    async def _later(self) -> Answer:
        await asyncio.sleep(0.05)
        return self.big

    def serve(self, req):
        return self._later()


@pytest.fixture
def slow_big_plugin():
    with plugin_named("erratic", _SlowBig):
        yield


def test_unread_replies_past_the_limit_close_the_connection(slow_big_plugin):
    metrics_port = free_port()
    corefile = f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n erratic\n}}\n"
    with ServerThread(corefile) as srv:
        closed_before = tcp_metric(metrics_port, "pydns_tcp_closed").get("pending_limit", 0)
        with connect(srv.port, rcvbuf=4096, timeout=10.0) as s:
            # 500 x 48 KB of replies: far more than the kernel's buffers hold
            _send_quietly(s, frame("big.example.org") * 500)
            assert wait_reset_unread(s, 10.0) is not None
        assert tcp_metric(metrics_port, "pydns_tcp_closed")["pending_limit"] == closed_before + 1
        with connect(srv.port) as s:
            s.sendall(frame("big.example.org"))
            assert len(read_replies(s, 1)[0].answer[0]) == 3000


def test_trickling_clients_are_closed_at_their_deadline_and_new_clients_served(monkeypatch):
    # 300 connections from 300 addresses, each sending a query one byte every 0.2 s (6 s
    # for the whole query), against a cap of 100: they fill it, and each is closed at its
    # read deadline (2 s), however often its bytes come.
    monkeypatch.setattr(pydns.tcp, "TCP_MAX_CONNECTIONS", 100)
    query = frame("trickle.example.org")
    with ServerThread(".:0 {\n bind 127.0.0.1\n timeouts {\n  read 2s\n }\n whoami\n}\n") as srv:
        sources = [f"127.0.{1 + i // 200}.{2 + i % 200}" for i in range(300)]
        opened = time.monotonic()
        clients = []
        for source in sources:
            clients.append(connect(srv.port, source))
            _send_quietly(clients[-1], query[:1])
        try:
            assert refused(srv.port)  # the cap is full
            closed_at: dict[int, float] = {}
            sent = 1
            while time.monotonic() - opened < 8.0 and len(closed_at) < len(clients):
                time.sleep(0.2)
                for n, s in enumerate(clients):
                    if n not in closed_at and (hung_up(s) or not _sent(s, query[sent : sent + 1])):
                        closed_at[n] = time.monotonic() - opened
                sent = min(sent + 1, len(query) - 1)  # never the whole query
            assert len(closed_at) == len(clients), f"{len(clients) - len(closed_at)} trickling clients still open"
            assert max(closed_at.values()) < 5.0
            assert answers_normally(srv)
        finally:
            for s in clients:
                s.close()


def _sent(sock, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def test_one_address_cannot_take_every_connection():
    metrics_port = free_port()
    corefile = (f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n"
                f" timeouts {{\n  read 60s\n }}\n whoami\n}}\n")
    assert pydns.tcp.TCP_MAX_PER_SOURCE < pydns.tcp.TCP_MAX_CONNECTIONS
    with ServerThread(corefile) as srv:
        held = [connect(srv.port, "127.0.0.1") for _ in range(pydns.tcp.TCP_MAX_PER_SOURCE)]
        try:
            time.sleep(0.2)
            assert refused(srv.port, "127.0.0.1")
            assert not refused(srv.port, "127.0.0.2")  # another client is served
            held.pop().close()
            time.sleep(0.2)
            assert not refused(srv.port, "127.0.0.1")  # a slot of its own freed up
            assert tcp_metric(metrics_port, "pydns_tcp_closed")["source_cap"] >= 1
        finally:
            for s in held:
                s.close()


def test_replies_for_clients_gone_are_counted_and_logged_once(caplog):
    metrics_port = free_port()
    up = Upstream(mode="slow", delay=0.5)
    up.set("gone.example.org.", "A", ["192.0.2.7"])
    up.start()
    try:
        corefile = (f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n"
                    f" forward . 127.0.0.1:{up.port}\n}}\n")
        with caplog.at_level(logging.WARNING, logger="pydns"), ServerThread(corefile) as srv:
            before = tcp_metric(metrics_port, "pydns_tcp_send_errors")
            for _ in range(3):
                with connect(srv.port) as s:
                    s.sendall(frame("gone.example.org"))
                    time.sleep(0.1)  # taken in and read: its answer is on the way (the upstream is slow)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST

            def grew(cause: str) -> float:
                return tcp_metric(metrics_port, "pydns_tcp_send_errors").get(cause, 0) - before.get(cause, 0)

            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and grew("closed") < 3:
                time.sleep(0.1)
            assert grew("closed") == 3 and grew("ECONNRESET") == 3
        for said in ("the connection was already closed", "Connection reset by peer"):
            assert len([r for r in caplog.records if said in r.getMessage()]) == 1, said
    finally:
        up.stop()


def test_the_tcp_metrics_are_exported_and_documented():
    import os
    import re

    metrics_port = free_port()
    with ServerThread(f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n whoami\n}}\n"):
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    exported = {f.name + ("_total" if f.type == "counter" else "")
                for f in text_string_to_metric_families(body) if f.name.startswith("pydns_tcp_")}
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "metrics.md"),
              encoding="utf-8") as fh:
        documented = set(re.findall(r"^\| `(pydns_tcp_[a-z_]+)` \|", fh.read(), re.M))
    assert exported == documented == {"pydns_tcp_connections", "pydns_tcp_closed_total", "pydns_tcp_send_errors_total"}


def test_a_client_that_half_closes_gets_every_reply():
    up = Upstream(mode="slow", delay=0.3)
    up.set("later.example.org.", "A", ["192.0.2.9"])
    up.start()
    try:
        with ServerThread(f".:0 {{\n bind 127.0.0.1\n forward . 127.0.0.1:{up.port}\n}}\n") as srv:
            with connect(srv.port) as s:
                s.sendall(b"".join(frame("later.example.org", qid=i) for i in range(40)))
                s.shutdown(socket.SHUT_WR)  # answers still on their way, some not even asked yet
                replies = read_replies(s, 41, timeout=10.0)
                assert sorted(r.id for r in replies) == list(range(40))
                assert wait_hung_up(s, 2.0) is not None
    finally:
        up.stop()


def test_clients_that_reset_at_once_leave_no_trace_but_a_count(caplog):
    """Connections reset before the loop takes them in (no peer address left to read) are
    closed and counted; nothing raises in a loop callback, and the listener goes on."""
    with caplog.at_level(logging.WARNING), ServerThread(".:0 {\n bind 127.0.0.1\n whoami\n}\n") as srv:
        for _ in range(50):
            s = connect(srv.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST at once
        time.sleep(0.3)
        assert answers_normally(srv)
        assert pydns.tcp.stats.tcp_open >= 0
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
