"""bufsize and chaos over real UDP/TCP: the buffer size upstream and in replies; CH TXT answers."""

from __future__ import annotations

import socket

import dns.rcode
import dns.rdataclass
import pytest

from pydns import __version__
from tests.plugin_cases import CapturingUpstream, ask, corefile, startup_error


@pytest.fixture
def capture():
    up = CapturingUpstream()
    yield up
    up.stop()


# (bufsize line, the client's EDNS0 size or None, what the upstream sees, what the reply advertises)
BUFSIZE_CASES = [
    ("bufsize", 4096, 1232, 1232),
    ("bufsize 1100", 4096, 1100, 1100),
    ("bufsize 1100", 1000, 1000, 1000),  # less than SIZE: left alone
    ("bufsize 512", 1232, 512, 512),
    ("bufsize", None, None, None),  # no EDNS0: none is added
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("line,client,upstream,reply_size", BUFSIZE_CASES)
def test_bufsize_caps_what_upstream_sees_and_the_reply(serve, capture, line, client, upstream, reply_size, tcp):
    srv = serve(corefile(f" {line}\n forward . 127.0.0.1:{capture.port} {{\n  prefer_udp\n }}"))
    kw = {"use_edns": 0, "payload": client} if client else {}
    reply = ask(srv, "up.example.org", tcp=tcp, **kw)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    seen = capture.queries[-1]
    assert (seen.payload if seen.edns >= 0 else None) == upstream
    assert (reply.payload if reply.edns >= 0 else None) == reply_size


def test_bufsize_truncates_replies_at_its_size(serve, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"10.0.{i // 250}.{i % 250 + 1} big.example.org\n" for i in range(100)))
    srv = serve(corefile(f" bufsize 600\n hosts {hosts} {{\n  reload 0\n }}"))
    reply = ask(srv, "big.example.org", payload=4096, use_edns=0)
    assert reply.flags & dns.flags.TC and reply.payload == 600
    assert len(reply.to_wire()) <= 600
    assert len(ask(srv, "big.example.org", tcp=True, use_edns=0, payload=4096).answer[0]) == 100


@pytest.mark.parametrize("body,line,message", [
    (" bufsize 5000", 3, "SIZE must be an integer from 512 to 4096, got '5000'"),
    (" bufsize 511", 3, "got '511'"),
    (" bufsize abc123", 3, "got 'abc123'"),
    (" bufsize 512 512", 3, "wrong argument count"),
    (" bufsize {\n  size 512\n }", 4, "unknown property 'size'"),
])
def test_bufsize_errors(tmp_path, body, line, message):
    startup_error(tmp_path, body, line, message)


def chaos_texts(reply) -> list[str]:
    return [b.decode() for rrset in reply.answer for rr in rrset for b in rr.strings]


# (chaos line, query name, answers)
CHAOS_CASES = [
    ("chaos", "version.bind", [f"pydns-{__version__}"]),
    ("chaos CoreDNS-001", "version.bind", ["CoreDNS-001"]),
    ("chaos CoreDNS-001", "VERSION.Server", ["CoreDNS-001"]),
    ("chaos CoreDNS-001 Miek Miek", "authors.bind", ["Miek"]),  # the authors are a set
    ("chaos CoreDNS-001", "hostname.bind", [socket.gethostname()[:255]]),
    ("chaos CoreDNS-001", "id.server", [socket.gethostname()[:255]]),
    ("chaos " + "v" * 300, "version.bind", ["v" * 255]),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("line,qname,texts", CHAOS_CASES)
def test_chaos_answers(serve, line, qname, texts, tcp):
    srv = serve(corefile(f" {line}"))
    reply = ask(srv, qname, "TXT", "CH", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.question[0].name.to_text() == qname + "."
    assert reply.answer[0].rdclass == dns.rdataclass.CH and reply.answer[0].ttl == 0
    assert chaos_texts(reply) == texts


def test_chaos_authors_come_in_every_order(serve):
    srv = serve(corefile(" chaos v1 ann bob cid dan"))
    seen = {tuple(chaos_texts(ask(srv, "authors.bind", "TXT", "CH"))) for _ in range(60)}
    assert all(sorted(order) == ["ann", "bob", "cid", "dan"] for order in seen) and len(seen) > 1


@pytest.mark.parametrize("qname,qtype,qclass", [
    ("version.bind", "TXT", "IN"),  # not class CH
    ("version.bind", "A", "CH"),  # not TXT
    ("other.bind", "TXT", "CH"),  # not a name chaos knows
])
def test_chaos_passes_other_queries_on(serve, qname, qtype, qclass):
    srv = serve(corefile(" chaos v1\n whoami"))
    reply = ask(srv, qname, qtype, qclass)
    assert not reply.answer and reply.additional  # whoami answered


def test_chaos_takes_no_block(tmp_path):
    startup_error(tmp_path, " chaos v1 {\n  authors a\n }", 4, "unknown property 'authors'")
