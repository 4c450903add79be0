"""Helpers shared by the tests of the query-shaping plugins (rewrite, template, acl, ...)."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.query
import dns.rcode
import pytest

from pydns.corefile import CorefileError
from pydns.testing import ServerThread


def corefile(body: str, zone: str = ".") -> str:
    return f"{zone}:0 {{\n bind 127.0.0.1\n{body}\n}}\n"


def startup_error(tmp_path, body: str, line: int, message: str) -> str:
    """Start a Corefile that must fail with ``message`` at FILE:LINE (the block starts at line 1);
    the error's text."""
    path = tmp_path / "Corefile"
    path.write_text(corefile(body))
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(path)).start()
    text = str(err.value)
    assert text.startswith(f"{path}:{line}: ") and message in text, text
    return text


def ask(srv: ServerThread, name: str, rdtype: str = "A", rdclass: str = "IN", tcp: bool = False, **kw):
    """A query with any class (ServerThread.query asks IN only)."""
    q = dns.message.make_query(name, rdtype, rdclass, **kw)
    host, port = srv.address
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, host, port=port, timeout=3)


class UdpResponder:
    """A UDP DNS server on 127.0.0.1 in a thread of its own: ``reply(data)`` makes each answer."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reply(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _run(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                continue
            self.sock.sendto(self.reply(data), addr)

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


class CapturingUpstream(UdpResponder):
    """Keeps every query it gets (raw) and answers it with NXDOMAIN."""

    def __init__(self):
        self.queries: list[dns.message.Message] = []
        super().__init__()

    def reply(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        self.queries.append(query)
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply.to_wire()
