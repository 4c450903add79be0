"""How the cache reads a response: CoreDNS's classification, its TTLs and where they are."""

from __future__ import annotations

import struct
import time

from pydns import records
from pydns.records import TYPE_CNAME, TYPE_NS, TYPE_OPT, TYPE_RRSIG, TYPE_SOA
from pydns.wire import NOERROR, NOTIMP, NXDOMAIN, SERVFAIL, Answer, Request

MIN_TTL = 5

# CoreDNS's response types (plugin/pkg/response).
NO_ERROR, NAME_ERROR, SERVER_ERROR, NO_DATA, DELEGATION, META, UPDATE, OTHER_ERROR = range(8)

_OPCODE_NOTIFY, _OPCODE_UPDATE = 4, 5
_AXFR, _IXFR, _ANY = 252, 251, 255


class Response:
    """What the cache needs to know about an answer: its type, TTLs and where they are.

    ``non_answer``: records that do not answer the question (a CNAME chain that ends
    elsewhere) and no SOA to bound a negative TTL -- passed on, never kept (RFC 2308 5).
    ``dated``: a signature's validity was checked against the clock, so the same answer may
    read differently later.
    """

    __slots__ = ("kind", "offsets", "ttls", "has_soa", "non_answer", "dated")

    def __init__(self, kind: int, offsets: tuple, ttls: list, has_soa: bool, non_answer: bool,
                 dated: bool = False):
        self.kind, self.offsets, self.ttls, self.has_soa, self.non_answer = kind, offsets, ttls, has_soa, non_answer
        self.dated = dated


def read_response(req: Request, answer: Answer) -> Response:
    question = req.data[12 : req.qend + 4]
    base = 12 + len(question)
    msg = records.message(answer.body, question)
    recs = records.walk(msg, base, (answer.an, answer.ns, answer.ar))
    offsets, ttls = [], []
    has_soa, ns = False, 0
    expired_sig = dated = False
    for r in recs:
        if r.rtype == TYPE_OPT:
            continue
        offsets.append(r.ttl_at - base)
        ttls.append(r.ttl)
        if r.section == 1:
            if r.rtype == TYPE_SOA:
                has_soa = True
            elif r.rtype == TYPE_NS:
                ns += 1
        if r.rtype == TYPE_RRSIG and req.do and not expired_sig:
            dated = True
            expired_sig = not _signature_valid(msg, r)
    kind = typify(req, answer, has_soa, ns, expired_sig)
    non_answer = False
    if kind == NO_ERROR and answer.an and not _answers_question(req, msg, recs):
        if has_soa:
            kind = NO_DATA  # a CNAME chain that ends in NODATA
        else:
            non_answer = True
    return Response(kind, tuple(offsets), ttls, has_soa, non_answer, dated)


def typify(req: Request, answer: Answer, has_soa: bool, ns: int, expired_sig: bool) -> int:
    if req.opcode == _OPCODE_UPDATE:
        return UPDATE
    if req.opcode == _OPCODE_NOTIFY or req.qtype in (_AXFR, _IXFR):
        return META
    if expired_sig:
        return OTHER_ERROR
    rcode = answer.rcode
    if answer.an and rcode == NOERROR:
        return NO_ERROR
    if answer.an and rcode == NXDOMAIN:
        return OTHER_ERROR
    if has_soa and rcode == NOERROR:
        return NO_DATA
    if rcode == NXDOMAIN:
        return NAME_ERROR
    if rcode in (SERVFAIL, NOTIMP):
        return SERVER_ERROR
    if ns and rcode == NOERROR:
        return DELEGATION
    if rcode == NOERROR:
        return NO_ERROR
    return OTHER_ERROR


def _signature_valid(msg: bytes, r: records.Record) -> bool:
    """An RRSIG's validity period contains now (serial arithmetic, RFC 4034)."""
    if r.end - r.rdata < 16:
        return False
    expiration, inception = struct.unpack_from("!II", msg, r.rdata + 8)
    now = int(time.time())
    year68 = 1 << 31
    ti = inception + int((inception - now) / year68) * year68
    te = expiration + int((expiration - now) / year68) * year68
    return ti <= now <= te


def _answers_question(req: Request, msg: bytes, recs: list) -> bool:
    """Does the answer section answer the question, following its CNAME chain (RFC 1034 3.6.2)?"""
    qclass = req.qclass
    answer = []
    for r in recs:
        if r.section != 0:
            break
        if qclass != _ANY and r.rclass != qclass:
            continue
        owner = records.wire_name(records.read_name(msg, r.start)[0])
        target = records.wire_name(records.read_name(msg, r.rdata)[0]) if r.rtype == TYPE_CNAME else None
        answer.append((owner, r.rtype, target))
    name = req.key
    if req.qtype == _ANY:
        return any(owner == name for owner, _t, _c in answer)
    seen = set()
    while True:
        targets = {target for owner, rtype, target in answer if rtype == TYPE_CNAME and owner == name}
        if len(targets) > 1:
            return False
        if req.qtype == TYPE_CNAME:
            return bool(targets)
        if not targets:
            break
        seen.add(name)
        name = targets.pop()
        if name in seen:
            return False
    return any(rtype == req.qtype and owner == name for owner, rtype, _t in answer)


def minimal_ttl(kind: int, ttls: list, maximum: int) -> int:
    """The smallest TTL in the message, as CoreDNS's dnsutil.MinimalTTL computes it."""
    if kind not in (NO_ERROR, NAME_ERROR, NO_DATA) or not ttls:
        return MIN_TTL  # also when there is no record at all (OPT aside)
    low = maximum
    for ttl in ttls:
        if ttl < low:
            low = ttl
    return low


