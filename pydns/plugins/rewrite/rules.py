"""The rewrite rules: what each does to the query on its way in and asks of the answer on its way back."""

from __future__ import annotations

import logging
import struct

from dnslib import RR, DNSHeader, DNSQuestion, DNSRecord, EDNSOption

from pydns import stats
from pydns.plugin import DNSError
from pydns.plugins.rewrite.names import (NameReplacer, RemapRewriter, RuleError, SuffixRewriter, bounded_regex,
                                         label_text, name_wire, normalize, text_label)
from pydns.wire import SERVFAIL, TYPE_OPT, Request

log = logging.getLogger("plugin/rewrite")

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
    """The ``cname`` rule's work on the answer, as CoreDNS's: for one CNAME record of the
    answer whose target FROM matches, the target becomes TO, and the answer becomes the
    CNAME records up to that one followed by the answer for TO, looked up through the
    server's own plugins (qtype as asked)."""

    def __init__(self, kind: str, source: str, target: str):
        self.new_target = NameReplacer(kind, source, target)
        self._logged: set[str] = set()  # the causes of lookups not made, logged once each

    def change(self, rr: RR) -> tuple[str, str] | None:
        """(old target, new target) if ``rr`` is a CNAME whose target FROM matches."""
        if rr.rtype != TYPE_CNAME:
            return None
        old = label_text(rr.rdata.label)
        new = self.new_target(old)
        if new is None:
            return None
        # TO made of a regex's groups may be written without the root
        return old, new if new.endswith(".") else new + "."

    async def follow(self, msg: DNSRecord, old: str, new: str, qtype: int, lookup) -> None:
        """Re-point the CNAME to ``old`` at ``new`` and put the answer for ``new`` after it; when
        that answer cannot be had, ``msg`` is left as it is."""
        try:
            new_label = text_label(new)
        except ValueError:
            self._failed("not a domain name", f"the new target {new!r} is not a domain name")
            return
        try:
            found = await lookup(new, qtype)
        except DNSError as err:  # what the server would answer: that rcode, no records
            found = DNSRecord(DNSHeader(qr=1, rcode=err.rcode))
        if found is None:
            self._failed("lookup failed", f"{new} could not be looked up")
            return
        kept = []
        for record in msg.rr:
            if record.rtype == TYPE_CNAME:
                kept.append(record)
                if label_text(record.rdata.label) == old:
                    record.rdata.label = new_label
                    break
        msg.rr = kept + list(found.rr)

    def _failed(self, cause: str, why: str) -> None:
        """The answer stays as it came, as CoreDNS leaves it when its lookup fails."""
        if cause not in self._logged:
            self._logged.add(cause)
            log.warning("plugin/rewrite: cname rule: %s; the answer is left as it is", why)
        stats.rewrite_cname_failures[cause] = stats.rewrite_cname_failures.get(cause, 0) + 1

    def record(self, rr: RR) -> None:
        pass

    def rcode(self, rcode: int) -> int:
        return rcode


class CnameRule(Rule):
    """Applies to every query; its work happens on the answer.  A rule with an empty FROM or
    TO never applies (CoreDNS ignores it: it does not even end the list)."""

    def __init__(self, response: CnameResponse):
        self.response = response
        replacer = response.new_target
        self.active = bool(replacer.source) and bool(replacer.target)

    def rewrite(self, state: State) -> list | None:
        return [self.response] if self.active else None


class MatchRule(Rule):
    """ttl and rcode rules: a name predicate and the response rule they add."""

    def __init__(self, matches, response):
        self.matches, self.response = matches, response

    def rewrite(self, state: State) -> list | None:
        return [self.response] if self.matches(state.name) else None
