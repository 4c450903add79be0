"""The rewrite rules: what each does to the query on its way in and asks of the answer on its way back."""

from __future__ import annotations

import struct

from dnslib import RR, DNSQuestion, DNSRecord, EDNSOption

from pydns.plugin import DNSError
from pydns.plugins.rewrite.names import (NameReplacer, RemapRewriter, RuleError, SuffixRewriter, bounded_regex,
                                         label_text, name_wire, normalize, text_label)
from pydns.wire import SERVFAIL, TYPE_OPT, Request

_QTAIL = struct.Struct("!HH")
TYPE_CNAME = 5
# dnslib's attribute holding the name inside the records whose values ``answer value`` rewrites.
VALUE_FIELDS = {5: "label", 39: "label", 2: "label", 12: "label", 15: "label", 33: "target", 6: "mname",
                35: "replacement"}


class NameResponse:
    """Rewrites the owner name of every record of the answer."""

    def __init__(self, rewrite):
        self.rewrite = rewrite

    def record(self, rr: RR) -> None:
        old = label_text(rr.rname)
        new = self.rewrite(old)
        if new != old:
            rr.rname = text_label(new)

    def rcode(self, rcode: int) -> int:
        return rcode


class ValueResponse(NameResponse):
    """Rewrites the name inside CNAME, DNAME, NS, PTR, MX, SRV, SOA and NAPTR records."""

    def record(self, rr: RR) -> None:
        field = VALUE_FIELDS.get(rr.rtype)
        if field is None:
            return
        old = label_text(getattr(rr.rdata, field))
        new = self.rewrite(old)
        if new != old:
            setattr(rr.rdata, field, text_label(new))


class TTLResponse:
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def record(self, rr: RR) -> None:
        if rr.ttl < self.low:
            rr.ttl = self.low
        elif rr.ttl > self.high:
            rr.ttl = self.high

    def rcode(self, rcode: int) -> int:
        return rcode


class RcodeResponse:
    def __init__(self, old: int, new: int):
        self.old, self.new = old, new

    def record(self, rr: RR) -> None:
        pass

    def rcode(self, rcode: int) -> int:
        return self.new if rcode == self.old else rcode

class State:
    """The query as the rules have rewritten it so far."""

    def __init__(self, req: Request):
        self.req = req
        self.name = req.lname
        self.qtype = req.qtype
        self.qclass = req.qclass
        self.options: list[list] | None = None  # EDNS0 options [code, data], once a rule touched them
        self.opt_head = (4096, 0)  # the OPT record's class (buffer size) and TTL (flags)

    def edns_options(self) -> list[list]:
        """The query's EDNS0 options, read once; a query without OPT gets an empty one."""
        if self.options is None:
            self.options = []
            try:
                record = DNSRecord.parse(self.req.data)
            except Exception as exc:  # dnslib raises several kinds on odd input
                raise DNSError(SERVFAIL, f"plugin/rewrite: cannot read the query's EDNS0 records: {exc}") from None
            for rr in record.ar:
                if rr.rtype == TYPE_OPT:
                    self.opt_head = (rr.rclass, rr.ttl)
                    self.options = [[opt.code, bytes(opt.data)] for opt in rr.rdata]
                    break
        return self.options

    def changed(self) -> bool:
        req = self.req
        return (self.name != req.lname or self.qtype != req.qtype or self.qclass != req.qclass
                or self.options is not None)

    def question(self) -> bytes:
        return name_wire(self.name) + _QTAIL.pack(self.qtype, self.qclass)

    def request_data(self) -> bytes:
        """The rewritten query's bytes."""
        req = self.req
        if self.options is None:
            return req.data[:12] + self.question() + req.data[req.qend + 4:]
        record = DNSRecord.parse(req.data)
        record.questions = [DNSQuestion(text_label(self.name), self.qtype, self.qclass)]
        record.ar = [rr for rr in record.ar if rr.rtype != TYPE_OPT]
        size, ttl = self.opt_head
        record.ar.append(RR(".", TYPE_OPT, rclass=size, ttl=ttl,
                            rdata=[EDNSOption(code, data) for code, data in self.options]))
        return bytes(record.pack())

class Rule:
    mode = "stop"

    def rewrite(self, state: State) -> list | None:
        """Rewrite ``state``; the response rules it asks for, or None if it did not apply."""
        raise NotImplementedError


def name_matcher(kind: str, pattern: str):
    """A predicate on the (lower-cased, qualified) query name, for ttl and rcode rules."""
    if kind == "regex":
        compiled = bounded_regex(pattern)
        return lambda name: compiled.search(name) is not None
    value = normalize(pattern)
    if kind == "exact":
        return lambda name: name == value
    if kind == "prefix":
        return lambda name: name.startswith(value)
    if kind == "suffix":
        return lambda name: name.endswith(value)
    if kind == "substring":
        return lambda name: value in name
    raise RuleError("only exact, prefix, suffix, substring and regex name matching are supported")


class NameRule(Rule):
    def __init__(self, kind: str, source: str, target: str, auto: bool, answers: list):
        self.replace = NameReplacer(kind, source, target)
        self.auto, self.answers = auto, answers
        if kind == "suffix" and auto:
            # The answer's names get the original suffix back.
            back = SuffixRewriter(target, source)
            self.answers = [NameResponse(back), ValueResponse(back), *answers]
            self.auto = False
        if kind == "exact":
            self.auto = True

    def rewrite(self, state: State) -> list | None:
        before = state.name
        after = self.replace(before)
        if after is None:
            return None
        state.name = after
        if not self.auto:
            return self.answers
        back = RemapRewriter(after, before)
        return [NameResponse(back), ValueResponse(back), *self.answers]


class QuestionRule(Rule):
    """type and class rules: one field of the question, from one value to another."""

    def __init__(self, field: str, source: int, target: int):
        self.field, self.source, self.target = field, source, target

    def rewrite(self, state: State) -> list | None:
        if getattr(state, self.field) != self.source:
            return None
        setattr(state, self.field, self.target)
        return []


class CnameResponse:
    """Rewrites the first matching CNAME target of the answer and replaces what follows it with
    the answer for the new target, looked up through the server's own plugins."""

    def __init__(self, kind: str, source: str, target: str):
        self.new_target = NameReplacer(kind, source, target)

    async def follow(self, msg: DNSRecord, qtype: int, lookup) -> None:
        kept = []
        for rr in msg.rr:
            if rr.rtype != TYPE_CNAME:
                continue
            kept.append(rr)
            new = self.new_target(label_text(rr.rdata.label))
            if new is None:
                continue
            found = await lookup(new, qtype)
            if found is None:
                return
            rr.rdata.label = text_label(new)
            msg.rr = kept + list(found.rr)
            return

    def record(self, rr: RR) -> None:
        pass

    def rcode(self, rcode: int) -> int:
        return rcode


class CnameRule(Rule):
    """Applies to every query; its work happens on the answer."""

    def __init__(self, response: CnameResponse):
        self.response = response

    def rewrite(self, state: State) -> list | None:
        return [self.response]


class MatchRule(Rule):
    """ttl and rcode rules: a name predicate and the response rule they add."""

    def __init__(self, matches, response):
        self.matches, self.response = matches, response

    def rewrite(self, state: State) -> list | None:
        return [self.response] if self.matches(state.name) else None
