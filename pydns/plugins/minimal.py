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

from pydns.plugin import PerAnswer, Plugin, register, then
from pydns.parser import WireError
from pydns.records import TYPE_NS, TYPE_SOA, message, walk
from pydns.wire import NOERROR, Answer, Request


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
    memoizable = True  # what it changes follows from the query's bytes and the answer (pydns.replies)

    def __init__(self, server) -> None:
        super().__init__(server)
        self._kept = PerAnswer()  # each ready answer is shortened once

    def serve(self, req: Request):
        return then(self.next.serve(req), lambda answer: self._minimal(req, answer))

    def _minimal(self, req: Request, answer: Answer) -> Answer:
        return self._kept.get(answer) or self._kept.keep(answer, shortened(answer, req.question))
