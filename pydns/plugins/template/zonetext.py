"""One zone-file record, read as miekg/dns's ``dns.NewRR`` reads it.

dnslib's zone parser splits names at every dot and decodes ``\\DDD`` before splitting, so a
name with an escaped dot (``a\\.b.example.`` is two labels, the first holding a dot), an
escaped backslash or a ``#`` (a comment to dnslib) comes out wrong; in quoted strings it
reads ``\\DDD`` as octal.  Query names reach the templates escaped (``.Name``), so the
records written from them carry such escapes.  Here every escape, and every ``#`` outside
quotes, is set aside as a placeholder made of characters dnslib keeps as they are, and put
back as the octet it stands for once dnslib has split the record into its names and fields.
"""

from __future__ import annotations

import re

from dnslib import RR, DNSLabel

_ESCAPED = re.compile(r'"(?:[^"\\]|\\.)*"|\\[0-9]{3}|\\.|#', re.S)
_ESCAPE = re.compile(r"\\[0-9]{3}|\\.", re.S)
_PARENS = re.compile(r'"(?:[^"\\]|\\.)*"|[()]')
_TILDES = re.compile(r"~+")


def parse_record(text: str, ttl: int = 3600) -> RR:
    """The one record ``text`` holds (TTL ``ttl`` and class IN when left out); ValueError if
    it is not exactly one valid record."""
    longest = max((len(run) for run in _TILDES.findall(text)), default=0)
    mark = "~" * (longest + 1)  # longer than any run of ~ in the text: cannot be mistaken
    octets: list[bytes] = []

    def hide(m: re.Match) -> str:
        token = m.group(0)
        if token.startswith('"'):
            return '"' + _ESCAPE.sub(hide, token[1:-1]) + '"'
        octets.append(_octet(token))
        return f"{mark}{len(octets) - 1}{mark}"

    hidden = _unparenthesize(_ESCAPED.sub(hide, text))
    parsed = RR.fromZone(hidden, ttl=ttl)
    if len(parsed) != 1:
        raise ValueError(f"{text!r} is not one resource record")
    rr = parsed[0]
    if octets:
        placeholder = re.compile(re.escape(mark.encode()) + rb"(\d+)" + re.escape(mark.encode()))

        def restore(raw: bytes) -> bytes:
            return placeholder.sub(lambda m: octets[int(m.group(1))], raw)

        rr.rname = _restored_label(rr.rname, restore)
        for attr, value in vars(rr.rdata).items():
            if isinstance(value, DNSLabel):
                setattr(rr.rdata, attr, _restored_label(value, restore))
            elif isinstance(value, bytes):
                setattr(rr.rdata, attr, restore(value))
            elif isinstance(value, list) and all(isinstance(v, bytes) for v in value):
                setattr(rr.rdata, attr, [restore(v) for v in value])
        if mark in rr.toZone():
            raise ValueError(f"{text!r}: an escape where the record takes none")
    return rr


def _octet(escape: str) -> bytes:
    if escape == "#":
        return b"#"
    if len(escape) == 4 and escape[1:].isdigit():
        value = int(escape[1:])
        if value > 255:
            raise ValueError(f"bad escape {escape}")
        return bytes([value])
    return escape[1:].encode("latin-1")


def _restored_label(label: DNSLabel, restore) -> DNSLabel:
    labels = tuple(restore(part) for part in label.label)
    if any(not 0 < len(part) <= 63 for part in labels) or sum(len(p) + 1 for p in labels) + 1 > 255:
        raise ValueError(f"bad name {label}")
    return DNSLabel(labels)


def _unparenthesize(text: str) -> str:
    """The record on one line: zone-file parentheses outside quotes become spaces (dnslib wants it so)."""
    return _PARENS.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)
