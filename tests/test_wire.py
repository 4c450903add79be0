"""The server core on the wire: routing, EDNS, TCP pipelining, malformed packets, crashes."""

from __future__ import annotations

import random
import socket
import struct
import time

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from pydns.plugin import Plugin
from pydns.testing import plugin_named
from tests.conftest import free_port


def udp_raw(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def whoami_addr(msg: dns.message.Message):
    rrsets = {rr.rdtype: rr for rr in msg.additional}
    return rrsets[dns.rdatatype.A][0].address, rrsets[dns.rdatatype.SRV]


def test_udp_and_tcp_answers(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    for tcp in (False, True):
        r = srv.query("example.org", "A", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR
        assert r.flags & dns.flags.AA and r.flags & dns.flags.QR
        addr, srv_rr = whoami_addr(r)
        assert addr == "127.0.0.1"
        assert srv_rr.name.to_text() == ("_tcp." if tcp else "_udp.") + "example.org."


def test_two_blocks_on_two_ports_and_two_zones_on_one_port(serve):
    p1, p2 = free_port(), free_port()
    srv = serve(f"""
a.test:{p1} {{
    bind 127.0.0.1
    whoami
}}
b.test:{p1} sub.a.test:{p1} {{
    bind 127.0.0.1
    errors
}}
.:{p2} {{
    bind 127.0.0.1
    whoami
}}
""")
    def ask(name, port):
        return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)

    assert ask("x.a.test", p1).rcode() == dns.rcode.NOERROR and ask("x.a.test", p1).additional  # whoami block
    # The most specific zone wins: sub.a.test belongs to the errors-only block, which has no answer.
    assert ask("x.sub.a.test", p1).rcode() == dns.rcode.SERVFAIL
    assert ask("b.test", p1).rcode() == dns.rcode.SERVFAIL
    assert ask("elsewhere.org", p1).rcode() == dns.rcode.REFUSED  # no zone on that port
    assert ask("elsewhere.org", p2).rcode() == dns.rcode.NOERROR  # the root zone on the other port


def test_question_case_is_preserved(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    r = srv.query("WwW.ExAmPlE.oRg", "A")
    assert r.question[0].name.to_text() == "WwW.ExAmPlE.oRg."
    assert {rr.name.to_text() for rr in r.additional} == {"WwW.ExAmPlE.oRg.", "_udp.WwW.ExAmPlE.oRg."}


def test_edns_is_echoed_with_do_bit(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    r = srv.query("example.org", "A", use_edns=0, payload=1400, want_dnssec=True)
    assert r.edns == 0 and r.payload == 1400
    assert r.ednsflags & dns.flags.DO
    r = srv.query("example.org", "A", use_edns=0, payload=4096)
    assert r.payload == 4096 and not r.ednsflags & dns.flags.DO
    r = srv.query("example.org", "A", use_edns=False)
    assert r.edns == -1  # no OPT when the client sent none


def test_unknown_edns_version_gets_badvers(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    r = srv.query("example.org", "A", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0


def test_opcodes(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    for opcode in (dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.UPDATE):
        q = dns.message.make_query("example.org", "SOA")
        q.set_opcode(opcode)
        r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=2)
        assert r.rcode() == dns.rcode.NOTIMP, opcode
        assert r.opcode() == opcode
    q = dns.message.make_query("example.org", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=2)
    assert r.opcode() == dns.opcode.NOTIFY and r.additional  # handed to the plugins


def test_formerr_for_bad_questions(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    good = dns.message.make_query("example.org", "A").to_wire()
    two_questions = good[:4] + struct.pack("!H", 2) + good[6:] + good[12:]
    no_question = good[:4] + struct.pack("!H", 0) + good[6:12]
    cut = good[:-3]
    pointer = good[:12] + b"\xc0\x0c" + good[-4:]
    for payload in (two_questions, no_question, cut, pointer):
        reply = udp_raw(srv.port, payload)
        assert reply is not None
        r = dns.message.from_wire(reply, question_only=True)
        assert r.rcode() == dns.rcode.FORMERR
        assert r.id == struct.unpack("!H", good[:2])[0]
    # Too short to have a header, or a response: dropped, no reply.
    assert udp_raw(srv.port, b"\x01\x02\x03", timeout=0.3) is None
    response_bit = good[:2] + bytes([good[2] | 0x80]) + good[3:]
    assert udp_raw(srv.port, response_bit, timeout=0.3) is None
    assert srv.query("example.org", "A").rcode() == dns.rcode.NOERROR


def tcp_exchange(port: int, payloads: list[bytes], expect: int, timeout: float = 3.0) -> list[bytes]:
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(struct.pack("!H", len(p)) + p for p in payloads))
        buf = b""
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            chunk = s.recv(65535)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                out.append(buf[2 : 2 + n])
                buf = buf[2 + n :]
    return out


def test_tcp_pipelining(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    queries = [dns.message.make_query(f"q{i}.example.org", "A") for i in range(20)]
    replies = tcp_exchange(srv.port, [q.to_wire() for q in queries], expect=20)
    assert len(replies) == 20
    by_id = {dns.message.from_wire(r).id: dns.message.from_wire(r) for r in replies}
    for q in queries:
        assert by_id[q.id].question[0].name == q.question[0].name


def test_tcp_malformed_closes_or_formerrs(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    good = dns.message.make_query("example.org", "A").to_wire()
    two = good[:4] + struct.pack("!H", 2) + good[6:] + good[12:]
    replies = tcp_exchange(srv.port, [two, good], expect=2)
    assert dns.message.from_wire(replies[0], question_only=True).rcode() == dns.rcode.FORMERR
    assert dns.message.from_wire(replies[1]).rcode() == dns.rcode.NOERROR


def test_random_and_truncated_packets_leave_the_server_answering(serve):
    from pydns import stats

    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    panics = stats.panics
    rng = random.Random(1234)
    good = dns.message.make_query("fuzz.example.org", "A", use_edns=0).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(3000):
            kind = i % 3
            if kind == 0:
                payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
            elif kind == 1:
                payload = good[: rng.randint(0, len(good))]
            else:
                mutated = bytearray(good)
                for _ in range(rng.randint(1, 4)):
                    mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
                payload = bytes(mutated)
            s.sendto(payload, ("127.0.0.1", srv.port))
    for _ in range(30):  # random TCP garbage on fresh connections
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as c:
            c.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
    for tcp in (False, True):
        # The flood may still fill the socket's receive buffer, where the kernel drops new
        # datagrams; like any DNS client, retry.
        for attempt in range(5):
            try:
                r = srv.query("after.example.org", "A", tcp=tcp, timeout=1.0)
                break
            except dns.exception.Timeout:
                assert attempt < 4, "the server stopped answering after the flood"
        assert r.rcode() == dns.rcode.NOERROR and r.additional
    assert stats.panics == panics  # malformed input is refused by the parser, never a crash


class _Crash(Plugin):
    """Raises for names starting with 'crash'; everything else goes on."""

    def serve(self, req):
        if req.lname.startswith("crash"):
            raise RuntimeError("boom")
        return self.next.serve(req)


@pytest.fixture
def crash_plugin():
    with plugin_named("erratic", _Crash):
        yield


def test_a_crashing_plugin_gives_servfail_and_the_server_lives(serve, crash_plugin, caplog):
    from pydns import stats

    srv = serve(".:0 {\n bind 127.0.0.1\n erratic\n whoami\n}\n")
    before = stats.panics
    r = srv.query("crash.example.org", "A")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert stats.panics == before + 1
    assert "boom" in caplog.text
    assert srv.query("fine.example.org", "A").rcode() == dns.rcode.NOERROR


def test_dig_gets_an_answer(serve):
    import shutil
    import subprocess

    assert shutil.which("dig"), "dig is installed by .ci/run (dnsutils)"
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    for extra in ([], ["+tcp"]):
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(srv.port), "Dig.Example.org", "A", "+norecurse", *extra],
                             capture_output=True, text=True, timeout=10).stdout
        assert "status: NOERROR" in out
        assert "flags: qr aa;" in out
        assert "Dig.Example.org.\t0\tIN\tA\t127.0.0.1" in out


def test_idle_tcp_connections_are_closed(serve, monkeypatch):
    import pydns.tcp

    monkeypatch.setattr(pydns.tcp, "TCP_IDLE_TIMEOUT", 0.5)
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    query = dns.message.make_query("example.org", "A").to_wire()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        (n,) = struct.unpack("!H", s.recv(2))
        while n:
            n -= len(s.recv(n))
        started = time.monotonic()
        assert s.recv(10) == b""  # the server hung up on the client silent since its query
        assert time.monotonic() - started < 2


def test_tcp_connection_cap(serve, monkeypatch):
    import pydns.tcp

    monkeypatch.setattr(pydns.tcp, "TCP_MAX_CONNECTIONS", 3)
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=3) for _ in range(3)]
    try:
        query = dns.message.make_query("example.org", "A").to_wire()
        try:
            refused = tcp_exchange(srv.port, [query], expect=1)
        except ConnectionResetError:
            refused = []
        assert refused == []  # over the cap: closed at once
        held[0].close()
        time.sleep(0.2)
        assert len(tcp_exchange(srv.port, [query], expect=1)) == 1  # a slot freed up
    finally:
        for s in held:
            s.close()


def test_answers_too_big_for_udp_are_truncated_and_whole_over_tcp(serve):
    entries = "\n".join(f"        10.1.{i // 250}.{i % 250 + 1} big.example.org" for i in range(60))
    srv = serve(f".:0 {{\n    bind 127.0.0.1\n    hosts {{\n{entries}\n    }}\n}}\n")
    plain = srv.query("big.example.org", "A", use_edns=False)
    assert plain.flags & dns.flags.TC
    kept = len(plain.answer[0]) if plain.answer else 0
    assert 0 < kept < 60  # as many whole records as fit in 512 bytes
    assert len(plain.to_wire()) <= 512
    edns_small = srv.query("big.example.org", "A", use_edns=0, payload=700)
    assert edns_small.flags & dns.flags.TC and edns_small.payload == 700
    assert len(edns_small.answer[0]) > kept  # a larger buffer holds more
    big = srv.query("big.example.org", "A", use_edns=0, payload=4096)
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 60
    full = srv.query("big.example.org", "A", tcp=True, use_edns=False)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 60
