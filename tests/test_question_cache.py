"""The question cache holds short, exact queries only: junk after a query cannot grow memory.

The attack: 12,000 UDP packets, each a valid query followed by a counter and 60 KB of junk
(every packet distinct).  Keyed on the whole packet, the cache once kept each of them
(RSS from 82 to 636 MiB in seconds).  Now bytes after the last record are ignored, as
miekg/dns does, and keep the packet out of the cache; the cache is bounded by
docs/limits.md: 10,000 entries of at most 512 bytes each, about 20 MiB.
"""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import pytest

pytestmark = pytest.mark.timeout(120)

CACHE_BOUND_MIB = 20  # docs/limits.md, "The wire parser and answers"
SLACK_MIB = 30  # the interpreter, socket buffers, allocator arenas


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_junk_after_a_query_cannot_grow_the_question_cache(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    query = dns.message.make_query("flood.example.org", "A").to_wire()
    junk = bytes(range(256)) * 234  # 59,904 bytes: the packet stays under 60 KB
    before = rss_mib()
    peak = before
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.settimeout(2.0)
        for i in range(12_000):
            s.sendto(query + struct.pack("!I", i) + junk, ("127.0.0.1", srv.port))
            try:
                reply = s.recv(65535)
            except socket.timeout:
                continue
            answered += dns.message.from_wire(reply).rcode() == dns.rcode.NOERROR
            if i % 500 == 0:
                peak = max(peak, rss_mib())
    grown = max(peak, rss_mib()) - before
    assert answered >= 11_900  # the junk is ignored: each of them is answered as the query it holds
    assert grown < CACHE_BOUND_MIB + SLACK_MIB, f"RSS grew {grown:.0f} MiB"
    r = srv.query("after.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.additional
