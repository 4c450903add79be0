"""The wire parser: strict names, and what a server built on it answers to hostile packets.

Names follow RFC 1035 as miekg/dns reads them: pointers lead only backwards (so no forward
pointers and no loops), the label types 0x40 and 0x80 are refused, and a name is at most
255 octets.  Over real sockets such a query gets FORMERR, never an answer or a crash.
"""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import pytest

from pydns.parser import Parser, WireError, presentation
from tests.test_wire import udp_raw

HEADER = struct.Struct("!HHHHHH")


def name_at(wire: bytes, pos: int) -> bytes:
    return Parser(wire, pos).get_name()


# ---------------------------------------------------------------- names


def test_names_with_backward_pointers_are_read_whole():
    wire = b"\x07example\x03org\x00" + b"\x03www\xc0\x00"
    assert name_at(wire, 13) == b"\x03www\x07example\x03org\x00"
    p = Parser(wire, 13)
    labels, targets = p.get_labels()
    assert [label for _, label in labels] == [b"www", b"example", b"org"] and targets == [0]
    assert p.current == len(wire)  # the cursor stops after the pointer, not where it led


@pytest.mark.parametrize("wire, pos, reason", [
    (b"\xc0\x02\x03www\x00", 0, "forward pointer"),
    (b"\x03www\xc0\x04", 0, "pointer into its own name"),
    (b"\xc0\x00", 0, "pointer to itself"),
    (b"\x01a\xc0\x04\xc0\x00", 4, "two pointers leading to each other"),
    (b"\x05a\x01b\xc0\x00\x00", 2, "a pointer to a label that overlaps the name pointing to it"),
    (b"\x41" + b"a" * 65 + b"\x00", 0, "label type 0x40 (a length over 63)"),
    (b"\x81a\x00", 0, "label type 0x80"),
    (b"\x03www", 0, "a name without its root label"),
    (b"\x05ab", 0, "a label past the end"),
    (b"\xc0", 0, "half a pointer"),
    (b"", 0, "nothing at all"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_names_are_refused(wire, pos, reason):
    with pytest.raises(WireError):
        name_at(wire, pos)


def test_names_over_255_octets_are_refused_also_when_pointers_make_them():
    longest = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"  # exactly 255 octets
    assert len(name_at(longest, 0)) == 255
    with pytest.raises(WireError):
        name_at((b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"b" * 62 + b"\x00", 0)
    # 200 octets, then a name of 60 labels pointing at it: 320 octets in all
    base = (b"\x3f" + b"a" * 63) * 3 + b"\x03abc\x00"
    with pytest.raises(WireError):
        name_at(base + b"\x3a" + b"c" * 58 + b"\xc0\x00", len(base))


def test_rdata_is_read_inside_its_record_and_pointers_still_reach_back():
    wire = b"\x03org\x00" + b"\x01a\xc0\x00" + b"\xff"
    p = Parser(wire, 5)
    rdata = p.restricted(4)
    assert rdata.get_name() == b"\x01a\x03org\x00" and rdata.remaining() == 0
    assert p.current == 9
    with pytest.raises(WireError):
        Parser(wire, 5, 7).get_name()  # the name does not end inside the range


def test_presentation_escapes_as_miekg_dns_prints():
    assert presentation(b"\x00") == "."
    assert presentation(b"\x03Www\x07example\x03org\x00") == "Www.example.org."
    assert presentation(b"\x03a.b\x01\\\x00") == "a\\.b.\\\\."
    assert presentation(b"\x05a\nb\x1bc\x00") == "a\\010b\\027c."
    assert presentation(b"\x06 @;()\"\x01'\x00") == "\\ \\@\\;\\(\\)\\\".\\'."
    assert presentation(b"\x02\x7f\xff\x00") == "\\127\\255."


# ---------------------------------------------------------------- over the wire


def query(name: bytes, ar: int = 0, records: bytes = b"", qtype: int = 1, qid: int = 0x4242) -> bytes:
    return HEADER.pack(qid, 0x0100, 1, 0, 0, ar) + name + struct.pack("!HH", qtype, 1) + records


def opt(owner: bytes = b"\x00", size: int = 1232, rdata: bytes = b"") -> bytes:
    return owner + struct.pack("!HHIH", 41, size, 0, len(rdata)) + rdata


def rcode_of(reply: bytes) -> int:
    return HEADER.unpack_from(reply)[1] & 0xF


NAME = b"\x03www\x07example\x03org\x00"
BAD_QUERIES = {
    "reserved label type 0x40 in the question": query(b"\x41" + b"a" * 65 + b"\x00"),
    "reserved label type 0x80 in the question": query(b"\x81a\x00"),
    "question name over 255 octets": query((b"\x3f" + b"a" * 63) * 5 + b"\x00"),
    "compressed question name": query(b"\x03www\xc0\x00"),
    "forward pointer in a record's owner": query(NAME, 1, b"\xc0\x30" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
                                                 + bytes(30)),
    "OPT owner pointing to itself": query(NAME, 1, opt(owner=struct.pack("!H", 0xC000 | (12 + len(NAME) + 4)))),
    "OPT owner pointing to a root byte": query(NAME, 1, opt(owner=b"\xc0\x1d")),
    "OPT owned by a name other than the root": query(NAME, 1, opt(owner=b"\x01a\x00")),
    "OPT option running past the rdata": query(NAME, 1, opt(rdata=struct.pack("!HH", 10, 8) + b"ab")),
    "OPT rdata ending inside an option header": query(NAME, 1, opt(rdata=struct.pack("!HH", 10, 2) + b"ab\x00")),
    "two OPT records": query(NAME, 2, opt() + opt()),
    "record running past the packet": query(NAME, 1, opt(rdata=b"")[:-2] + b"\x00\x09"),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_hostile_queries_get_formerr_and_the_server_goes_on(serve, case):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    reply = udp_raw(srv.port, BAD_QUERIES[case])
    assert reply is not None, "miekg/dns answers FORMERR here; so does pydns"
    assert HEADER.unpack_from(reply)[0] == 0x4242 and rcode_of(reply) == dns.rcode.FORMERR
    assert HEADER.unpack_from(reply)[2:] == (0, 0, 0, 0)
    assert srv.query("after.example.org", "A").rcode() == dns.rcode.NOERROR


def test_a_well_formed_opt_with_options_is_accepted_and_echoed(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    cookie = struct.pack("!HH", 10, 8) + b"\x01" * 8
    reply = dns.message.from_wire(udp_raw(srv.port, query(NAME, 1, opt(rdata=cookie + struct.pack("!HH", 12, 0)))))
    assert reply.rcode() == dns.rcode.NOERROR and reply.edns == 0 and reply.payload == 1232


def test_bytes_after_the_last_record_are_ignored_as_miekg_dns_does(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    for tail in (b"\x00", b"junk" * 100):
        for records, ar in ((b"", 0), (opt(), 1)):
            reply = dns.message.from_wire(udp_raw(srv.port, query(NAME, ar, records) + tail))
            assert reply.rcode() == dns.rcode.NOERROR and reply.id == 0x4242
            assert reply.question[0].name.to_text() == "www.example.org."
            assert (reply.edns == 0) == bool(ar)


def test_tcp_gets_formerr_for_a_reserved_label_type(serve):
    srv = serve(".:0 {\n bind 127.0.0.1\n whoami\n}\n")
    bad = query(b"\x81a\x00")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as c:
        c.sendall(struct.pack("!H", len(bad)) + bad)
        head = c.recv(2)
        (n,) = struct.unpack("!H", head)
        reply = b""
        while len(reply) < n:
            reply += c.recv(n - len(reply))
    assert rcode_of(reply) == dns.rcode.FORMERR
