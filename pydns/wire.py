"""The DNS wire format on the hot path: parsing queries and splicing ready answers.

A query is read with ``pydns.parser``, never with dnslib: the question is located, its name
lower-cased as wire bytes (the lookup key), and an EDNS0 OPT record, if any, read.

An ``Answer`` is a response kept as ready wire bytes: its flags and section counts, and the
packed resource records that follow the question.  Records may point (DNS compression) into
the question at offset 12; since every query for the same name has a question of the same
length, the bytes stay valid for any query whose name differs only in letter case.  Per
query the header is written from the query's ID and RD/CD bits, the query's own question is
copied in (which preserves its case), and an OPT record is appended when the client sent
one, with the answer's EDNS0 options (NSID, extended errors), if it has any, in its rdata.
Building answers (dnslib) happens on the slow paths: when data changes, not per packet.
"""

from __future__ import annotations

import struct

from dnslib import CLASS, OPCODE, QTYPE, RCODE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from pydns.edns import extended_errors
from pydns.parser import Parser, WireError, labels_of, presentation

_HEADER = struct.Struct("!HHHHHH")
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HHBBHH")  # type, class=udp size, ext rcode, version, flags, rdlen

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


def label_from_wire(wire: bytes) -> DNSLabel:
    """A dnslib name from wire bytes: labels stay bytes, so any octet is allowed."""
    return DNSLabel(labels_of(wire))


# Clients ask the same questions again and again: everything but the ID parses the same, so
# parsed queries are kept, keyed on the packet after its ID.  Only a packet that is exactly a
# query (header, question, its few records: nothing after them) and short is kept, so the
# table's size is bounded by _PARSED_MAX entries of at most _PARSED_KEY_MAX bytes, whatever
# a client sends.  Bytes after the last record are ignored, as miekg/dns does.
_PARSED: dict[bytes, tuple] = {}
_PARSED_MAX = 10000
_PARSED_KEY_MAX = 512

UDP_PAYLOAD_MAX = 65507  # the most one UDP datagram carries over IPv4 (65535 - IP and UDP headers)
TCP_MESSAGE_MAX = 65535  # the two-byte length prefix


class Request:
    """One query as the chain sees it.  Cheap to make: text forms are computed on demand.

    ``proto`` is the transport it came over, "udp" or "tcp": it decides the size limit of
    the reply (``limit``).
    """

    # Rarely set per query: class-level defaults save assigning them on the hot path.
    server = None
    zone = None
    rendered = None
    _rendered_for = None
    _name = None
    _lname = None
    trace = None  # a pydns.explain.Trace while ``pydns explain`` runs this query
    # Whether the reply may be kept by the query's bytes, and what to run per kept reply
    # sent (pydns.replies): set by the plugins that answer.
    memo_until = 0.0
    memo_hooks = None
    memo_choices = None

    def __init__(self, data: bytes, proto: str = "udp", remote=None, local=None):
        self.data = data
        self.proto = proto
        self.remote = remote
        self.local = local
        parsed = _PARSED.get(data[2:])
        if parsed is None:
            parsed, end = _parse_query(data)
            if end == len(data) <= _PARSED_KEY_MAX:
                if len(_PARSED) >= _PARSED_MAX:
                    _PARSED.clear()
                _PARSED[data[2:]] = parsed
        (self.flags, self.opcode, self.qend, self.qwire, self.key, self.qtype, self.qclass,
         self.edns_size, self.do, self.badvers, self.question, self.echo) = parsed

    # -- text forms, for the slow paths
    @property
    def name(self) -> str:
        """The query name as sent (case kept), fully qualified, in presentation format:
        escaped as miekg/dns prints it, so it is safe in a log line."""
        if self._name is None:
            self._name = presentation(self.qwire)
        return self._name

    @property
    def lname(self) -> str:
        """The query name lower-cased, fully qualified, escaped as ``name``."""
        if self._lname is None:
            self._lname = presentation(self.key)
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
        """The client's UDP size: 512, or its EDNS0 buffer size (up to what UDP can carry)."""
        return min(self.edns_size, UDP_PAYLOAD_MAX) if self.edns_size else 512

    @property
    def limit(self) -> int:
        """The largest reply this query may get on its transport."""
        return self.udp_limit if self.proto == "udp" else TCP_MESSAGE_MAX

    def render(self, answer: "Answer") -> bytes:
        """The reply's bytes for this query (made once, then shared by whoever asks)."""
        if self._rendered_for is not answer:
            self.rendered = answer.render(self, self.limit)
            self._rendered_for = answer
        return self.rendered


def _parse_query(data: bytes) -> tuple[tuple, int]:
    """What a query says (the tuple ``Request`` unpacks) and where its last record ends."""
    if len(data) < 12:
        raise MalformedQuery("short header")
    p = Parser(data)
    _id, flags, qd, an, ns, ar = p.get_struct(_HEADER)
    if flags & QR:
        raise MalformedQuery("a response, not a query")
    if qd != 1:
        raise MalformedQuery(f"{qd} questions", _formerr_header(data))
    try:
        qwire = p.get_name()
        qend = p.current
        if qend - 12 != len(qwire):
            raise WireError("compressed question name")
        qtype, qclass = p.get_struct(_HH)
        edns_size, do, badvers = _read_records(p, an + ns, ar)
    except WireError as exc:
        raise MalformedQuery(str(exc), _formerr_header(data)) from None
    # ``question`` (as sent, case kept) and ``echo`` (the flag bits a reply copies) are
    # what every reply splices in: worked out once per distinct question.
    parsed = (flags, (flags & OPCODE_MASK) >> 11, qend, qwire, qwire.lower(), qtype, qclass, edns_size, do, badvers,
              data[12 : qend + 4], flags & (RD | CD | OPCODE_MASK))
    return parsed, p.current


def _read_records(p: Parser, skip: int, ar: int) -> tuple[int, bool, bool]:
    """(EDNS buffer size or 0, DO bit, unsupported EDNS version) from the records after the question.

    The OPT record must be owned by the root name and its options must fill its rdata
    exactly (RFC 6891 6.1.2), as miekg/dns checks.
    """
    edns_size, do, badvers = 0, False, False  # edns_size 0: the client sent no OPT record
    for index in range(skip + ar):
        owner_at, rtype, rclass, ttl, rdlen = p.get_record()
        if index < skip or rtype != TYPE_OPT:
            p.skip(rdlen)
            continue
        rdata = p.restricted(rdlen)
        if edns_size:
            raise WireError("more than one OPT record")
        if p.wire[owner_at] != 0:
            raise WireError("OPT record not owned by the root name")
        while rdata.remaining():
            _code, length = rdata.get_struct(_HH)
            rdata.skip(length)
        edns_size = max(rclass, 512)
        do = bool(ttl & 0x8000)
        badvers = bool(ttl & 0x00FF0000)  # an EDNS version other than 0
    return edns_size, do, badvers


def _formerr_header(data: bytes) -> bytes:
    """A FORMERR reply carrying the query's ID and opcode and no sections."""
    qid, flags = _HH.unpack_from(data)
    return _HEADER.pack(qid, QR | (flags & (OPCODE_MASK | RD)) | FORMERR, 0, 0, 0, 0)


OPT_SIZE = 11  # the OPT record a reply carries: root owner, fixed fields, no options


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
    ``ttl`` is the smallest TTL in it (for caches).  ``options`` are EDNS0 options (packed,
    in order: see ``with_options``) that its replies carry in their OPT record; a reply has
    an OPT record only when its query had one (RFC 6891), so clients without EDNS0 never
    see them.
    """

    __slots__ = ("flags", "rcode", "an", "ns", "ar", "body", "ttl", "_counts", "_counts_opt", "_cuts", "error",
                 "plugin", "options")

    def __init__(self, rcode: int = NOERROR, an: int = 0, ns: int = 0, ar: int = 0, body: bytes = b"",
                 aa: bool = True, ra: bool = False, ttl: int | None = None, extra_flags: int = 0,
                 plugin: str = ""):
        self.rcode = rcode
        self.plugin = plugin  # which plugin wrote it: the `plugin` label of responses_total
        self.flags = QR | (AA if aa else 0) | (RA if ra else 0) | extra_flags | (rcode & 0xF)
        self.an, self.ns, self.ar = an, ns, ar
        self.body = body
        self.ttl = ttl
        self.error = None  # an explanation, for the errors plugin
        self._counts, self._counts_opt = _section_counts(an, ns, ar)
        self._cuts = None  # room -> (records kept, bytes kept): see ``truncated``
        self.options = b""

    # ---- per query: the byte splice
    def render(self, req: Request, limit: int = TCP_MESSAGE_MAX) -> bytes:
        flags = self.flags | req.echo
        if req.edns_size:
            okey = (req.edns_size, req.do)
            opt = _OPT_CACHE.get(okey)
            if opt is None:
                opt = _OPT_CACHE.setdefault(okey, opt_record(req.edns_size, req.do))
            if self.options:
                opt = self._opt_with_options(opt, limit - 12 - len(req.question))
            if 12 + len(req.question) + len(self.body) + len(opt) > limit:
                return self.truncated(req, flags, limit, opt)
            return b"".join((req.data[:2], _H.pack(flags), self._counts_opt, req.question, self.body, opt))
        if 12 + len(req.question) + len(self.body) > limit:
            return self.truncated(req, flags, limit, b"")
        return b"".join((req.data[:2], _H.pack(flags), self._counts, req.question, self.body))

    def _opt_with_options(self, opt: bytes, room: int) -> bytes:
        """The OPT record with the answer's options in its rdata.  Options that would not fit
        in ``room`` even beside no records at all are left out, rather than the reply
        growing past the client's size."""
        options = self.options
        if len(opt) + len(options) > room:
            return opt
        return b"".join((opt[:-2], _H.pack(len(options)), options))

    def truncated(self, req: Request, flags: int, limit: int, opt: bytes) -> bytes:
        """As many whole records as fit under ``limit``, with TC set (miekg/dns's ``Truncate``).

        Records are kept in order (answer, then authority, then additional) up to the first
        that does not fit.  Compression pointers only point backwards, so a prefix of the
        records is always a valid message.  Where the cut falls is worked out once per room
        and kept: a big answer then costs a splice of at most ``limit`` bytes per query.
        """
        room = limit - 12 - len(req.question) - len(opt)
        cuts = self._cuts
        if cuts is None:
            cuts = self._cuts = {}
        cut = cuts.get(room)
        if cut is None:
            if len(cuts) >= _CUTS_MAX:
                cuts.clear()
            cut = cuts[room] = _fitting_prefix(req.question, self.body, self.an + self.ns + self.ar, room)
        kept, end = cut
        an = min(kept, self.an)
        ns = min(kept - an, self.ns)
        ar = kept - an - ns
        return b"".join((req.data[:2], _H.pack(flags | TC), _HH.pack(1, an), _HH.pack(ns, ar + (1 if opt else 0)),
                         req.question, self.body[:end], opt))

    def with_body(self, body: bytes, counts: tuple | list | None = None, truncated: bool = False) -> "Answer":
        """The same answer with its records rearranged (loadbalance, cache), or cut short:
        ``counts`` (answer, authority, additional) for the records ``body`` holds then, and
        ``truncated`` to set TC."""
        clone = Answer.__new__(Answer)
        clone.flags, clone.rcode, clone.an, clone.ns, clone.ar = self.flags, self.rcode, self.an, self.ns, self.ar
        clone.ttl, clone.error, clone.plugin, clone.options = self.ttl, self.error, self.plugin, self.options
        clone._counts, clone._counts_opt = self._counts, self._counts_opt
        clone.body = body
        clone._cuts = None
        if counts is not None:
            clone.an, clone.ns, clone.ar = counts
            clone._counts, clone._counts_opt = _section_counts(*counts)
        if truncated:
            clone.flags |= TC
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
        p = Parser(packed, 12)
        p.skip_name()
        ttls = [rr.ttl for rr in (*answer, *authority, *additional)]
        return cls(rcode, len(answer), len(authority), len(additional), packed[p.current + 4 :], aa=aa, ra=ra,
                   ttl=min(ttls) if ttls else None, plugin=plugin)

    @classmethod
    def from_message(cls, msg: bytes, plugin: str = "") -> "Answer":
        """An answer from a whole response (an upstream's): its OPT record is dropped, all but
        the extended DNS errors in it, which its replies carry on (as CoreDNS's forward relays
        them; the rest of the upstream's options, cookies and the like, are for this hop only).

        The body's pointers stay valid for a query whose question has the same length
        as the response's (forward sends the client's question as it came).  Raises
        ``WireError`` when the response is not well formed.
        """
        p = Parser(msg)
        _id, flags, qd, an, ns, ar = p.get_struct(_HEADER)
        for _ in range(qd):
            p.skip_name()
            p.skip(4)
        kept = bytearray()
        ttl = None
        ext_rcode = 0
        ar_kept = 0
        errors = b""
        for index in range(an + ns + ar):
            rr_start, rtype, _rclass, rttl, rdlen = p.get_record()
            p.skip(rdlen)
            if rtype == TYPE_OPT:
                ext_rcode = rttl >> 24
                errors = extended_errors(msg[p.current - rdlen : p.current])
                continue
            if index >= an + ns:
                ar_kept += 1
            kept += msg[rr_start : p.current]
            ttl = rttl if ttl is None else min(ttl, rttl)
        answer = cls((ext_rcode << 4) | (flags & 0xF), an, ns, ar_kept, bytes(kept), aa=bool(flags & AA),
                     ra=bool(flags & RA), ttl=ttl, extra_flags=flags & AD, plugin=plugin)
        answer.options = errors
        return answer


_CUTS_MAX = 8  # sizes remembered per answer (512, 1232, 4096, TCP... cover real clients)


def _fitting_prefix(question: bytes, body: bytes, total: int, room: int) -> tuple[int, int]:
    """How many leading records of ``body`` fit in ``room`` bytes, and the bytes they take.

    The body is read where it sits in a reply, behind a header and ``question``, so that
    its compression pointers lead where they should.
    """
    base = 12 + len(question)
    p = Parser(bytes(12) + question + body, base)
    kept = end = 0
    while kept < total:
        p.skip_record()
        if p.current - base > room:
            break
        end, kept = p.current - base, kept + 1
    return kept, end


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
    "Answer", "Request", "MalformedQuery", "status", "badvers", "type_name", "class_name",
    "OPCODE", "QTYPE", "RR",
]
