"""The health, ready and metrics listeners under hostile clients, over real HTTP.

Each attack runs against a real server in this process (so /proc/self/status is the
server's memory); health, ready and metrics must keep answering a normal client during and
after it, and every rejection is counted in ``pydns_http_rejected_total``.
"""

from __future__ import annotations

import http.client
import logging
import select
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pydns.httpd import (MAX_BODY, MAX_HEADER_BYTES, MAX_HEADERS, MAX_PER_ADDRESS, MAX_REQUEST_LINE,
                         REQUEST_TIMEOUT)
from tests.conftest import free_port

# docs/limits.md: at most one request head (the line and the header lines) is held per
# connection, about 24 KiB; the assertions allow generous slack for the allocator.
RSS_SLACK = 16 * 1024 * 1024
PATHS = ("/health", "/ready", "/metrics")


def rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Endpoints:
    """A server with health, ready and prometheus, each on its own port."""

    def __init__(self, serve):
        self.ports = {"/health": free_port(), "/ready": free_port(), "/metrics": free_port()}
        self.srv = serve(f".:0 {{\n bind 127.0.0.1\n health 127.0.0.1:{self.ports['/health']}\n"
                         f" ready 127.0.0.1:{self.ports['/ready']}\n prometheus 127.0.0.1:{self.ports['/metrics']}\n"
                         " whoami\n}\n")

    def all_answer(self) -> None:
        """A normal client gets its answer from every endpoint, and DNS still answers."""
        for path, port in self.ports.items():
            status, body = get(port, path)
            assert status == 200, (path, status, body)
        assert self.srv.query("normal.client.", "A").additional

    def rejected(self, cause: str) -> float:
        status, body = get(self.ports["/metrics"], "/metrics")
        assert status == 200
        return sum(s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples
                   if s.name == "pydns_http_rejected_total" and s.labels.get("cause") == cause)


@pytest.fixture
def endpoints(serve):
    return Endpoints(serve)


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_to_close(sock, timeout)


def read_to_close(sock: socket.socket, timeout: float) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            continue
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize("path", PATHS)
def test_header_flood_is_cut_and_memory_stays_bounded(endpoints, path, caplog):
    caplog.set_level(logging.INFO)
    port = endpoints.ports[path]
    endpoints.all_answer()
    before = peak = rss()
    pad = b"v" * 1000
    sent, reply = 0, b""
    deadline = time.monotonic() + 30
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: pydns\r\n".encode())
        # 400,000 distinct 1 KB header lines, 64 to a send; stop as soon as the server answers
        # or closes (the loop is bounded in count and in time).
        while sent < 400_000 and time.monotonic() < deadline:
            batch = b"".join(b"X-Flood-%d: %s\r\n" % (i, pad) for i in range(sent, sent + 64))
            try:
                sock.sendall(batch)
            except OSError:
                break
            sent += 64
            peak = max(peak, rss())
            if select.select([sock], [], [], 0)[0]:
                break
        reply = read_to_close(sock, 5)
    after = rss()
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), reply[:200]
    assert b"Connection: close" in reply
    assert sent < 400_000, "the server kept reading the flood"
    assert peak - before < RSS_SLACK, f"RSS grew by {(peak - before) >> 20} MiB during the flood"
    assert after - before < RSS_SLACK, f"RSS still {(after - before) >> 20} MiB up after the connection closed"
    endpoints.all_answer()
    assert endpoints.rejected("headers_too_large") >= 1
    lines = [r for r in caplog.records if "431" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in lines]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("request_bytes, status, cause", [
    (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n", 414, "request_line_too_long"),
    (b"GET /" + b"a" * (MAX_REQUEST_LINE * 8), 414, "request_line_too_long"),  # no line end at all
    (b"GET /health HTTP/1.1\r\n" + b"".join(b"H%d: x\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
     431, "too_many_headers"),
    (b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * MAX_HEADER_BYTES + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /health HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413, "body_too_large"),
    (b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "unsupported"),
    (b"GET /health HTTP/2.0\r\n\r\n", 505, "unsupported"),
    (b"GET /health\r\n\r\n", 400, "malformed"),
    (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed"),
    (b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "malformed"),
])
def test_requests_over_a_limit_get_a_clear_status(endpoints, request_bytes, status, cause, caplog):
    port = endpoints.ports["/health"]
    before = endpoints.rejected(cause)
    reply = raw(port, request_bytes)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    assert b"Connection: close" in reply
    assert endpoints.rejected(cause) == before + 1
    assert "Traceback" not in caplog.text
    endpoints.all_answer()


def test_requests_just_within_the_limits_are_answered(endpoints):
    port = endpoints.ports["/health"]
    target = b"/health?" + b"q" * (MAX_REQUEST_LINE - len(b"GET /health? HTTP/1.1"))
    line = b"GET " + target + b" HTTP/1.1\r\n"
    assert len(line) == MAX_REQUEST_LINE + 2
    headers = b"".join(b"H%02d: %s\r\n" % (i, b"h" * 150) for i in range(MAX_HEADERS - 1))
    headers += b"Connection: close\r\n"
    assert len(headers) <= MAX_HEADER_BYTES
    reply = raw(port, line + headers + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nOK")


def test_keep_alive_pipelining_and_bodies(endpoints):
    port = endpoints.ports["/health"]
    requests = (b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                b"\r\n"  # a stray line end between requests is ignored
                b"HEAD /health HTTP/1.1\r\n\r\n"
                b"GET /health HTTP/1.0\r\n\r\n")
    reply = raw(port, requests)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert reply.endswith(b"Connection: close\r\n\r\nOK")


class Slowloris(threading.Thread):
    """Sends a request head one byte every half second; records when the server cut it."""

    def __init__(self, port: int, seconds: float):
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.reply = b""
        self.cut_after: float | None = None

    def run(self) -> None:
        data = b"GET /health HTTP/1.1\r\n" + b"X-Slow: " + b"s" * 1000
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            start = time.monotonic()
            for byte in data:
                if time.monotonic() - start > self.seconds:
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                if select.select([sock], [], [], 0.5)[0]:
                    break
            self.reply = read_to_close(sock, 2)
            self.cut_after = time.monotonic() - start


def test_slowloris_is_cut_at_the_request_deadline(endpoints):
    port = endpoints.ports["/health"]
    before = endpoints.rejected("timeout")
    slow = [Slowloris(port, REQUEST_TIMEOUT + 10) for _ in range(20)]
    for s in slow:
        s.start()
    time.sleep(REQUEST_TIMEOUT / 2)
    endpoints.all_answer()  # during the attack
    for s in slow:
        s.join(REQUEST_TIMEOUT + 15)
    for s in slow:
        assert s.cut_after is not None, "a trickling client was never cut"
        assert s.cut_after < REQUEST_TIMEOUT + 3, f"cut only after {s.cut_after:.1f}s"
        assert s.reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), s.reply[:200]
    assert endpoints.rejected("timeout") == before + 20
    endpoints.all_answer()


def is_open(sock: socket.socket) -> bool:
    try:
        return not select.select([sock], [], [], 0)[0] or sock.recv(1, socket.MSG_PEEK) != b""
    except ConnectionResetError:
        return False


def test_connection_cap_holds_per_client_address(endpoints):
    port = endpoints.ports["/metrics"]
    extra = 20
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_PER_ADDRESS + extra)]
    try:
        deadline = time.monotonic() + 5
        while sum(map(is_open, held)) > MAX_PER_ADDRESS and time.monotonic() < deadline:
            time.sleep(0.05)
        still_open = [is_open(s) for s in held]
        assert sum(still_open) == MAX_PER_ADDRESS
        assert not any(still_open[:extra]), "the oldest connections make room first"
        # A client that asks something is served: its connection takes the place of the
        # oldest one that only waits.
        endpoints.all_answer()
        assert endpoints.rejected("connection_limit") >= extra
    finally:
        for s in held:
            s.close()
    endpoints.all_answer()


def test_client_that_does_not_read_its_replies_is_bounded(endpoints):
    port = endpoints.ports["/metrics"]
    before = rss()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        request, sent = b"GET /metrics HTTP/1.1\r\n\r\n", 0
        deadline = time.monotonic() + 20
        while sent < 400_000 and time.monotonic() < deadline:
            try:
                sock.send(request * 50)
            except BlockingIOError:
                # The server stopped reading: it does not queue replies without end.
                break
            sent += 50
        grown = rss() - before
        assert sent < 400_000, "the server kept reading requests whose replies were not read"
        assert grown < RSS_SLACK, f"RSS grew by {grown >> 20} MiB"
        endpoints.all_answer()


def test_a_body_that_trickles_is_cut_at_the_same_deadline(endpoints):
    port = endpoints.ports["/health"]
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
        reply = b""
        while time.monotonic() - start < REQUEST_TIMEOUT + 5:
            try:
                sock.send(b"x")
            except OSError:
                break
            if select.select([sock], [], [], 0.5)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        took = time.monotonic() - start
    # The head was whole at once and answered; the body never was, and is cut with the request.
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 408 Request Timeout\r\n" in reply
    assert took < REQUEST_TIMEOUT + 3
