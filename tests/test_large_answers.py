"""Answers too big for the client's transport: whole over TCP up to 65,535 bytes, truncated
to the whole records that fit (with TC) beyond that, and over UDP beyond 512 bytes or the
EDNS0 size; never dropped.  A kubeadm-like Corefile (kubernetes, then loadbalance), headless
services with thousands of endpoints, asked with dnspython and dig.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import struct
import subprocess

import dns.flags
import dns.message
import dns.rcode
import pytest
import yaml

from pydns.testing import ServerThread
from tests.kube_cluster import endpoint, endpoint_slice, headless, namespace

pytestmark = pytest.mark.timeout(120)

BIG, HUGE = 3000, 5000  # A records of 16 bytes: 48 KB fits in a TCP message, 80 KB does not


def addresses(first: str, count: int) -> list[str]:
    base = ipaddress.ip_address(first)
    return [str(base + i) for i in range(count)]


def service_with(name: str, ips: list[str]) -> list[dict]:
    slices = [endpoint_slice(f"{name}-{n}", name, [endpoint(ip) for ip in ips[n : n + 1000]])
              for n in range(0, len(ips), 1000)]
    return [headless(name), *slices]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "cluster.yaml"
    objects = [namespace("testns"), *service_with("big", addresses("10.1.0.1", BIG)),
               *service_with("huge", addresses("10.2.0.1", HUGE))]
    path.write_text(yaml.safe_dump_all(objects))
    srv = ServerThread(f".:0 {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  manifests {path}\n }}\n"
                       f" loadbalance\n}}\n").start()
    yield srv
    srv.stop()


def name(svc: str) -> str:
    return f"{svc}.testns.svc.cluster.local."


def ask(srv, svc: str, tcp: bool = False, **kw) -> bytes:
    """The raw reply to an A query for ``svc`` over UDP or TCP."""
    query = dns.message.make_query(name(svc), "A", **kw).to_wire()
    host, port = srv.address
    if tcp:
        with socket.create_connection((host, port), timeout=10) as c:
            c.sendall(struct.pack("!H", len(query)) + query)
            (n,) = struct.unpack("!H", _read(c, 2))
            return _read(c, n)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(query, (host, port))
        return s.recv(65535)


def _read(c: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = c.recv(n - len(out))
        assert chunk, "the server closed the connection"
        out += chunk
    return out


def a_records(msg: dns.message.Message) -> list[str]:
    return [r.address for rrset in msg.answer for r in rrset]


def test_tcp_gives_the_whole_answer_up_to_65535_bytes(server):
    wire = ask(server, "big", tcp=True)
    msg = dns.message.from_wire(wire)
    assert not msg.flags & dns.flags.TC and 48_000 < len(wire) <= 65_535
    assert sorted(a_records(msg), key=ipaddress.ip_address) == addresses("10.1.0.1", BIG)


def test_dig_over_tcp_gets_every_endpoint(server):
    assert shutil.which("dig")
    host, port = server.address
    out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+tcp", name("big"), "A"], capture_output=True,
                         text=True, timeout=30).stdout
    flags = re.search(r";; flags: ([a-z ]+);", out).group(1).split()
    assert "status: NOERROR" in out and f"ANSWER: {BIG}," in out and "tc" not in flags


def test_an_answer_too_big_even_for_tcp_is_cut_to_whole_records_with_tc(server):
    wire = ask(server, "huge", tcp=True)
    msg = dns.message.from_wire(wire)
    kept = a_records(msg)
    assert msg.flags & dns.flags.TC and msg.rcode() == dns.rcode.NOERROR
    assert len(wire) <= 65_535 and len(wire) + 16 > 65_535  # as many 16-byte records as fit
    assert len(set(kept)) == len(kept) and set(kept) <= set(addresses("10.2.0.1", HUGE))


def test_plain_udp_is_truncated_to_512_bytes(server):
    wire = ask(server, "big", use_edns=False)
    msg = dns.message.from_wire(wire)
    assert msg.flags & dns.flags.TC and len(wire) <= 512 and 0 < len(a_records(msg)) < 40


def test_edns_65535_over_udp_is_answered_whole_or_truncated_never_dropped(server):
    whole = ask(server, "big", use_edns=0, payload=65535)
    msg = dns.message.from_wire(whole)
    assert not msg.flags & dns.flags.TC and len(a_records(msg)) == BIG
    cut = ask(server, "huge", use_edns=0, payload=65535)  # 80 KB: more than a UDP datagram carries
    msg = dns.message.from_wire(cut)
    assert msg.flags & dns.flags.TC and msg.edns == 0
    assert len(cut) <= 65_507 and len(cut) + 16 > 65_507  # the largest IPv4 UDP payload, OPT included
    assert len(set(a_records(msg))) == len(a_records(msg))


def test_truncated_answers_still_come_from_a_full_shuffle(server):
    """loadbalance draws only the addresses that can fit, but from all of them, at random;
    ready draws are reused a while and renewed as queries come, so over a few hundred
    queries the answers spread over the whole service."""
    answers, seen = set(), set()
    for _ in range(400):
        msg = dns.message.from_wire(ask(server, "big", use_edns=False))
        kept = a_records(msg)
        # header 12, question 34, 29 records of 16 bytes: 510 bytes
        assert msg.flags & dns.flags.TC and len(set(kept)) == len(kept) == 29
        answers.add(tuple(kept))
        seen.update(kept)
    assert len(answers) > 40  # 16 ready draws, one renewed every 8 queries or so
    assert len(seen) > 1000 and max(map(ipaddress.ip_address, seen)) > ipaddress.ip_address("10.1.10.0")
