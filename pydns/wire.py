"""The DNS wire format on the hot path: parsing queries and splicing ready answers.

A query is read with a few ``struct`` calls, never with dnslib: the question is located,
its name lower-cased as wire bytes (the lookup key), and an EDNS0 OPT record, if any, read.

An ``Answer`` is a response kept as ready wire bytes: its flags and section counts, and the
packed resource records that follow the question.  Records may point (DNS compression) into
the question at offset 12; since every query for the same name has a question of the same
length, the bytes stay valid for any query whose name differs only in letter case.  Per
query the header is written from the query's ID and RD/CD bits, the query's own question is
copied in (which preserves its case), and an OPT record is appended when the client sent
one.  Building answers (dnslib) happens on the slow paths: when data changes, not per packet.
"""

from __future__ import annotations

import struct

from dnslib import CLASS, OPCODE, QTYPE, RCODE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

_HEADER = struct.Struct("!HHHHHH")
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HHBBHH")  # type, class=udp size, ext rcode, version, flags, rdlen
_RR_FIXED = struct.Struct("!HHHHH")  # type, class, ttl (high, low), rdlength

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
OPCODE_MASK = 0x7800
TYPE_OPT = 41

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

RCODE_NAMES = {int(k): str(v) for k, v in RCODE.forward.items()}
RCODE_NAMES[BADVERS] = "BADVERS"


def type_name(qtype: int) -> str:
    try:
        return QTYPE[qtype]
    except Exception:  # dnslib raises on unknown values
        return f"TYPE{qtype}"


def class_name(qclass: int) -> str:
    try:
        return CLASS[qclass]
    except Exception:
        return f"CLASS{qclass}"


class MalformedQuery(Exception):
    """The packet cannot be read as a query; ``reply`` is a FORMERR to send, or None to drop."""

    def __init__(self, reason: str, reply: bytes | None = None):
        super().__init__(reason)
        self.reply = reply


def name_from_wire(wire: bytes) -> str:
    """Dotted text form of an uncompressed wire name, keeping its case ('.' for the root)."""
    labels = []
    i = 0
    while True:
        n = wire[i]
        if n == 0:
            break
        label = wire[i + 1 : i + 1 + n].decode("latin-1")
        if "." in label or "\\" in label:
            label = label.replace("\\", "\\\\").replace(".", "\\.")
        labels.append(label)
        i += n + 1
    return ".".join(labels) + "." if labels else "."


def label_from_wire(wire: bytes) -> DNSLabel:
    """A dnslib name from wire bytes: labels stay bytes, so any octet is allowed."""
    labels = []
    i = 0
    while wire[i]:
        n = wire[i]
        labels.append(wire[i + 1 : i + 1 + n])
        i += n + 1
    return DNSLabel(labels)


_PARSED: dict[bytes, tuple] = {}
_PARSED_MAX = 10000


class Request:
    """One query as the chain sees it.  Cheap to make: text forms are computed on demand."""

    # Rarely set per query: class-level defaults save assigning them on the hot path.
    server = None
    zone = None
    rendered = None
    _rendered_for = None
    _name = None
    _lname = None

    def __init__(self, data: bytes, proto: str = "udp", remote=None, local=None):
        self.data = data
        self.proto = proto
        self.remote = remote
        self.local = local
        # Clients ask the same questions again and again: everything but the ID parses the same.
        parsed = _PARSED.get(data[2:])
        if parsed is None:
            parsed = self._parse(data)
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[data[2:]] = parsed
        (self.flags, self.opcode, self.qend, self.qwire, self.key, self.qtype, self.qclass,
         self.edns_size, self.do, self.badvers, self.question, self.echo) = parsed

    def _parse(self, data: bytes) -> tuple:
        if len(data) < 12:
            raise MalformedQuery("short header")
        _id, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
        if flags & QR:
            raise MalformedQuery("a response, not a query")
        if qd != 1:
            raise MalformedQuery(f"{qd} questions", _formerr_header(data))
        end = len(data)
        i = 12
        try:
            while True:
                n = data[i]
                if n == 0:
                    break
                if n & 0xC0:
                    raise MalformedQuery("compressed or extended label in question", _formerr_header(data))
                i += n + 1
            qend = i + 1
            if qend + 4 > end or qend - 12 > 255:
                raise MalformedQuery("question runs past the packet", _formerr_header(data))
        except IndexError:
            raise MalformedQuery("question runs past the packet", _formerr_header(data)) from None
        qwire = data[12:qend]
        qtype, qclass = _HH.unpack_from(data, qend)
        edns_size, do, badvers = 0, False, False  # edns_size 0: the client sent no OPT record
        if ar or an or ns:
            edns_size, do, badvers = self._read_edns(data, qend + 4, an + ns, ar)
        # ``question`` (as sent, case kept) and ``echo`` (the flag bits a reply copies) are
        # what every reply splices in: worked out once per distinct question.
        return (flags, (flags & OPCODE_MASK) >> 11, qend, qwire, qwire.lower(), qtype, qclass, edns_size, do, badvers,
                data[12 : qend + 4], flags & (RD | CD | OPCODE_MASK))

    @staticmethod
    def _read_edns(data: bytes, pos: int, skip: int, ar: int) -> tuple:
        """(EDNS buffer size or 0, DO bit, unsupported EDNS version) from the records after the question."""
        edns_size, do, badvers = 0, False, False
        try:
            for index in range(skip + ar):
                pos = _skip_name(data, pos)
                rtype, rclass, ttl_hi, ttl_lo, rdlen = _RR_FIXED.unpack_from(data, pos)
                if index >= skip and rtype == TYPE_OPT:
                    if edns_size:
                        raise MalformedQuery("more than one OPT record", _formerr_header(data))
                    edns_size = max(rclass, 512)
                    do = bool(ttl_lo & 0x8000)
                    badvers = bool(ttl_hi & 0xFF)  # an EDNS version other than 0
                pos += 10 + rdlen
                if pos > len(data):
                    raise IndexError
        except (IndexError, struct.error):
            raise MalformedQuery("records run past the packet", _formerr_header(data)) from None
        return edns_size, do, badvers

    # -- text forms, for the slow paths
    @property
    def name(self) -> str:
        """The query name as sent (case kept), fully qualified."""
        if self._name is None:
            self._name = name_from_wire(self.qwire)
        return self._name

    @property
    def lname(self) -> str:
        """The query name lower-cased, fully qualified."""
        if self._lname is None:
            self._lname = name_from_wire(self.key)
        return self._lname

    @property
    def label(self) -> DNSLabel:
        """The query name (case kept) as a dnslib label, safe for any octets."""
        return label_from_wire(self.qwire)

    @property
    def id(self) -> int:
        return _H.unpack_from(self.data)[0]

    @property
    def udp_limit(self) -> int:
        return self.edns_size or 512

    def render(self, answer: "Answer") -> bytes:
        """The reply's bytes for this query (made once, then shared by whoever asks)."""
        if self._rendered_for is not answer:
            self.rendered = answer.render(self, self.udp_limit if self.proto == "udp" else 65535)
            self._rendered_for = answer
        return self.rendered

    def parse(self) -> DNSRecord:
        """The whole query as a dnslib record (slow path)."""
        return DNSRecord.parse(self.data)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        if n & 0xC0:
            raise IndexError
        pos += n + 1


def _formerr_header(data: bytes) -> bytes:
    """A FORMERR reply carrying the query's ID and opcode and no sections."""
    qid, flags = _HH.unpack_from(data)
    return _HEADER.pack(qid, QR | (flags & (OPCODE_MASK | RD)) | FORMERR, 0, 0, 0, 0)


def opt_record(size: int, do: bool, ext_rcode: int = 0) -> bytes:
    return b"\x00" + _OPT_FIXED.pack(TYPE_OPT, size, ext_rcode, 0, 0x8000 if do else 0, 0)


_OPT_CACHE: dict[tuple[int, bool], bytes] = {}
_COUNTS: dict[tuple[int, int, int], tuple[bytes, bytes]] = {}


def _section_counts(an: int, ns: int, ar: int) -> tuple[bytes, bytes]:
    """QD..ARCOUNT bytes without and with an OPT record, shared by every answer of that shape."""
    counts = _COUNTS.get((an, ns, ar))
    if counts is None:
        counts = (_HH.pack(1, an) + _HH.pack(ns, ar), _HH.pack(1, an) + _HH.pack(ns, ar + 1))
        if len(_COUNTS) < 4096:
            _COUNTS[(an, ns, ar)] = counts
    return counts


class Answer:
    """A ready response: flags, counts and the packed records that follow the question.

    ``body`` must have been packed after a question of the same shape as the query's (the
    constructors below take care of that), so that compression pointers stay valid.
    ``ttl`` is the smallest TTL in it (for caches); ``chunks`` optionally lists the byte
    ranges of the answer records, so that loadbalance can shuffle them without re-packing.
    """

    __slots__ = ("flags", "rcode", "an", "ns", "ar", "body", "ttl", "_counts", "_counts_opt", "chunks", "error",
                 "plugin")

    def __init__(self, rcode: int = NOERROR, an: int = 0, ns: int = 0, ar: int = 0, body: bytes = b"",
                 aa: bool = True, ra: bool = False, ttl: int | None = None, extra_flags: int = 0,
                 chunks: tuple | None = None, plugin: str = ""):
        self.rcode = rcode
        self.plugin = plugin  # which plugin wrote it: the `plugin` label of responses_total
        self.flags = QR | (AA if aa else 0) | (RA if ra else 0) | extra_flags | (rcode & 0xF)
        self.an, self.ns, self.ar = an, ns, ar
        self.body = body
        self.ttl = ttl
        self.chunks = chunks
        self.error = None  # an explanation, for the errors plugin
        self._counts, self._counts_opt = _section_counts(an, ns, ar)

    # ---- per query: the byte splice
    def render(self, req: Request, limit: int = 65535) -> bytes:
        flags = self.flags | req.echo
        if req.edns_size:
            okey = (req.edns_size, req.do)
            opt = _OPT_CACHE.get(okey)
            if opt is None:
                opt = _OPT_CACHE.setdefault(okey, opt_record(req.edns_size, req.do))
            out = b"".join((req.data[:2], _H.pack(flags), self._counts_opt, req.question, self.body, opt))
        else:
            out = b"".join((req.data[:2], _H.pack(flags), self._counts, req.question, self.body))
        if len(out) > limit:
            return self.truncated(req, flags)
        return out

    def truncated(self, req: Request, flags: int) -> bytes:
        """As many whole records as fit under the client's limit, with TC set (as CoreDNS does).

        Records are kept in order (answer, then authority, then additional) up to the first
        that does not fit.  Compression pointers only point backwards, so a prefix of the
        records is always a valid message.
        """
        limit = req.udp_limit
        data = req.data
        question = req.question
        opt = opt_record(req.edns_size, req.do) if req.edns_size else b""
        room = limit - 12 - len(question) - len(opt)
        kept = _fitting_prefix(self.body, self.an + self.ns + self.ar, room)
        an = min(kept, self.an)
        ns = min(kept - an, self.ns)
        ar = kept - an - ns
        end = _record_end(self.body, kept)
        return (data[:2] + _H.pack(flags | TC) + _HH.pack(1, an) + _HH.pack(ns, ar + (1 if opt else 0))
                + question + self.body[:end] + opt)

    def size(self, req: Request) -> int:
        return 12 + (req.qend + 4 - 12) + len(self.body) + (11 if req.edns_size else 0)

    def with_body(self, body: bytes) -> "Answer":
        """The same answer with its records rearranged (loadbalance)."""
        clone = Answer.__new__(Answer)
        for slot in Answer.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.body = body
        return clone

    # ---- constructors (slow path)
    @classmethod
    def build(cls, qname: str, qtype: int, rcode: int = NOERROR, answer: list[RR] = (), authority: list[RR] = (),
              additional: list[RR] = (), aa: bool = True, ra: bool = False, plugin: str = "") -> "Answer":
        """Pack records with dnslib, behind a question for ``qname``/``qtype``."""
        record = DNSRecord(DNSHeader(id=0, qr=1), q=DNSQuestion(qname, qtype))
        record.add_answer(*answer)
        record.add_auth(*authority)
        record.add_ar(*additional)
        packed = record.pack()
        qend = _skip_name(packed, 12) + 4
        ttls = [rr.ttl for rr in (*answer, *authority, *additional)]
        chunks = None
        if len(answer) > 1:
            chunks = _record_spans(packed, qend, len(answer))
        return cls(rcode, len(answer), len(authority), len(additional), packed[qend:], aa=aa, ra=ra,
                   ttl=min(ttls) if ttls else None, chunks=chunks, plugin=plugin)

    @classmethod
    def from_message(cls, msg: bytes, plugin: str = "") -> "Answer":
        """An answer from a whole response (an upstream's): its OPT record is dropped.

        The body's pointers stay valid for a query whose question has the same length
        as the response's (forward sends the client's question as it came).
        """
        _id, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
        pos = 12
        for _ in range(qd):
            pos = _skip_name(msg, pos) + 4
        start = pos
        kept = bytearray()
        ttl = None
        ext_rcode = 0
        ar_kept = 0
        spans = []
        for index in range(an + ns + ar):
            rr_start = pos
            pos = _skip_name(msg, pos)
            rtype, _rclass, rttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
            pos += 10 + rdlen
            if pos > len(msg):
                raise ValueError("record runs past the message")
            if rtype == TYPE_OPT:
                ext_rcode = rttl >> 24
                continue
            if index < an:
                spans.append((rr_start - start, pos - start))
            if index >= an + ns:
                ar_kept += 1
            kept += msg[rr_start:pos]
            ttl = rttl if ttl is None else min(ttl, rttl)
        answer = cls((ext_rcode << 4) | (flags & 0xF), an, ns, ar_kept, bytes(kept), aa=bool(flags & AA),
                     ra=bool(flags & RA), ttl=ttl, extra_flags=flags & AD,
                     chunks=tuple(spans) if an > 1 else None, plugin=plugin)
        return answer


def _record_end(body: bytes, count: int) -> int:
    """Offset in ``body`` just past its first ``count`` records."""
    pos = 0
    for _ in range(count):
        pos = _skip_name(body, pos)
        (rdlen,) = _H.unpack_from(body, pos + 8)
        pos += 10 + rdlen
    return pos


def _fitting_prefix(body: bytes, total: int, room: int) -> int:
    """How many leading records of ``body`` fit in ``room`` bytes."""
    pos = kept = 0
    while kept < total:
        nxt = _skip_name(body, pos)
        (rdlen,) = _H.unpack_from(body, nxt + 8)
        nxt += 10 + rdlen
        if nxt > room:
            break
        pos, kept = nxt, kept + 1
    return kept


def _record_spans(packed: bytes, start: int, count: int) -> tuple:
    spans = []
    pos = start
    for _ in range(count):
        rr_start = pos
        pos = _skip_name(packed, pos)
        (rdlen,) = _H.unpack_from(packed, pos + 8)
        pos += 10 + rdlen
        spans.append((rr_start - start, pos - start))
    return tuple(spans)


_STATUS_CACHE: dict[int, Answer] = {}


def status(rcode: int) -> Answer:
    """An empty answer with only an rcode (SERVFAIL, REFUSED, NOTIMP, ...): not authoritative."""
    answer = _STATUS_CACHE.get(rcode)
    if answer is None:
        answer = _STATUS_CACHE[rcode] = Answer(rcode & 0xF, aa=False)
    return answer


def badvers(req: Request) -> bytes:
    """BADVERS (extended rcode 16) for an EDNS version other than 0."""
    flags = QR | (req.flags & (RD | CD | OPCODE_MASK))
    return (req.data[:2] + _H.pack(flags) + _HH.pack(1, 0) + _HH.pack(0, 1) + req.question
            + opt_record(max(req.edns_size, 512), req.do, ext_rcode=BADVERS >> 4))


def rcode_of(answer: Answer) -> str:
    return RCODE_NAMES.get(answer.rcode, str(answer.rcode))


__all__ = [
    "Answer", "Request", "MalformedQuery", "status", "badvers", "type_name", "class_name", "name_from_wire",
    "OPCODE", "QTYPE", "RR",
]
