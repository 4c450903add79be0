"""template — answers queries from records written as templates of the query.

Syntax::

    template CLASS TYPE [ZONE...] {
        match REGEX...
        var NAME EXPRESSION
        expr EXPRESSION
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
Named groups are written ``(?P<name>...)`` (Go's ``(?<name>...)`` is read the same).  A
name with special characters is matched as miekg/dns writes it: ``a\\.b.example.`` for a
first label holding a dot (and records written from ``.Name`` own that same name).

``var`` sets NAME to the value of an EXPRESSION, worked out for each query that matched a
regex; it is ``.Var.NAME`` in the records and NAME in the expressions after it.  ``expr``
is a condition: the query matches only when every ``expr`` is ``true``; otherwise it is
treated as matching no regex (``fallthrough`` or SERVFAIL).  Expressions are written in
CoreDNS's expression language (expr-lang.org, as the *view* plugin's), with the query's
functions ``name()``, ``type()``, ``class()``, ``proto()``, ``size()``, ``client_ip()``,
``port()``, ``id()``, ``opcode()``, ``do()``, ``bufsize()``, ``server_ip()``,
``server_port()`` (the address the listener was bound to, empty when it listens on all),
``incidr(IP, CIDR)``, ``metadata(LABEL)`` and ``group(NAME or INDEX)`` (a capture group of
the matching regex, "" when there is none); its operators (arithmetic, comparison,
``and``/``or``/``not``, ``in``, ``matches``, ``contains``, ``startsWith``, ``endsWith``,
``?:``, ``??``, ``..``, ``|``, indexing and slicing) and builtins (``len``, ``upper``,
``lower``, ``trim``, ``split``, ``replace``, ``join``, ``int``, ``float``, ``string``,
``any``/``all``/``none``/``one``/``filter``/``map``/``count``/``sum``/``find``/``reduce``
with ``#`` predicates, ``keys``, ``first``...; not its date and JSON functions, nor
``groupBy`` and ``sortBy``; ``matches`` uses Python's regular expressions, which, unlike
Go's RE2, can take long on a pattern that backtracks: write patterns that do not nest
repetitions).  Quote an expression that holds ``#``: the Corefile reads
``#`` as the start of a comment.  An expression that does not parse, names an unknown
function or variable, or combines values of the wrong types, and a NAME that is not an
identifier or is already a function, a keyword or an earlier var, is an error at start-up,
as in CoreDNS.  One that fails on a query (``int('x')``, ``incidr`` of no address) answers
SERVFAIL, without fallthrough, as in CoreDNS; pydns counts it in
``pydns_template_expression_failures_total`` and logs it once per expression.

``answer``, ``additional`` and ``authority`` each take one or more zone-file records
(``"{{ .Name }} 60 IN A 10.0.0.1"``; TTL 3600 and class IN when left out) written in Go's
template syntax, with the data ``.Name`` (the query name, lower-cased), ``.Zone`` (the
matched zone), ``.Class``, ``.Type``, ``.Regex`` (the regex that matched), ``.Match``
(``index .Match 0`` is the whole match, ``index .Match 1`` the first group), ``.Group`` (the
groups by name and by number: ``.Group.a``, ``index .Group "1"``), ``.Question``
(``.Question.Name``, ``.Qtype``, ``.Qclass``), ``.Message`` (``.Message.Id``), ``.Remote``
(the client's address) and ``.Meta "LABEL"`` (a metadata label, with the *metadata*
plugin), ``.Var`` (the vars).  Go's control flow works as text/template defines it:
``{{ if }}``/``{{ else if }}``/``{{ else }}``/``{{ end }}``, ``{{ with }}``, ``{{ range }}``
(``$i, $v :=``, ``break``, ``continue``), ``$variables`` (``$x := ...``, ``$`` the data),
``{{-``/``-}}`` trimming and ``{{/* comments */}}``, with the functions ``and``, ``or``,
``not``, ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``parseInt S BASE BITS``,
``index``, ``len``, ``slice``, ``print``, ``printf``, ``println``, ``html`` and
``urlquery``.  A template that does not compile, or uses another function or ``define``,
``template``, ``block``, ``call`` or ``js``, is an error at start-up; a field that does not
exist, or a comparison of unlike types, fails when a query executes it (SERVFAIL, logged by
*errors*), as in CoreDNS.

``rcode`` sets the answer's rcode (default NOERROR; ``SERVFAIL`` answers SERVFAIL at once).
An ``answer`` that is a CNAME, for an A or AAAA query, is followed through the server's own
plugins and their answer appended.  A query in a template's zone that matches none of its
regexes answers SERVFAIL, unless ``fallthrough`` (limited to FALLTHROUGH-ZONEs if given)
hands it to the next template, then to the next plugin.  ``upstream`` is accepted and has no
effect (CNAME targets are always followed).  ``ederror`` adds an extended DNS error (RFC
8914: EXTENDED_ERROR_CODE 0-65535 and EXTRA_REASON as its text) to every reply the template
writes, whatever its rcode, for clients that sent an EDNS0 OPT record; ``rcode SERVFAIL``
writes no reply of its own, so it carries none.

Answers that depend only on the question are kept (bounded) and spliced per query; those
that read the client, the message or metadata (``.Remote``, ``.Question``, ``.Message``,
``.Meta``, and vars or exprs using ``client_ip()``, ``metadata()``, ``do()``...) are made
for each query, as are the answers of templates after such an ``expr``.
Matches, template failures and invalid records are counted in CoreDNS's
``coredns_template_matches_total``, ``coredns_template_template_failures_total`` and
``coredns_template_rr_failures_total``.
"""

# Over 400 lines, of which 85 are the plugin's Corefile documentation above (the source of
# docs/plugins/template.md); the code is the data the records see, setup and the serve path.
# Go templates are gotemplate/, expressions pydns/expr/, record text zonetext.py.

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from dnslib import QTYPE, DNSRecord

from pydns import metrics
from pydns.corefile import Directive
from pydns.edns import extended_error, with_options
from pydns.expr import (ANY, RESERVED, STRING, ExprError, Function, Program, compile_expr, metadata_value,
                        query_functions)
from pydns.plugin import DNSError, Plugin, expect_args, register, unknown_option
from pydns.plugins.rewrite.parse import CLASSES, RCODES
from pydns.plugins.template.gotemplate import Template, TemplateError, compile_template
from pydns.plugins.template.zonetext import parse_record
from pydns.wire import SERVFAIL, Answer, Request, class_name, label_from_wire, status, type_name
from pydns.zones import normalize_zones, wire_lookup, zones_by_wire

log = logging.getLogger("pydns.template")

MAX_REGEX = 10000
_CACHE_MAX = 10000
TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_ANY = 1, 5, 28, 255
CLASS_ANY = 255
# Data that differs between two queries with the same question: answers using it are not kept.
PER_QUERY = {"Question", "Message", "Remote", "Meta", "*"}  # "*": the whole data (``{{ print . }}``)
# Go's named-group spelling (?<name>...) is Python's (?P<name>...); look-behinds are not RE2.
_LABELS = ["server", "zone", "view", "class", "type"]
COUNTS = metrics.plain_counters("template", {
    "coredns_template_matches_total": ("Counter of template regex matches.", _LABELS),
    "coredns_template_template_failures_total": ("Counter of go template failures.",
                                                 _LABELS + ["section", "template"]),
    "coredns_template_rr_failures_total": ("Counter of mis-templated RRs.", _LABELS + ["section", "template"]),
    "pydns_template_expression_failures_total": (
        "Queries answered SERVFAIL because a var or expr expression failed while running.", _LABELS),
})
_GO_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ExprContext(NamedTuple):
    """What the functions of a var or expr read: the query, and the groups its regex matched."""

    req: Request
    groups: dict


def _group(ctx: ExprContext, name) -> str:
    """group('name') or group(1): a capture group of the matching regex, "" when there is none."""
    if isinstance(name, bool) or not isinstance(name, (int, str)):
        return ""
    return ctx.groups.get(str(name), "")


FUNCTIONS = {**query_functions(), "group": Function(_group, (ANY,), STRING)}


class VarMap(dict):
    """``.Var``: a name that was not set reads as Go's nil interface (``<no value>``)."""

    zero = None


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
        self.Var = VarMap()
        self._req = req

    @property
    def Question(self) -> QuestionView:
        return QuestionView(self._req)

    @property
    def Message(self) -> MessageView:
        return MessageView(self._req)

    def Meta(self, label: str) -> str:
        return metadata_value(self._req, label)


class Entry:
    """One ``template`` line."""

    def __init__(self, qclass: int, qtype: int, zones: list[str]):
        self.qclass, self.qtype, self.zones = qclass, qtype, zones_by_wire(zones)
        self.regexes: list[re.Pattern] = []
        self.sections: dict[str, list[Template]] = {"answer": [], "additional": [], "authority": []}
        self.rcode = 0
        self.ederror = b""  # the extended DNS error option its replies carry, if any
        self.fall: dict[bytes, str] | None = None
        self.vars: list[tuple[str, Program]] = []
        self.exprs: list[Program] = []
        self.var_types: dict[str, str] = {}  # what the expressions after a var know of it
        self.per_query = False  # do its answers depend on more than the question?
        self.per_query_match = False  # does whether it matches?

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
        self._failed: set[Program] = set()  # expressions whose failure has been logged

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
        elif name == "var":
            self._var(entry, opt, values)
        elif name == "expr":
            if not values:
                raise opt.error("plugin/template: 'expr' needs an expression")
            program = _compile(opt, entry, " ".join(values))
            entry.per_query_match = entry.per_query_match or program.per_query
            entry.exprs.append(program)
        else:
            raise unknown_option(d, opt)

    def _var(self, entry: Entry, opt: Directive, values: list[str]) -> None:
        if len(values) < 2:
            raise opt.error("plugin/template: 'var' needs a NAME and an EXPRESSION")
        name = values[0]
        if not _VAR_NAME.match(name):
            raise opt.error(f'plugin/template: invalid variable name "{name}"', opt.args[0])
        if name in FUNCTIONS or name in RESERVED or name in entry.var_types:
            raise opt.error(f'plugin/template: variable name "{name}" is reserved', opt.args[0])
        program = _compile(opt, entry, " ".join(values[1:]))
        entry.var_types[name] = program.result
        entry.per_query_match = entry.per_query_match or program.per_query
        entry.vars.append((name, program))

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
        keep = True  # does the answer depend only on the question (then it is kept)?
        for entry in self.entries:
            keep = keep and not (entry.per_query_match and _selects(entry, req))
            try:
                data = self._match(entry, req, name)
            except ExprError:  # counted and logged: as CoreDNS, SERVFAIL without fallthrough
                return status(SERVFAIL)
            if data is None:
                if entry.falls_through(req.key) or not _selects(entry, req):
                    continue
                return status(SERVFAIL)
            labels = (data.Zone, "", data.Class, data.Type)
            COUNTS.bump(("coredns_template_matches_total", req.server.label, *labels))
            if entry.rcode == SERVFAIL:
                raise DNSError(SERVFAIL, f"plugin/template: {name} answers SERVFAIL as configured")
            return self._answer(req, entry, data, labels, keep and not entry.per_query)
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
            data = TemplateData(req, zone, regex, m, qclass, qtype)
            # the first regex that matches decides: its vars and exprs say whether the entry does
            return data if self._evaluate(entry, req, data) else None
        return None

    def _evaluate(self, entry: Entry, req: Request, data: TemplateData) -> bool:
        """Set the entry's vars (in ``data.Var``), then are all its exprs true?"""
        context = ExprContext(req, data.Group)
        program = None
        try:
            for name, program in entry.vars:
                data.Var[name] = program.run(context, data.Var)
            for program in entry.exprs:
                if program.run(context, data.Var) is not True:
                    return False
        except ExprError as exc:
            COUNTS.bump(("pydns_template_expression_failures_total", req.server.label, data.Zone, "",
                         data.Class, data.Type))
            if program not in self._failed:
                self._failed.add(program)
                log.warning("%s: plugin/template: expression %r failed for %s: %s (answered SERVFAIL; counted in "
                            "pydns_template_expression_failures_total, logged once)", program.where,
                            program.source, data.Name, exc)
            raise
        return True

    def _answer(self, req: Request, entry: Entry, data: TemplateData, labels: tuple, keep: bool):
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
                    records.append(parse_record(text))
                except Exception as exc:  # dnslib's zone parser raises several kinds
                    COUNTS.bump(("coredns_template_rr_failures_total", *failed))
                    raise DNSError(SERVFAIL, f"plugin/template: {section} record is invalid: {exc}") from None
            sections[section] = records
        cnames = [rr for rr in sections["answer"] if rr.rtype == TYPE_CNAME]
        if cnames and req.qtype in (TYPE_A, TYPE_AAAA):
            return self._follow(req, entry, sections, cnames)
        answer = self._build(req, entry, sections)
        if keep:
            if len(self._kept) >= _CACHE_MAX:
                self._kept.clear()
            self._kept[(req.key, req.qtype, req.qclass)] = (answer, labels)
        return answer

    async def _follow(self, req: Request, entry: Entry, sections: dict, cnames: list) -> Answer:
        for rr in cnames:
            found = await self.server.lookup(rr.rdata.label, req.qtype)  # a label keeps escaped dots
            if found is not None:
                sections["answer"] += found.rr
        return self._build(req, entry, sections)

    def _build(self, req: Request, entry: Entry, sections: dict) -> Answer:
        answer = Answer.build(label_from_wire(req.key), req.qtype, entry.rcode, sections["answer"],
                              sections["authority"], sections["additional"], plugin=self.name)
        return with_options(answer, entry.ederror) if entry.ederror else answer


def _compile(opt: Directive, entry: Entry, source: str) -> Program:
    """A var's or expr's expression, checked against the functions and the vars set before it."""
    try:
        program = compile_expr(source, FUNCTIONS, entry.var_types)
    except ExprError as exc:
        raise opt.error(f"plugin/template: could not compile expression: {source}, {exc}") from None
    program.where = f"{opt.file}:{opt.line}"
    return program


def _selects(entry: Entry, req: Request) -> bool:
    """Is the query in the entry's zones, class and type?"""
    if wire_lookup(req.key, entry.zones) is None:
        return False
    if entry.qclass != CLASS_ANY and req.qclass != CLASS_ANY and req.qclass != entry.qclass:
        return False
    return entry.qtype == TYPE_ANY or req.qtype == TYPE_ANY or req.qtype == entry.qtype
