"""rewrite — rewrites a query before the plugins after it see it, and their answer on its way back.

Syntax::

    rewrite [continue|stop] FIELD [TYPE] [(FROM TO)|TTL] [OPTIONS]
    rewrite [continue|stop] {
        FIELD [TYPE] [(FROM TO)|TTL] [OPTIONS]
    }

One rule per ``rewrite`` line; a block holds one rule spread over several lines (as in
``name regex ...`` followed by ``answer name ...``).  Rules run in the order written; a
rule that matches ends the list unless it says ``continue`` (``stop`` is the default).

FIELD is one of:

* ``name [exact|prefix|suffix|substring|regex] FROM TO [answer auto | answer name FROM TO |
  answer value FROM TO]...`` — the query name.  Names are compared lower-cased and fully
  qualified; ``regex`` searches the name with FROM and writes TO with ``{1}``, ``{2}``...
  standing for its groups.  ``exact`` rules always map the answer's names back to the
  question; ``answer auto`` does so for the other kinds (a ``suffix`` rule swaps the suffix
  back); ``answer name FROM TO`` rewrites owner names and ``answer value FROM TO`` the names
  inside CNAME, DNAME, NS, PTR, MX, SRV, SOA and NAPTR records, by regex.  A name that is
  not a valid domain name after the rewrite answers SERVFAIL.
* ``type FROM TO`` / ``class FROM TO`` — the query type / class (``type ANY HINFO``).
* ``ttl [TYPE] NAME SECONDS|MIN-MAX`` — the TTL of every record of the answer: set, or
  clamped into the range (``30-300``, ``-30``, ``30-``).
* ``rcode [TYPE] NAME FROM TO`` — the answer's rcode, by name or number (``SERVFAIL NOERROR``).
* ``cname [exact|prefix|suffix|substring|regex] FROM TO`` — a CNAME target of the answer
  that FROM matches (as the name rules match; the target as the answer wrote it) becomes TO,
  and the answer becomes the CNAME records up to that one followed by the answer for TO,
  looked up per query through the server's own plugins with the query's type: its records
  and TTLs as they come (no answer rule sees them).  The lookup is made even when TO is the
  old target; its answer is whole (*forward* asks again over TCP for a truncated one), and a
  reply too large for the client is truncated as any other.  Each cname rule acts on the
  first CNAME it matches (CoreDNS looks up again for every later match and appends each
  answer).  A lookup answered with an error leaves the CNAME re-pointed and nothing after
  it; one that cannot be made (TO is no domain name, lookups nested too deep) leaves the
  answer as it came (logged once, counted in ``pydns_rewrite_cname_failures_total``).  A TO
  without the final dot gets it.  A rule with an empty FROM or TO never applies.
* ``edns0 local|nsid|subnet set|append|replace|unset ... [revert]`` — EDNS0 options of the
  query: ``local CODE DATA`` (DATA as text, ``0x`` hex, or one of ``{qname}``, ``{qtype}``,
  ``{client_ip}``, ``{client_port}``, ``{protocol}``, ``{server_ip}``, ``{server_port}`` or a
  metadata label ``{plugin/label}``), ``nsid``, ``subnet V4BITS V6BITS`` (the client's
  subnet).  A query without an OPT record gets one (buffer size 4096).  ``revert`` is
  accepted; replies never carry the query's options anyway.

The reply always carries the client's own question.  A rewritten query goes to the next
plugin as a new query; its answer is turned back into an answer for the client's question
once per answer and question (names re-pointed, answer rules applied), then spliced per
query like any other ready answer.  Per question, the outcome of the rules is remembered
(unless an ``edns0`` rule is present, whose outcome depends on the client).
"""

from __future__ import annotations

from dnslib import DNSRecord

from pydns.corefile import Directive, Token
from pydns.plugin import DNSError, Plugin, register, then
from pydns.plugins.rewrite.edns import EdnsRule
from pydns.plugins.rewrite.names import RuleError, name_wire
from pydns.plugins.rewrite.parse import parse_rule
from pydns.plugins.rewrite.rules import CnameResponse, RcodeResponse, Rule, State
from pydns.wire import (AA, AD, RA, SERVFAIL, TCP_MESSAGE_MAX, TYPE_OPT, Answer, Request, class_name,
                        label_from_wire, status, type_name)

_CACHE_MAX = 10000  # remembered outcomes per question, and converted answers


class Outcome:
    """What the rules made of one question: the rewritten question and the answer rules."""

    __slots__ = ("question", "responses", "error")

    def __init__(self, question: bytes | None, responses: list, error: str | None = None):
        self.question, self.responses, self.error = question, responses, error


_UNTOUCHED = Outcome(None, [])


@register("rewrite")
class Rewrite(Plugin):
    multiple = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.rules: list[Rule] = []
        self.per_client = False  # edns0 rules depend on more than the question
        self._outcomes: dict[tuple, Outcome] = {}
        self._answers: dict[tuple, tuple] = {}

    def setup(self, d: Directive) -> None:
        args = [str(a) for a in d.args]
        if d.block is not None:
            if len(args) >= 2:
                raise d.error("plugin/rewrite: a rule written on the line takes no block", d.block[0].name
                              if d.block else None)
            for line in d.block:
                if line.block is not None:
                    raise line.error("plugin/rewrite: rules do not nest")
                args += [str(line.name), *map(str, line.args)]
        try:
            rule = parse_rule(args)
        except RuleError as exc:
            raise d.error(f"plugin/rewrite: {exc}", _first_arg(d)) from None
        self.rules.append(rule)
        self.per_client = self.per_client or isinstance(rule, EdnsRule)

    # ---- per query
    def serve(self, req: Request):
        outcome = None if self.per_client else self._outcomes.get((req.key, req.qtype, req.qclass))
        if outcome is None:
            outcome, data = self._evaluate(req)
        else:
            data = None
        if outcome is _UNTOUCHED:
            return self.next.serve(req)
        if outcome.error is not None:
            raise DNSError(SERVFAIL, outcome.error)
        if data is None:
            data = req.data[:12] + outcome.question + req.data[req.qend + 4:]
        inner = Request(data, req.proto, req.remote, req.local)
        inner.server, inner.zone = req.server, req.zone
        metadata = getattr(req, "metadata", None)
        if metadata is not None:
            inner.metadata = metadata
        if req.trace is not None:  # pydns explain: the plugins after this one see the rewritten query
            inner.trace = req.trace
            req.trace.note(self.name, "rewrote", f"asked on as {inner.name} {type_name(inner.qtype)} "
                           f"{class_name(inner.qclass)}")
        renamed = inner.key != req.key
        if not renamed and not outcome.responses:
            return self.next.serve(inner)  # same question shape: the answer fits the client's question as is
        catch = DNSError if any(isinstance(r, RcodeResponse) for r in outcome.responses) else ()
        try:
            result = self.next.serve(inner)
        except catch as err:
            result = status(err.rcode)
        if catch and not isinstance(result, Answer):
            result = _errors_as_answers(result)
        return then(result, lambda answer: self._for_client(req, inner, answer, outcome.responses))

    def _evaluate(self, req: Request) -> tuple[Outcome, bytes | None]:
        state = State(req)
        responses: list = []
        error = None
        for rule in self.rules:
            asked = rule.rewrite(state)
            if asked is None:
                continue
            try:
                name_wire(state.name)
            except ValueError:
                error = f"plugin/rewrite: invalid name after rewrite: {state.name}"
                break
            responses += asked
            if rule.mode == "stop":
                break
        data = None
        if error is not None:
            outcome = Outcome(None, [], error)
        elif not state.changed() and not responses:
            outcome = _UNTOUCHED
        else:
            outcome = Outcome(state.question(), responses)
            if state.options is not None:
                data = state.request_data()
        if not self.per_client:
            if len(self._outcomes) >= _CACHE_MAX:
                self._outcomes.clear()
            self._outcomes[(req.key, req.qtype, req.qclass)] = outcome
        return outcome, data

    def _for_client(self, req: Request, inner: Request, answer: Answer, responses: list) -> Answer:
        """The answer to the rewritten query, made into one for the client's question (once per answer)."""
        key = (id(answer), req.key, req.qtype, req.qclass, inner.key)
        kept = self._answers.get(key)
        if kept is not None and kept[0] is answer and kept[1] is responses:
            return kept[2]
        if any(isinstance(rule, CnameResponse) for rule in responses):
            return self._follow_cnames(req, inner, answer, responses)  # looked up anew each time
        converted = convert(req, answer, parsed(inner, answer), responses)
        if len(self._answers) >= _CACHE_MAX:
            self._answers.clear()
        self._answers[key] = (answer, responses, converted)
        return converted


    async def _follow_cnames(self, req: Request, inner: Request, answer: Answer, responses: list) -> Answer:
        """As CoreDNS's: each record the answer came with (authority, answer, additional) meets
        the answer rules in reverse order, a cname rule's lookup among them; the records a
        lookup brings meet none (their TTLs are the looked-up answer's own).  A cname rule acts
        on the first CNAME it matches only: CoreDNS looks up again for each later one, and
        appends each answer after the first's, a fan-out that nested lookups multiply."""
        msg = parsed(inner, answer)
        rules = responses[::-1]
        acted: set[int] = set()
        for rr in [*msg.auth, *msg.rr, *msg.ar]:
            for rule in rules:
                if not isinstance(rule, CnameResponse):
                    rewrite_record(rule, rr)
                    continue
                change = None if id(rule) in acted else rule.change(rr)
                if change is None:
                    continue
                acted.add(id(rule))
                # The server bounds how deep such lookups nest (a target rewritten again...).
                await rule.follow(msg, *change, inner.qtype, self.server.lookup)
        return convert(req, answer, msg, responses, records=False)


async def _errors_as_answers(result) -> Answer:
    """An rcode rule sees the rcode of a failure too (as CoreDNS's does)."""
    try:
        return await result
    except DNSError as err:
        return status(err.rcode)


def parsed(inner: Request, answer: Answer) -> DNSRecord:
    """``answer`` as dnslib records (slow path), without its OPT record."""
    msg = DNSRecord.parse(answer.render(inner, TCP_MESSAGE_MAX))
    msg.ar = [rr for rr in msg.ar if rr.rtype != TYPE_OPT]
    return msg


def convert(req: Request, answer: Answer, msg: DNSRecord, responses: list, records: bool = True) -> Answer:
    """Re-pack ``msg`` (``answer`` as records) behind ``req``'s question, applying ``responses``
    (to the records too unless ``records`` is False: they have been)."""
    for section in (msg.auth, msg.rr, msg.ar) if records else ():
        for rr in section:
            for rule in reversed(responses):
                rewrite_record(rule, rr)
    rcode = answer.rcode
    for rule in reversed(responses):
        rcode = rule.rcode(rcode)
    out = Answer.build(label_from_wire(req.key), req.qtype, rcode, msg.rr, msg.auth, msg.ar,
                       aa=bool(answer.flags & AA), ra=bool(answer.flags & RA), plugin=answer.plugin)
    out.flags |= answer.flags & AD
    out.error, out.options = answer.error, answer.options
    return out


def rewrite_record(rule, rr) -> None:
    try:
        rule.record(rr)
    except ValueError as exc:  # an answer rule made a name that is not a domain name
        raise DNSError(SERVFAIL, f"plugin/rewrite: invalid name in the answer after rewrite: {exc}") from None


def _first_arg(d: Directive) -> Token | None:
    return d.args[0] if d.args else None
