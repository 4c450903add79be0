"""Reading the DNS wire format: one cursor over a message's bytes, strict about names.

Every reader of DNS messages in pydns (queries, upstream replies, ready answers, the
records cache and loadbalance look into) goes through ``Parser``, in the shape of
dnspython's: a position in the bytes and readers that move it on, raising ``WireError``
when the bytes do not hold what they should.

Names are read as RFC 1035 and miekg/dns have them:

- a label is 1 to 63 octets; the length-byte types 0x40 and 0x80 are reserved and refused;
- a name is at most 255 octets in wire form (length bytes and the root label included);
- a compression pointer leads strictly backwards: before where the name began, and each
  further pointer before the previous one's target; the labels it leads to must end before
  the part that pointed to them began (as dnspython checks).  Forward pointers, loops and
  overlaps are therefore impossible, and a name costs at most one pass over the message.

The helpers at the end walk names already known to be well formed (a ``Request.key``, a
name this server packed): label boundaries only, no checks, for the hot path.
"""

from __future__ import annotations

import struct

MAX_NAME = 255  # octets in wire form (RFC 1035 2.3.4)

RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength


class WireError(ValueError):
    """The bytes are not the well-formed DNS data they should be."""


class Parser:
    """A cursor over ``wire``; reads stop at ``end`` (a record's rdata, or the message's end).

    Compression pointers may lead anywhere before the name in the whole message, also from
    a parser restricted to one record's rdata (``restricted``).
    """

    __slots__ = ("wire", "current", "end", "_pointed")

    def __init__(self, wire: bytes, current: int = 0, end: int | None = None):
        self.wire = wire
        self.current = current
        self.end = len(wire) if end is None else end
        self._pointed: dict[int, tuple[int, int]] | None = None  # see skip_name

    def remaining(self) -> int:
        return self.end - self.current

    def _take(self, n: int) -> int:
        start = self.current
        if start + n > self.end:
            raise WireError("data runs past the end of the message")
        self.current = start + n
        return start

    def skip(self, n: int) -> None:
        self._take(n)

    def get_struct(self, st: struct.Struct) -> tuple:
        return st.unpack_from(self.wire, self._take(st.size))

    def restricted(self, n: int) -> "Parser":
        """A parser over the next ``n`` bytes (say, one rdata); this one moves past them."""
        start = self._take(n)
        return Parser(self.wire, start, start + n)

    # ---------------------------------------------------------------- names
    def get_labels(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        """The name at the cursor: its labels, each with the offset of its length byte, and
        the offsets its compression pointers led to.  The cursor moves past the name as it
        is written in place (up to and including its root label or first pointer)."""
        wire = self.wire
        pos = self.current
        limit = self.end
        labels: list[tuple[int, bytes]] = []
        targets: list[int] = []
        bound = pos  # the next pointer must lead before this
        size = 1  # the root label
        resume = -1
        while True:
            if pos >= limit:
                raise WireError("name runs past the end of the message")
            n = wire[pos]
            if n == 0:
                break
            kind = n & 0xC0
            if kind == 0:
                size += n + 1
                if size > MAX_NAME:
                    raise WireError("name longer than 255 octets")
                if pos + 1 + n > limit:
                    raise WireError("label runs past the end of the message")
                labels.append((pos, wire[pos + 1 : pos + 1 + n]))
                pos += n + 1
            elif kind == 0xC0:
                if pos + 2 > limit:
                    raise WireError("compression pointer runs past the end of the message")
                target = ((n & 0x3F) << 8) | wire[pos + 1]
                if target >= bound:
                    raise WireError("compression pointer does not point backwards")
                if resume < 0:
                    resume = pos + 2
                targets.append(target)
                # What the pointer leads to must end before the part that led there began.
                limit = bound
                bound = pos = target
            else:
                raise WireError(f"reserved label type 0x{kind:02x}")
        self.current = pos + 1 if resume < 0 else resume
        return labels, targets

    def get_name(self) -> bytes:
        """The name at the cursor in uncompressed wire form, its case kept."""
        start = self.current
        if not self.skip_name():  # written out in place: the bytes are the name
            return self.wire[start : self.current]
        self.current = start
        labels, _ = self.get_labels()
        return b"".join([bytes((len(label),)) + label for _, label in labels]) + b"\x00"

    def skip_name(self) -> bool:
        """Move past the name at the cursor, checked as ``get_labels`` checks it; whether it
        ends in a compression pointer.

        Records mostly name their owner with a pointer to the same few names: what a pointer
        target holds (where its first part ends, its length) is worked out once per parser,
        so walking thousands of records does not read the question's name thousands of times.
        """
        wire = self.wire
        pos = start = self.current
        limit = self.end
        size = 1  # the root label
        while True:
            if pos >= limit:
                raise WireError("name runs past the end of the message")
            n = wire[pos]
            if n == 0:
                self.current = pos + 1
                return False
            if n < 0x40:
                size += n + 1
                if size > MAX_NAME:
                    raise WireError("name longer than 255 octets")
                pos += n + 1
                continue
            if n < 0xC0:
                raise WireError(f"reserved label type 0x{n & 0xC0:02x}")
            if pos + 2 > limit:
                raise WireError("compression pointer runs past the end of the message")
            target = ((n & 0x3F) << 8) | wire[pos + 1]
            if target >= start:
                raise WireError("compression pointer does not point backwards")
            pointed = self._pointed
            if pointed is None:
                pointed = self._pointed = {}
            known = pointed.get(target)
            if known is None:
                there = Parser(wire, target)
                labels, _ = there.get_labels()
                known = pointed[target] = (there.current, sum(len(label) + 1 for _, label in labels))
            first_end, length = known
            if first_end > start:
                raise WireError("compression pointer leads into the name that uses it")
            if size + length > MAX_NAME:
                raise WireError("name longer than 255 octets")
            self.current = pos + 2
            return True

    # ---------------------------------------------------------------- records
    def get_record(self) -> tuple[int, int, int, int, int]:
        """Owner (skipped), then (start, type, class, TTL, rdlength); the cursor is left at
        the rdata, which is known to lie inside the message."""
        start = self.current
        self.skip_name()
        rtype, rclass, ttl, rdlen = self.get_struct(RR_FIXED)
        if self.current + rdlen > self.end:
            raise WireError("rdata runs past the end of the message")
        return start, rtype, rclass, ttl, rdlen

    def skip_record(self) -> int:
        """Move past one whole record; its type."""
        rtype, rdlen = self.get_record()[1::3]
        self.current += rdlen
        return rtype


# ---------------------------------------------------------------- well-formed names


def label_offsets(name: bytes) -> list[int]:
    """Where each label of a well-formed, uncompressed wire name starts (the root's excluded);
    a name without its root label (a leading part) works too."""
    out = []
    i = 0
    end = len(name)
    while i < end:
        n = name[i]
        if n == 0:
            break
        out.append(i)
        i += n + 1
    return out


def labels_of(name: bytes) -> list[bytes]:
    """The labels of a well-formed, uncompressed wire name (or a leading part of one)."""
    return [name[i + 1 : i + 1 + name[i]] for i in label_offsets(name)]


def presentation(name: bytes) -> str:
    """Text form of an uncompressed wire name as miekg/dns prints it ('.' for the root):
    special characters get a backslash, octets outside printable ASCII ``\\DDD``, so that
    a name cannot forge anything where it is shown (a log line, say)."""
    labels = labels_of(name)
    if not labels:
        return "."
    return "".join(_escape(label) + "." for label in labels)


_SPECIAL = frozenset(b".'@;()\" \\")
_PLAIN = bytes(b for b in range(0x21, 0x7F) if b not in _SPECIAL)  # shown as they are


def _escape(label: bytes) -> str:
    if not label.translate(None, _PLAIN):  # the usual label: nothing to escape
        return label.decode("ascii")
    out = []
    for b in label:
        if b in _SPECIAL:
            out.append("\\" + chr(b))
        elif b < 0x20 or b > 0x7E:
            out.append(f"\\{b:03d}")
        else:
            out.append(chr(b))
    return "".join(out)
