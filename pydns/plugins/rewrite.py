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
* ``cname [TYPE] FROM TO`` — the first CNAME target of the answer that matches FROM becomes
  TO; the records after it are replaced by the answer for TO, looked up through the server's
  own plugins (per query).
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

import ipaddress
import re
import struct

from dnslib import QTYPE, RR, DNSLabel, DNSQuestion, DNSRecord, EDNSOption

from pydns.corefile import Directive, Token
from pydns.plugin import DNSError, Plugin, register, then
from pydns.wire import AA, AD, RA, RCODE_NAMES, SERVFAIL, TYPE_OPT, Answer, Request, label_from_wire, status

MAX_REGEX = 10000  # longest pattern accepted, as CoreDNS
_CACHE_MAX = 10000  # remembered outcomes per question, and converted answers
_QTAIL = struct.Struct("!HH")

CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODES = {name: code for code, name in RCODE_NAMES.items()}
RCODES.update({"YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADSIG": 16,
               "BADVERS": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19, "BADNAME": 20, "BADALG": 21,
               "BADTRUNC": 22, "BADCOOKIE": 23})
MATCH_KINDS = ("exact", "prefix", "suffix", "substring", "regex")
EDNS_NSID, EDNS_SUBNET = 3, 8
TYPE_CNAME = 5
VARIABLES = ("{qname}", "{qtype}", "{client_ip}", "{client_port}", "{protocol}", "{server_ip}", "{server_port}")
# dnslib's attribute holding the name inside the records whose values ``answer value`` rewrites.
VALUE_FIELDS = {5: "label", 39: "label", 2: "label", 12: "label", 15: "label", 33: "target", 6: "mname",
                35: "replacement"}


class RuleError(ValueError):
    """A rule that cannot be read; setup turns it into a FILE:LINE error."""


def normalize(name: str) -> str:
    """Lower-cased and fully qualified, as CoreDNS compares names."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


def qtype_code(text: str) -> int:
    try:
        return int(getattr(QTYPE, text.upper()))
    except Exception:  # dnslib's lookup error is its own DNSError
        raise RuleError(f"invalid type {text.upper()!r}") from None


def name_wire(name: str) -> bytes:
    """Wire form of a dotted name; ValueError unless it is a valid domain name."""
    if name == ".":
        return b"\x00"
    if not name.endswith(".") or len(name) > 255:
        raise ValueError(name)
    out = bytearray()
    for label in name[:-1].split("."):
        raw = label.encode("latin-1", "replace")
        if not raw or len(raw) > 63:
            raise ValueError(name)
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(name)
    return bytes(out)


# ---------------------------------------------------------------- string rewriters


def bounded_regex(pattern: str) -> re.Pattern:
    if len(pattern) > MAX_REGEX:
        raise RuleError(f"regex pattern too long: {len(pattern)} > {MAX_REGEX}")
    try:
        return re.compile(pattern)
    except re.error:
        raise RuleError(f"invalid regex pattern: {pattern}") from None


def compile_regex(pattern: str, replacement: str) -> re.Pattern:
    """FROM as a regex, checked the way CoreDNS checks it against the TO that uses its groups."""
    compiled = bounded_regex(pattern)
    used = sum(1 for i in range(101) if "{%d}" % i in replacement)
    if used > compiled.groups:
        raise RuleError(f"the rewrite regex pattern ({replacement}) uses more subexpressions than its "
                        f"corresponding matching regex pattern ({pattern})")
    return compiled


def fill_groups(template: str, match: re.Match) -> str:
    out = template
    groups = (match.group(0),) + match.groups()
    for i, value in enumerate(groups):
        out = out.replace("{%d}" % i, value or "")
    return out


class RegexRewriter:
    def __init__(self, pattern: re.Pattern, replacement: str):
        self.pattern, self.replacement = pattern, replacement

    def __call__(self, src: str) -> str:
        m = self.pattern.search(src)
        return fill_groups(self.replacement, m) if m else src


class RemapRewriter:
    """``orig`` (or a name ending in ``.orig``) gets ``replacement`` in its place."""

    def __init__(self, orig: str, replacement: str):
        self.orig, self.replacement = orig, replacement

    def __call__(self, src: str) -> str:
        if src == self.orig:
            return self.replacement
        cut = len(src) - len(self.orig)
        if cut > 0 and src[cut - 1] == "." and src[cut:] == self.orig:
            return src[:cut] + self.replacement
        return src


class SuffixRewriter:
    def __init__(self, suffix: str, replacement: str):
        self.suffix, self.replacement = suffix, replacement

    def __call__(self, src: str) -> str:
        if src.endswith(self.suffix):
            return src[: len(src) - len(self.suffix)] + self.replacement
        return src


# ---------------------------------------------------------------- response rules


class NameResponse:
    """Rewrites the owner name of every record of the answer."""

    def __init__(self, rewrite):
        self.rewrite = rewrite

    def record(self, rr: RR) -> None:
        old = str(rr.rname)
        new = self.rewrite(old)
        if new != old:
            rr.rname = DNSLabel(new)

    def rcode(self, rcode: int) -> int:
        return rcode


class ValueResponse(NameResponse):
    """Rewrites the name inside CNAME, DNAME, NS, PTR, MX, SRV, SOA and NAPTR records."""

    def record(self, rr: RR) -> None:
        field = VALUE_FIELDS.get(rr.rtype)
        if field is None:
            return
        old = str(getattr(rr.rdata, field))
        new = self.rewrite(old)
        if new != old:
            setattr(rr.rdata, field, DNSLabel(new))


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


# ---------------------------------------------------------------- the state rules work on


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
        record.questions = [DNSQuestion(DNSLabel(self.name), self.qtype, self.qclass)]
        record.ar = [rr for rr in record.ar if rr.rtype != TYPE_OPT]
        size, ttl = self.opt_head
        record.ar.append(RR(".", TYPE_OPT, rclass=size, ttl=ttl,
                            rdata=[EDNSOption(code, data) for code, data in self.options]))
        return bytes(record.pack())


# ---------------------------------------------------------------- request rules


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
        self.kind, self.source, self.target, self.auto, self.answers = kind, source, target, auto, answers
        self.pattern = re.compile(source) if kind == "regex" else None
        if kind == "suffix" and auto:
            # The answer's names get the original suffix back.
            back = SuffixRewriter(target, source)
            self.answers = [NameResponse(back), ValueResponse(back), *answers]
            self.auto = False
        if kind == "exact":
            self.auto = True

    def new_name(self, name: str) -> str | None:
        kind = self.kind
        if kind == "exact":
            return self.target if name == self.source else None
        if kind == "prefix":
            return self.target + name[len(self.source):] if name.startswith(self.source) else None
        if kind == "suffix":
            return name[: len(name) - len(self.source)] + self.target if name.endswith(self.source) else None
        if kind == "substring":
            return name.replace(self.source, self.target) if self.source in name else None
        m = self.pattern.search(name)
        return fill_groups(self.target, m) if m else None

    def rewrite(self, state: State) -> list | None:
        before = state.name
        after = self.new_name(before)
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
        self.kind, self.source, self.target = kind, source, target
        self.pattern = bounded_regex(source) if kind == "regex" else None

    def new_target(self, old: str) -> str | None:
        kind, source, target = self.kind, self.source, self.target
        if kind == "exact":
            return target if old == source else None
        if kind == "prefix":
            return target + old[len(source):] if old.startswith(source) else None
        if kind == "suffix":
            return old[: len(old) - len(source)] + target if old.endswith(source) else None
        if kind == "substring":
            return old.replace(source, target) if source in old else None
        m = self.pattern.search(old)
        return fill_groups(target, m) if m else None

    async def follow(self, msg: DNSRecord, qtype: int, lookup) -> None:
        kept = []
        for rr in msg.rr:
            if rr.rtype != TYPE_CNAME:
                continue
            kept.append(rr)
            new = self.new_target(str(rr.rdata.label))
            if new is None:
                continue
            found = await lookup(new, qtype)
            if found is None:
                return
            rr.rdata.label = DNSLabel(new)
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


class EdnsRule(Rule):
    """One EDNS0 option of the query: set, append, replace or unset."""

    def __init__(self, action: str, code: int, data=None):
        self.action, self.code, self.data = action, code, data

    def value(self, state: State) -> bytes | None:
        return self.data

    def rewrite(self, state: State) -> list | None:
        options = state.edns_options()
        if self.action == "unset":
            options[:] = [opt for opt in options if opt[0] != self.code]
            return []
        for opt in options:
            if opt[0] == self.code:
                if self.action in ("replace", "set"):
                    data = self.value(state)
                    if data is None:
                        return None
                    opt[1] = data
                    return []
                if self.code == EDNS_SUBNET:
                    return None  # append never adds a second client subnet
        if self.action in ("append", "set"):
            data = self.value(state)
            if data is None:
                return None
            options.append([self.code, data])
            return []
        return None


class EdnsVariableRule(EdnsRule):
    """``edns0 local ... {variable}``: the data comes from the query or its metadata."""

    def value(self, state: State) -> bytes | None:
        req, var = state.req, self.data
        if var == "{qname}":
            return state.name.encode("latin-1")
        if var == "{qtype}":
            return struct.pack("!H", state.qtype)
        if var == "{protocol}":
            return req.proto.encode()
        if var in ("{client_ip}", "{client_port}"):
            host, port = (req.remote or ("", 0))[:2]
            return _ip_bytes(host) if var == "{client_ip}" else struct.pack("!H", port)
        if var in ("{server_ip}", "{server_port}"):
            host, port = _local_address(req)
            if host is None:
                return None
            return _ip_bytes(host) if var == "{server_ip}" else struct.pack("!H", port)
        values = getattr(req, "metadata", None)
        found = values.get(var[1:-1]) if values else None
        if callable(found):
            found = found()
        return str(found).encode() if found else None


class EdnsSubnetRule(EdnsRule):
    def __init__(self, action: str, v4: int, v6: int):
        super().__init__(action, EDNS_SUBNET)
        self.v4, self.v6 = v4, v6

    def value(self, state: State) -> bytes | None:
        host = (state.req.remote or ("",))[0]
        try:
            ip = ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        bits, family = (self.v4, 1) if ip.version == 4 else (self.v6, 2)
        net = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
        return struct.pack("!HBB", family, bits, 0) + net.network_address.packed[: (bits + 7) // 8]


def _ip_bytes(host: str) -> bytes | None:
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.packed


def _local_address(req: Request) -> tuple:
    """(host, port) of the listener the query came in on, from its ``dns://host:port`` label."""
    label = str(req.local or "")
    m = re.fullmatch(r"dns://\[?([^\]]*?)\]?:(\d+)", label)
    if not m or not m.group(1):
        return None, 0
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------- reading rules


def parse_rule(args: list[str]) -> Rule:
    if not args:
        raise RuleError("no rule type specified for rewrite")
    mode = "stop"
    first = args[0].lower()
    if first in ("continue", "stop"):
        if len(args) < 2:
            raise RuleError(f"{first} rule must begin with a rule type")
        mode, args = first, args[1:]
    field, rest = args[0].lower(), args[1:]
    if field == "answer":
        raise RuleError("response rewrites must begin with a name rule")
    if field in ("type", "class"):
        if len(rest) != 2:
            raise RuleError(f"{field} rules must have exactly two arguments")
        if field == "type":
            rule: Rule = QuestionRule("qtype", qtype_code(rest[0]), qtype_code(rest[1]))
        else:
            codes = [CLASSES.get(a.upper()) for a in rest]
            for a, code in zip(rest, codes):
                if code is None:
                    raise RuleError(f"invalid class {a.upper()!r}")
            rule = QuestionRule("qclass", *codes)
    elif field == "name":
        rule = parse_name_rule(rest)
    elif field == "ttl":
        rule = parse_ttl_rule(rest)
    elif field == "rcode":
        rule = parse_rcode_rule(rest)
    elif field == "edns0":
        rule = parse_edns_rule(rest)
    elif field == "cname":
        rule = parse_cname_rule(rest)
    else:
        raise RuleError(f"invalid rule type {args[0]!r}")
    rule.mode = mode
    return rule


def parse_name_rule(args: list[str]) -> NameRule:
    if len(args) < 2:
        raise RuleError("too few arguments for a name rule")
    if len(args) == 2:
        kind, source, target = "exact", normalize(args[0]), normalize(args[1])
    else:
        kind = args[0].lower()
        if kind == "regex":
            source, target = args[1], args[2]
        else:
            source, target = normalize(args[1]), normalize(args[2])
    auto, answers = False, []
    if len(args) > 3:
        auto, answers = parse_answer_rules(kind, args[3:])
    if kind == "exact":
        compile_regex(target, source)  # CoreDNS insists TO compiles, even for exact names
    elif kind == "regex":
        compile_regex(source, target)
        target = normalize(args[2])
    elif kind not in MATCH_KINDS:
        raise RuleError(f"name rule supports only exact, prefix, suffix, substring, and regex name matching, "
                        f"received: {kind}")
    return NameRule(kind, source, target, auto, answers)


def parse_answer_rules(kind: str, args: list[str]) -> tuple[bool, list]:
    if len(args) < 2:
        raise RuleError(f"invalid arguments for {kind} rule")
    auto, rules, names, i, last = False, [], 0, 0, ""
    while i < len(args):
        if not last and args[i] != "answer":
            raise RuleError(f"too many arguments for a {kind} rule: expected 'answer', got {args[i]!r}")
        if args[i] == "answer":
            i += 1
        if i == len(args):
            raise RuleError(f"type missing for answer rule for {kind} rule")
        last = args[i]
        i += 1
        if last == "auto":
            auto = True
            continue
        if last not in ("name", "value"):
            raise RuleError(f"invalid type {last!r} for answer rule for {kind} rule")
        if len(args) - i < 2:
            raise RuleError(f"{last} answer rule for {kind} rule: 2 arguments required")
        try:
            pattern = compile_regex(args[i], args[i + 1])
        except RuleError as exc:
            raise RuleError(f"{last} answer rule for {kind} rule: {exc}") from None
        rewriter = RegexRewriter(pattern, normalize(args[i + 1]))
        rules.append(NameResponse(rewriter) if last == "name" else ValueResponse(rewriter))
        names += last == "name"
        i += 2
    if auto and names:
        raise RuleError("auto name answer rule cannot be combined with explicit name answer rules")
    return auto, rules


def parse_cname_rule(args: list[str]) -> CnameRule:
    if len(args) == 2:
        kind, source, target = "exact", args[0].lower(), args[1].lower()
    elif len(args) == 3:
        kind, source, target = args[0].lower(), args[1].lower(), args[2].lower()
        if kind not in MATCH_KINDS:
            raise RuleError(f"unknown cname rewrite type: {kind}")
    else:
        raise RuleError(f"too few ({len(args)}) arguments for a cname rule")
    if kind == "exact":
        source, target = normalize(source), normalize(target)
    return CnameRule(CnameResponse(kind, source, target))


def parse_ttl(text: str) -> tuple[int, int]:
    parts = text.split("-")
    try:
        if len(parts) == 1:
            value = int(parts[0])
            low = high = value
        elif len(parts) == 2 and (parts[0] or parts[1]):
            low = int(parts[0]) if parts[0] else 0
            high = int(parts[1]) if parts[1] else 2147483647
        else:
            raise ValueError(text)
    except ValueError:
        raise RuleError(f"invalid TTL '{text}' for a ttl rule") from None
    if not (0 <= low <= high <= 0xFFFFFFFF) or not all(p.isdigit() or p == "" for p in parts):
        raise RuleError(f"invalid TTL '{text}' for a ttl rule")
    return low, high


def parse_ttl_rule(args: list[str]) -> MatchRule:
    if len(args) < 2:
        raise RuleError(f"too few ({len(args)}) arguments for a ttl rule")
    if len(args) > 3:
        raise RuleError("too many arguments for a ttl rule")
    low, high = parse_ttl(args[-1])
    kind, name = (args[0].lower(), args[1]) if len(args) == 3 else ("exact", args[0])
    return MatchRule(name_matcher(kind, name), TTLResponse(low, high))


def parse_rcode(text: str, what: str) -> int:
    if text.isdigit() and int(text) <= 23:
        return int(text)
    code = RCODES.get(text.upper())
    if code is None:
        raise RuleError(f"invalid {what} RCODE '{text}' for a rcode rule")
    return code


def parse_rcode_rule(args: list[str]) -> MatchRule:
    if len(args) < 3:
        raise RuleError(f"too few ({len(args)}) arguments for a rcode rule")
    if len(args) > 4:
        raise RuleError("too many arguments for a rcode rule")
    old, new = parse_rcode(args[-2], "matching"), parse_rcode(args[-1], "replacement")
    kind, name = (args[0].lower(), args[1]) if len(args) == 4 else ("exact", args[0])
    return MatchRule(name_matcher(kind, name), RcodeResponse(old, new))


def _code(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise RuleError(f"invalid EDNS0 option code {text!r}") from None
    if not 0 <= value <= 0xFFFF:
        raise RuleError(f"EDNS0 option code {text!r} out of range")
    return value


def _bits(text: str, most: int, family: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise RuleError(f"invalid {family} bit mask length {text!r}") from None
    if not 0 <= value <= most:
        raise RuleError(f"invalid {family} bit mask length {value}")
    return value


def parse_edns_rule(args: list[str]) -> EdnsRule:
    if len(args) < 2:
        raise RuleError("too few arguments for an EDNS0 rule")
    kind, action = args[0].lower(), args[1].lower()
    if action not in ("append", "replace", "set", "unset"):
        raise RuleError(f"invalid action: {action!r}")
    if action != "unset" and args[-1] == "revert":
        args = args[:-1]
    want = {"local": 3 if action == "unset" else 4, "nsid": 2, "subnet": 2 if action == "unset" else 4}.get(kind)
    if want is None:
        raise RuleError(f"invalid rule type {kind!r}")
    if len(args) != want:
        raise RuleError(f"EDNS0 {kind} {action} takes {want - 2} argument(s), got {len(args) - 2}")
    if kind == "nsid":
        return EdnsRule(action, EDNS_NSID, b"")
    if kind == "subnet":
        if action == "unset":
            return EdnsRule(action, EDNS_SUBNET)
        return EdnsSubnetRule(action, _bits(args[2], 32, "IPv4"), _bits(args[3], 128, "IPv6"))
    code = _code(args[2])
    if action == "unset":
        return EdnsRule(action, code)
    data = args[3]
    if data.startswith("{") and data.endswith("}"):
        if data not in VARIABLES and not re.fullmatch(r"\{[^/{}]+/[^{}]+\}", data):
            raise RuleError(f"unsupported variable name {data!r}")
        return EdnsVariableRule(action, code, data)
    if data.startswith("0x"):
        try:
            return EdnsRule(action, code, bytes.fromhex(data[2:]))
        except ValueError:
            raise RuleError(f"invalid hex data {data!r}") from None
    return EdnsRule(action, code, data.encode())


# ---------------------------------------------------------------- the plugin


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
        msg = parsed(inner, answer)
        for rule in reversed(responses):
            if isinstance(rule, CnameResponse):
                # The server bounds how deep such lookups nest (a target rewritten again...).
                await rule.follow(msg, req.qtype, self.server.lookup)
        return convert(req, answer, msg, responses)


async def _errors_as_answers(result) -> Answer:
    """An rcode rule sees the rcode of a failure too (as CoreDNS's does)."""
    try:
        return await result
    except DNSError as err:
        return status(err.rcode)


def parsed(inner: Request, answer: Answer) -> DNSRecord:
    """``answer`` as dnslib records (slow path), without its OPT record."""
    msg = DNSRecord.parse(answer.render(inner, 65535))
    msg.ar = [rr for rr in msg.ar if rr.rtype != TYPE_OPT]
    return msg


def convert(req: Request, answer: Answer, msg: DNSRecord, responses: list) -> Answer:
    """Re-pack ``msg`` (``answer`` as records) behind ``req``'s question, applying ``responses``."""
    for section in (msg.auth, msg.rr, msg.ar):
        for rr in section:
            for rule in reversed(responses):
                rule.record(rr)
    rcode = answer.rcode
    for rule in reversed(responses):
        rcode = rule.rcode(rcode)
    out = Answer.build(label_from_wire(req.key), req.qtype, rcode, msg.rr, msg.auth, msg.ar,
                       aa=bool(answer.flags & AA), ra=bool(answer.flags & RA), plugin=answer.plugin)
    out.flags |= answer.flags & AD
    out.error = answer.error
    return out


def _first_arg(d: Directive) -> Token | None:
    return d.args[0] if d.args else None
