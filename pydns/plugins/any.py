"""any — answers ANY queries with a short HINFO record, as RFC 8482 allows.

Syntax::

    any

A query of type ANY gets one record, ``HINFO "ANY obsoleted" "See RFC 8482"`` with TTL 8482,
under the query name; other queries go on to the next plugin.
"""

from __future__ import annotations

from dnslib import RD, RR

from pydns.plugin import Plugin, register
from pydns.wire import Answer, Request, label_from_wire

TYPE_ANY, TYPE_HINFO = 255, 13
TTL = 8482
_KEPT_MAX = 10000
# HINFO's rdata is two character strings, CPU and OS (dnslib has no HINFO class).
HINFO_RDATA = bytes([13]) + b"ANY obsoleted" + bytes([12]) + b"See RFC 8482"


@register("any")
class Any(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        self._answers: dict[bytes, Answer] = {}

    def serve(self, req: Request):
        if req.qtype != TYPE_ANY:
            return self.next.serve(req)
        answer = self._answers.get(req.key)
        if answer is None:
            owner = label_from_wire(req.key)
            record = RR(owner, TYPE_HINFO, ttl=TTL, rdata=RD(HINFO_RDATA))
            answer = Answer.build(owner, TYPE_ANY, answer=[record], aa=False, plugin=self.name)
            if len(self._answers) >= _KEPT_MAX:
                self._answers.clear()
            self._answers[req.key] = answer
        return answer
