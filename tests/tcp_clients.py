"""Raw DNS-over-TCP clients for the TCP limit tests: framing, hang-up detection, memory."""

from __future__ import annotations

import select
import socket
import struct
import time

import dns.message


def frame(name: str, rdtype: str = "A", qid: int | None = None, **kw) -> bytes:
    """One query with its two-byte length prefix (``kw`` as dnspython's ``make_query``)."""
    q = dns.message.make_query(name, rdtype, **kw)
    if qid is not None:
        q.id = qid
    wire = q.to_wire()
    return struct.pack("!H", len(wire)) + wire


def connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from ``source`` (any 127.0.0.0/8 address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def read_replies(s: socket.socket, expect: int, timeout: float = 5.0) -> list[dns.message.Message]:
    """Up to ``expect`` replies, read until they are all there, the peer hangs up or time runs out."""
    out, buf = [], b""
    deadline = time.monotonic() + timeout
    s.settimeout(0.2)
    while len(out) < expect and time.monotonic() < deadline:
        try:
            chunk = s.recv(65535)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
            n = struct.unpack("!H", buf[:2])[0]
            out.append(dns.message.from_wire(buf[2 : 2 + n]))
            buf = buf[2 + n :]
    return out


def hung_up(s: socket.socket) -> bool:
    """Has the server closed this connection (without waiting)? Replies waiting are skipped."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65535)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def wait_hung_up(s: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed the connection, or None if it stayed open ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if hung_up(s):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def wait_reset_unread(s: socket.socket, timeout: float) -> float | None:
    """Like ``wait_hung_up`` for a client that must not read: watches for the hang-up only."""
    poller = select.poll()
    poller.register(s, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    started = time.monotonic()
    if poller.poll(timeout * 1000):
        return time.monotonic() - started
    return None


def refused(port: int, source: str = "127.0.0.1") -> bool:
    """Is a new connection from ``source`` closed without an answer to its query?"""
    try:
        with connect(port, source) as s:
            s.sendall(frame("probe.example.org"))
            return read_replies(s, 1, timeout=2.0) == []
    except (ConnectionResetError, BrokenPipeError):
        return True


def rss_bytes() -> int:
    """This process's resident memory (the in-process server's included)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
