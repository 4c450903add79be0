"""template — answers queries from records written as templates of the query.

Syntax::

    template CLASS TYPE [ZONE...] {
        match REGEX...
        answer RR
        additional RR
        authority RR
        rcode CODE
        ederror EXTENDED_ERROR_CODE [EXTRA_REASON]
        fallthrough [FALLTHROUGH-ZONE...]
        upstream
    }

CLASS (``IN``, ``CH``, ``ANY``...) and TYPE (``A``, ``PTR``, ``ANY``...) select the queries;
ZONE defaults to the server block's zones.  Several ``template`` lines may be given; a query
meets them in order.  ``match`` holds regular expressions tried in order against the
lower-cased, fully qualified query name (default ``.*``); the first that matches wins.
Named groups are written ``(?P<name>...)`` (Go's ``(?<name>...)`` is read the same).

``answer``, ``additional`` and ``authority`` each take one or more zone-file records
(``"{{ .Name }} 60 IN A 10.0.0.1"``; TTL 3600 and class IN when left out) written in Go's
template syntax, with the data ``.Name`` (the query name, lower-cased), ``.Zone`` (the
matched zone), ``.Class``, ``.Type``, ``.Regex`` (the regex that matched), ``.Match``
(``index .Match 0`` is the whole match, ``index .Match 1`` the first group), ``.Group`` (the
groups by name and by number: ``.Group.a``, ``index .Group "1"``), ``.Question``
(``.Question.Name``, ``.Qtype``, ``.Qclass``), ``.Message`` (``.Message.Id``), ``.Remote``
(the client's address) and ``.Meta "LABEL"`` (a metadata label, with the *metadata*
plugin), and the functions ``parseInt S BASE BITS``, ``index``, ``len``, ``print``,
``printf``, ``println`` and ``slice``.  A template that does not compile, or uses another
function or construct (``if``, ``range``, ``$variables``), is an error at start-up; a field
that does not exist fails when a query executes it (SERVFAIL, logged by *errors*), as in
CoreDNS.

``rcode`` sets the answer's rcode (default NOERROR; ``SERVFAIL`` answers SERVFAIL at once).
An ``answer`` that is a CNAME, for an A or AAAA query, is followed through the server's own
plugins and their answer appended.  A query in a template's zone that matches none of its
regexes answers SERVFAIL, unless ``fallthrough`` (limited to FALLTHROUGH-ZONEs if given)
hands it to the next template, then to the next plugin.  ``upstream`` is accepted and has no
effect (CNAME targets are always followed).  ``ederror`` adds an extended DNS error (RFC
8914: EXTENDED_ERROR_CODE 0-65535 and EXTRA_REASON as its text) to every reply the template
writes, whatever its rcode, for clients that sent an EDNS0 OPT record; ``rcode SERVFAIL``
writes no reply of its own, so it carries none.  CoreDNS's ``var`` and
``expr`` (its expression language) are not available and are reported at start-up.

Answers that depend only on the question are kept (bounded) and spliced per query.
Matches, template failures and invalid records are counted in CoreDNS's
``coredns_template_matches_total``, ``coredns_template_template_failures_total`` and
``coredns_template_rr_failures_total``.
"""

from __future__ import annotations

import re

from dnslib import QTYPE, RR, DNSRecord

from pydns import metrics
from pydns.corefile import Directive
from pydns.plugin import DNSError, Plugin, expect_args, register, unknown_option
from pydns.plugins.rewrite.parse import CLASSES, RCODES
from pydns.plugins.template.gotemplate import Template, TemplateError, compile_template
from pydns.wire import (SERVFAIL, Answer, Request, class_name, extended_error, label_from_wire, status, type_name,
                        with_options)
from pydns.zones import normalize_zones, wire_lookup, zones_by_wire

MAX_REGEX = 10000
_CACHE_MAX = 10000
TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_ANY = 1, 5, 28, 255
CLASS_ANY = 255
# Data that differs between two queries with the same question: answers using it are not kept.
PER_QUERY = {"Question", "Message", "Remote", "Meta"}
# Go's named-group spelling (?<name>...) is Python's (?P<name>...); look-behinds are not RE2.
_LABELS = ["server", "zone", "view", "class", "type"]
COUNTS = metrics.plain_counters("template", {
    "coredns_template_matches_total": ("Counter of template regex matches.", _LABELS),
    "coredns_template_template_failures_total": ("Counter of go template failures.",
                                                 _LABELS + ["section", "template"]),
    "coredns_template_rr_failures_total": ("Counter of mis-templated RRs.", _LABELS + ["section", "template"]),
})
_GO_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_PARENS = re.compile(r'"(?:[^"\\]|\\.)*"|[()]')


class QuestionView:
    """``.Question``: the question as the client sent it."""

    def __init__(self, req: Request):
        self.Name, self.Qtype, self.Qclass = req.name, req.qtype, req.qclass

    def __str__(self) -> str:
        return f";{self.Name}\t{class_name(self.Qclass)}\t{type_name(self.Qtype)}"


class MessageView:
    """``.Message``: the query (its ID, flags and question)."""

    def __init__(self, req: Request):
        self._req = req
        self.Id = req.id
        self.RecursionDesired = bool(req.flags & 0x0100)
        self.Question = [QuestionView(req)]

    def __str__(self) -> str:
        return str(DNSRecord.parse(self._req.data))


class TemplateData:
    def __init__(self, req: Request, zone: str, regex: re.Pattern, m: re.Match, qclass: str, qtype: str):
        self.Zone, self.Name, self.Regex = zone, req.lname, regex.pattern
        self.Class, self.Type = qclass, qtype
        groups = [m.group(0)] + [g or "" for g in m.groups()]
        self.Match = groups
        self.Group = {str(i): g for i, g in enumerate(groups)}
        for name, index in regex.groupindex.items():
            self.Group[name] = groups[index]
        self.Remote = (req.remote or ("",))[0]
        self.Var: dict = {}
        self._req = req

    @property
    def Question(self) -> QuestionView:
        return QuestionView(self._req)

    @property
    def Message(self) -> MessageView:
        return MessageView(self._req)

    def Meta(self, label: str) -> str:
        values = getattr(self._req, "metadata", None) or {}
        value = values.get(str(label), "")
        return str(value() if callable(value) else value)


class Entry:
    """One ``template`` line."""

    def __init__(self, qclass: int, qtype: int, zones: list[str]):
        self.qclass, self.qtype, self.zones = qclass, qtype, zones_by_wire(zones)
        self.regexes: list[re.Pattern] = []
        self.sections: dict[str, list[Template]] = {"answer": [], "additional": [], "authority": []}
        self.rcode = 0
        self.ederror = b""  # the extended DNS error option its replies carry, if any
        self.fall: dict[bytes, str] | None = None
        self.per_query = False

    def falls_through(self, key: bytes) -> bool:
        return self.fall is not None and wire_lookup(key, self.fall) is not None


@register("template")
class TemplatePlugin(Plugin):
    multiple = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.entries: list[Entry] = []
        self.zones: dict[bytes, str] = {}  # every template's zones, by wire form
        self._kept: dict[tuple, tuple] = {}  # question -> (answer, its labels of matches_total)

    def setup(self, d: Directive) -> None:
        args = expect_args(d, 2)
        qclass = CLASSES.get(str(args[0]))
        if qclass is None:
            raise d.error(f"plugin/template: invalid query class {args[0]}", args[0])
        try:
            qtype = int(getattr(QTYPE, str(args[1])))
        except Exception:  # dnslib's lookup error is its own DNSError
            raise d.error(f"plugin/template: invalid RR type {args[1]}", args[1]) from None
        entry = Entry(qclass, qtype, normalize_zones(args[2:], self.server.zones))
        self.zones.update(entry.zones)
        for opt in d.options:
            self._option(d, entry, opt)
        if not entry.regexes:
            entry.regexes.append(re.compile(".*"))
        self.entries.append(entry)

    def _option(self, d: Directive, entry: Entry, opt: Directive) -> None:
        name = str(opt.name)
        values = [str(a) for a in opt.args]
        if opt.block is not None:
            raise opt.error(f"plugin/template: '{name}' takes no block")
        if name in ("match", "answer", "additional", "authority", "rcode", "ederror") and not values:
            raise opt.error(f"plugin/template: '{name}' needs an argument")
        if name == "match":
            for text in values:
                if len(text) > MAX_REGEX:
                    raise opt.error(f"plugin/template: regex pattern too long: {len(text)} > {MAX_REGEX}")
                try:
                    entry.regexes.append(re.compile(_GO_NAMED_GROUP.sub("(?P<", text)))
                except re.error as exc:
                    raise opt.error(f"plugin/template: could not parse regex: {text}, {exc}") from None
        elif name in entry.sections:
            for text in values:
                try:
                    compiled = compile_template(text)
                except TemplateError as exc:
                    raise opt.error(f"plugin/template: could not compile template: {text}, {exc}") from None
                entry.per_query = entry.per_query or bool(compiled.fields & PER_QUERY)
                entry.sections[name].append(compiled)
        elif name == "rcode":
            expect_args(opt, 1, 1)
            code = RCODES.get(values[0])
            if code is None:
                raise opt.error(f"plugin/template: unknown rcode {values[0]}", opt.args[0])
            entry.rcode = code
        elif name == "ederror":
            if len(values) > 2:
                raise opt.error("plugin/template: ederror takes a code and an optional reason", opt.args[2])
            if not (values[0].isascii() and values[0].isdigit()) or int(values[0]) > 0xFFFF:
                raise opt.error(f"plugin/template: error parsing extended DNS error code {values[0]}", opt.args[0])
            try:
                entry.ederror = extended_error(int(values[0]), values[1] if len(values) == 2 else "")
            except ValueError as exc:
                raise opt.error(f"plugin/template: {exc}", opt.args[1]) from None
        elif name == "fallthrough":
            entry.fall = zones_by_wire(normalize_zones(opt.args, ["."]))
        elif name == "upstream":
            pass
        elif name in ("var", "expr"):
            raise opt.error(f"plugin/template: '{name}' (CoreDNS's expression language) is not available in pydns")
        else:
            raise unknown_option(d, opt)

    # ---- per query
    def serve(self, req: Request):
        kept = self._kept.get((req.key, req.qtype, req.qclass))
        if kept is not None:
            answer, labels = kept
            COUNTS.bump(("coredns_template_matches_total", req.server.label, *labels))
            return answer
        if wire_lookup(req.key, self.zones) is None:
            return self.next.serve(req)
        name = req.lname
        for entry in self.entries:
            data = self._match(entry, req, name)
            if data is None:
                if entry.falls_through(req.key) or not _selects(entry, req):
                    continue
                return status(SERVFAIL)
            labels = (data.Zone, "", data.Class, data.Type)
            COUNTS.bump(("coredns_template_matches_total", req.server.label, *labels))
            if entry.rcode == SERVFAIL:
                raise DNSError(SERVFAIL, f"plugin/template: {name} answers SERVFAIL as configured")
            return self._answer(req, entry, data, labels)
        return self.next.serve(req)

    def _match(self, entry: Entry, req: Request, name: str) -> TemplateData | None:
        if not _selects(entry, req):
            return None
        for regex in entry.regexes:
            m = regex.search(name)
            if m is None:
                continue
            zone = wire_lookup(req.key, entry.zones)
            qclass = class_name(req.qclass if req.qclass != CLASS_ANY else entry.qclass)
            qtype = type_name(req.qtype if req.qtype != TYPE_ANY else entry.qtype)
            return TemplateData(req, zone, regex, m, qclass, qtype)
        return None

    def _answer(self, req: Request, entry: Entry, data: TemplateData, labels: tuple):
        sections = {}
        for section, templates in entry.sections.items():
            records = []
            for tmpl in templates:
                failed = (req.server.label, *labels, section, tmpl.source)
                try:
                    text = tmpl.render(data)
                except TemplateError as exc:
                    COUNTS.bump(("coredns_template_template_failures_total", *failed))
                    raise DNSError(SERVFAIL, f"plugin/template: {section} template failed: {exc}") from None
                try:
                    parsed = RR.fromZone(_unparenthesize(text), ttl=3600)
                    if len(parsed) != 1:
                        raise ValueError(f"{text!r} is not one resource record")
                except Exception as exc:  # dnslib's zone parser raises several kinds
                    COUNTS.bump(("coredns_template_rr_failures_total", *failed))
                    raise DNSError(SERVFAIL, f"plugin/template: {section} record is invalid: {exc}") from None
                records += parsed
            sections[section] = records
        cnames = [rr for rr in sections["answer"] if rr.rtype == TYPE_CNAME]
        if cnames and req.qtype in (TYPE_A, TYPE_AAAA):
            return self._follow(req, entry, sections, cnames)
        answer = self._build(req, entry, sections)
        if not entry.per_query:
            if len(self._kept) >= _CACHE_MAX:
                self._kept.clear()
            self._kept[(req.key, req.qtype, req.qclass)] = (answer, labels)
        return answer

    async def _follow(self, req: Request, entry: Entry, sections: dict, cnames: list) -> Answer:
        for rr in cnames:
            found = await self.server.lookup(str(rr.rdata.label), req.qtype)
            if found is not None:
                sections["answer"] += found.rr
        return self._build(req, entry, sections)

    def _build(self, req: Request, entry: Entry, sections: dict) -> Answer:
        answer = Answer.build(label_from_wire(req.key), req.qtype, entry.rcode, sections["answer"],
                              sections["authority"], sections["additional"], plugin=self.name)
        return with_options(answer, entry.ederror) if entry.ederror else answer


def _unparenthesize(text: str) -> str:
    """The record on one line: zone-file parentheses outside quotes become spaces (dnslib wants it so)."""
    return _PARENS.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)


def _selects(entry: Entry, req: Request) -> bool:
    """Is the query in the entry's zones, class and type?"""
    if wire_lookup(req.key, entry.zones) is None:
        return False
    if entry.qclass != CLASS_ANY and req.qclass != CLASS_ANY and req.qclass != entry.qclass:
        return False
    return entry.qtype == TYPE_ANY or req.qtype == TYPE_ANY or req.qtype == entry.qtype
