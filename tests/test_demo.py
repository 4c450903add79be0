"""README's first command: `pydns` with no Corefile serves the built-in demo cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import dns.message
import dns.query
import dns.rcode

from tests.conftest import free_port


def ask(port: int, name: str, rdtype: str, deadline: float, until=lambda reply: True) -> dns.message.Message:
    """Ask until the server answers (and ``until(reply)`` holds), or fail after the deadline."""
    while True:
        try:
            reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=0.5)
            if until(reply):
                return reply
        except dns.exception.Timeout:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} {rdtype}: no answer from 127.0.0.1:{port}")
        time.sleep(0.05)


@contextmanager
def running(argv: list, **popen) -> Iterator[subprocess.Popen]:
    """A server process for the block; stopped with SIGTERM after it, which it must obey."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_cluster_answers_the_readme_tour(tmp_path):
    port = free_port()
    # An empty working directory: no ./Corefile, so the built-in demo is served.
    with running([sys.executable, "-m", "pydns", "-dns.port", str(port)], cwd=tmp_path):
        deadline = time.monotonic() + 20
        web = ask(port, "web.shop.svc.cluster.local", "A", deadline)
        assert [rr.address for rr in web.answer[0]] == ["10.96.20.10"]
        assert [rr.address for rr in ask(port, "web.shop.svc.cluster.local", "AAAA", deadline).answer[0]] == ["fd00:10:96::20:10"]
        db = ask(port, "db.shop.svc.cluster.local", "A", deadline)
        assert sorted(rr.address for rr in db.answer[0]) == ["10.244.1.20", "10.244.2.21"]  # db-2 is not ready
        assert [rr.address for rr in ask(port, "db-0.db.shop.svc.cluster.local", "A", deadline).answer[0]] == ["10.244.1.20"]
        srv = ask(port, "_http._tcp.web.shop.svc.cluster.local", "SRV", deadline)
        assert [(rr.port, rr.target.to_text()) for rr in srv.answer[0]] == [(80, "web.shop.svc.cluster.local.")]
        docs = ask(port, "docs.shop.svc.cluster.local", "CNAME", deadline)
        assert docs.answer[0][0].target.to_text() == "docs.example.com."
        ptr = ask(port, "10.20.96.10.in-addr.arpa", "PTR", deadline)
        assert ptr.answer[0][0].target.to_text() == "web.shop.svc.cluster.local."
        assert ask(port, "nope.shop.svc.cluster.local", "A", deadline).rcode() == dns.rcode.NXDOMAIN
