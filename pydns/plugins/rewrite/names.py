"""Names and strings for the rewrite rules: normalising, wire form, regexes and replacements."""

from __future__ import annotations

import re

from dnslib import QTYPE, DNSLabel

from pydns.parser import presentation
from pydns.wire import label_from_wire

MAX_REGEX = 10000  # longest pattern accepted, as CoreDNS
MATCH_KINDS = ("exact", "prefix", "suffix", "substring", "regex")


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
    """Wire form of a fully qualified name in presentation format, its ``\\.`` and ``\\DDD``
    escapes read as miekg/dns reads them (``Request.lname`` is written so); ValueError unless
    it is a valid domain name."""
    if name == ".":
        return b"\x00"
    if not name:
        raise ValueError(name)
    out = bytearray()
    label = bytearray()
    i, end = 0, len(name)
    while i < end:
        c = name[i]
        if c == ".":
            if not label or len(label) > 63:
                raise ValueError(name)
            out.append(len(label))
            out += label
            label.clear()
        elif c == "\\":
            digits = name[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                if int(digits) > 255:
                    raise ValueError(name)
                label.append(int(digits))
                i += 3
            elif i + 1 < end:
                label += name[i + 1].encode("latin-1", "replace")
                i += 1
            else:
                raise ValueError(name)
        else:
            label += c.encode("latin-1", "replace")
        i += 1
    if label:  # not fully qualified: the last label has no dot after it
        raise ValueError(name)
    out.append(0)
    if len(out) > 255:
        raise ValueError(name)
    return bytes(out)


def label_text(label: DNSLabel) -> str:
    """A dnslib name in presentation format, escaped as ``Request.name`` is."""
    return presentation(b"".join(bytes((len(part),)) + part for part in label.label) + b"\x00")


def text_label(name: str) -> DNSLabel:
    """A name in presentation format as a dnslib name; ValueError unless it is a valid one."""
    return label_from_wire(name_wire(name))


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


class NameReplacer:
    """A name-matching kind (exact, prefix, suffix, substring, regex) with FROM and TO: the new
    name for a name it matches, else None."""

    def __init__(self, kind: str, source: str, target: str):
        self.kind, self.source, self.target = kind, source, target
        self.pattern = bounded_regex(source) if kind == "regex" else None

    def __call__(self, name: str) -> str | None:
        kind, source, target = self.kind, self.source, self.target
        if kind == "exact":
            return target if name == source else None
        if kind == "prefix":
            return target + name[len(source):] if name.startswith(source) else None
        if kind == "suffix":
            return name[: len(name) - len(source)] + target if name.endswith(source) else None
        if kind == "substring":
            return name.replace(source, target) if source in name else None
        m = self.pattern.search(name)
        return fill_groups(target, m) if m else None
