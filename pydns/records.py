"""Reading the resource records inside an ``Answer`` body (used by cache and loadbalance).

An ``Answer`` body is the packed records that follow a question.  Its compression pointers
are offsets into the whole message, so the body is read behind a stand-in header and the
question it was packed for (any question of the same length gives the same offsets):
``message(answer, question)``.  ``walk`` then lists each record's place, type and TTL
offset; ``read_name`` decodes a (possibly compressed) name and reports every offset a
pointer led to, which is what decides whether records can be moved around safely.
"""

from __future__ import annotations

import struct

from pydns.parser import RR_FIXED as _FIXED, Parser, WireError

_H = struct.Struct("!H")
_AT_QUESTION = b"\xc0\x0c"  # a pointer to the question's name, which starts at offset 12

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_MX = 1, 2, 5, 6, 12, 15
TYPE_AAAA, TYPE_SRV, TYPE_OPT, TYPE_RRSIG = 28, 33, 41, 46

# Where names sit inside the rdata of the types whose names may be compressed:
# (bytes before the first name, how many names).  SOA's 20 trailing bytes follow its names.
NAME_FIELDS = {
    2: (0, 1), 3: (0, 1), 4: (0, 1), 5: (0, 1), 6: (0, 2), 7: (0, 1), 8: (0, 1), 9: (0, 1),
    12: (0, 1), 14: (0, 2), 15: (2, 1), 17: (0, 2), 18: (2, 1), 21: (2, 1), 26: (2, 2),
    33: (6, 1), 36: (2, 1), 39: (0, 1),
}


class Record:
    """One record's place in a message: absolute offsets, type, class and TTL."""

    __slots__ = ("start", "end", "rtype", "rclass", "ttl", "ttl_at", "rdata", "section")

    def __init__(self, start: int, end: int, rtype: int, rclass: int, ttl: int, ttl_at: int, rdata: int,
                 section: int):
        self.start, self.end, self.rtype, self.rclass = start, end, rtype, rclass
        self.ttl, self.ttl_at, self.rdata, self.section = ttl, ttl_at, rdata, section


def message(body: bytes, question: bytes) -> bytes:
    """A stand-in message around ``body``: zero header, then ``question`` (name, type, class)."""
    return bytes(12) + question + body


def read_name(msg: bytes, pos: int) -> tuple[list[tuple[bytes, int]], int, list[int]]:
    """Labels (each with the offset of its length byte), the end of the name in place, pointer targets."""
    p = Parser(msg, pos)
    labels, targets = p.get_labels()
    return [(label, at) for at, label in labels], p.current, targets


def wire_name(labels: list[tuple[bytes, int]]) -> bytes:
    """Lower-cased wire form of decoded labels (comparable with ``Request.key``)."""
    return b"".join(bytes((len(label),)) + label for label, _ in labels).lower() + b"\x00"


def walk(msg: bytes, pos: int, counts: tuple[int, int, int]) -> list[Record]:
    """The records from ``pos`` on: ``counts`` answer, authority and additional records."""
    out: list[Record] = []
    p = Parser(msg, pos)
    for section, count in enumerate(counts):
        for _ in range(count):
            start, rtype, rclass, ttl, rdlen = p.get_record()
            rdata = p.current
            p.skip(rdlen)
            out.append(Record(start, p.current, rtype, rclass, ttl, rdata - 6, rdata, section))
    return out


def names_of(msg: bytes, rec: Record) -> list[int]:
    """Offsets of the owner name and of every name inside the record's rdata."""
    found = [rec.start]
    layout = NAME_FIELDS.get(rec.rtype)
    if layout is not None:
        p = Parser(msg, rec.rdata + layout[0], rec.end)
        for _ in range(layout[1]):
            if p.remaining() <= 0:
                break
            found.append(p.current)
            p.skip_name()
    return found


def pointer_targets(msg: bytes, rec: Record) -> list[int]:
    """Every offset that a compression pointer in this record leads to (chains followed)."""
    if rec.rtype not in NAME_FIELDS and msg[rec.start : rec.start + 2] == _AT_QUESTION:
        return [12]  # the common record: owned by the question's name, no names inside
    targets: list[int] = []
    for pos in names_of(msg, rec):
        targets.extend(read_name(msg, pos)[2])
    return targets


def expand(msg: bytes, records: list[Record], keep_below: int) -> bytes:
    """The records re-packed with every pointer at or above ``keep_below`` spelled out.

    Pointers into the question (below ``keep_below``) stay, so the result still depends on
    nothing but the question's length; records can then be moved without breaking names.
    """
    out = bytearray()
    for rec in records:
        owner_labels, owner_end, _ = read_name(msg, rec.start)
        out += _encode(owner_labels, keep_below)
        layout = NAME_FIELDS.get(rec.rtype)
        if layout is None:
            rdata = msg[rec.rdata : rec.end]
        else:
            rdata = bytearray(msg[rec.rdata : rec.rdata + layout[0]])
            p = Parser(msg, rec.rdata + layout[0], rec.end)
            for _ in range(layout[1]):
                labels, _ = p.get_labels()
                rdata += _encode([(label, at) for at, label in labels], keep_below)
            rdata += msg[p.current : rec.end]
        out += _FIXED.pack(rec.rtype, rec.rclass, rec.ttl, len(rdata))
        out += rdata
        if owner_end + 10 != rec.rdata:
            raise WireError("record header misplaced")
    return bytes(out)


def _encode(labels: list[tuple[bytes, int]], keep_below: int) -> bytes:
    out = bytearray()
    for label, at in labels:
        if at < keep_below:
            out += _H.pack(0xC000 | at)
            return bytes(out)
        out.append(len(label))
        out += label
    out.append(0)
    return bytes(out)
