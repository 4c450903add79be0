"""minimal — sends only the answer section of successful replies.

Syntax::

    minimal

A successful reply with records (or a NOERROR reply without an SOA or NS in its authority
section) loses its authority and additional sections.  Negative replies (NXDOMAIN, NODATA
with its SOA), delegations (NS records in the authority section) and errors pass unchanged.
The shortened answer is made once per answer the plugins after this one return, then spliced
per query like any other.
"""

from __future__ import annotations

from pydns.plugin import Plugin, register, then
from pydns.parser import WireError
from pydns.records import TYPE_NS, TYPE_SOA, message, walk
from pydns.wire import NOERROR, Answer, Request

_KEPT_MAX = 10000


def shortened(answer: Answer, question: bytes) -> Answer:
    """``answer`` with only its answer section, if minimal applies to it; else ``answer`` itself.

    The body is read behind ``question`` (the query's), where its compression pointers lead.
    """
    if answer.rcode != NOERROR or not (answer.ns or answer.ar):
        return answer
    base = 12 + len(question)
    try:
        records = walk(message(answer.body, question), base, (answer.an, answer.ns, answer.ar))
    except WireError:
        return answer
    authority = [r.rtype for r in records if r.section == 1]
    if not answer.an and (TYPE_SOA in authority or TYPE_NS in authority):
        return answer  # NODATA or a delegation
    kept = records[:answer.an]
    body = answer.body[: kept[-1].end - base] if kept else b""
    out = Answer(answer.rcode, answer.an, 0, 0, body, ttl=min((r.ttl for r in kept), default=None),
                 plugin=answer.plugin)
    out.flags = answer.flags  # the same header bits (AA, RA, AD...) as the full answer
    out.error = answer.error
    return out


@register("minimal")
class Minimal(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        # Ready answers are shared by every query for a name: each is shortened once.
        self._kept: dict[int, tuple[Answer, Answer]] = {}

    def serve(self, req: Request):
        return then(self.next.serve(req), lambda answer: self._minimal(req, answer))

    def _minimal(self, req: Request, answer: Answer) -> Answer:
        kept = self._kept.get(id(answer))
        if kept is not None and kept[0] is answer:
            return kept[1]
        out = shortened(answer, req.question)
        if len(self._kept) >= _KEPT_MAX:
            self._kept.clear()
        self._kept[id(answer)] = (answer, out)
        return out
