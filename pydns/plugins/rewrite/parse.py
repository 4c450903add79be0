"""Reading a rewrite rule from its Corefile words."""

from __future__ import annotations

from pydns.edns import EDNS_NSID
from pydns.plugins.metadata import is_label
from pydns.plugins.rewrite.edns import EDNS_SUBNET, VARIABLES, EdnsRule, EdnsSubnetRule, EdnsVariableRule
from pydns.plugins.rewrite.names import (MATCH_KINDS, MAX_REGEX, RegexRewriter, RuleError, compile_regex, normalize,
                                             qtype_code)
from pydns.plugins.rewrite.rules import (CnameResponse, CnameRule, MatchRule, NameResponse, NameRule,
                                             QuestionRule, RcodeResponse, Rule, TTLResponse, ValueResponse,
                                             name_matcher)
from pydns.wire import RCODE_NAMES

CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODES = {name: code for code, name in RCODE_NAMES.items()}
RCODES.update({"YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADSIG": 16,
               "BADVERS": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19, "BADNAME": 20, "BADALG": 21,
               "BADTRUNC": 22, "BADCOOKIE": 23})


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
    elif kind == "regex" and len(source) > MAX_REGEX:
        raise RuleError(f"regex pattern too long in a cname rule: {len(source)} > {MAX_REGEX}")
    try:
        return CnameRule(CnameResponse(kind, source, target))
    except RuleError:  # the regex does not compile
        raise RuleError(f"invalid cname rewrite regex pattern: {source}") from None


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
        if data not in VARIABLES and not is_label(data[1:-1]):
            raise RuleError(f"unsupported variable name {data!r}")
        return EdnsVariableRule(action, code, data)
    if data.startswith("0x"):
        try:
            return EdnsRule(action, code, bytes.fromhex(data[2:]))
        except ValueError:
            raise RuleError(f"invalid hex data {data!r}") from None
    return EdnsRule(action, code, data.encode())
