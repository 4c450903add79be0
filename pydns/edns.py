"""EDNS0 options that replies carry (RFC 6891): NSID (RFC 5001) and Extended DNS Errors (RFC 8914).

An ``Answer`` holds its options packed, in order (``Answer.options``); the per-query splice
writes them into the reply's OPT record, which a reply has only when its query had one.
Options are added on the slow path (``with_options``: made once per answer, then kept).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydns.wire import Answer

EDNS_NSID = 3  # option codes: RFC 5001
EDNS_EDE = 15  # RFC 8914, Extended DNS Errors
EDE_BLOCKED, EDE_FILTERED = 15, 17  # its INFO-CODEs (RFC 8914 section 4)

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")


def edns_option(code: int, data: bytes) -> bytes:
    """One EDNS0 option as it sits in an OPT record's rdata: code, length, data."""
    return _HH.pack(code, len(data)) + data


def extended_error(code: int, text: str = "") -> bytes:
    """The Extended DNS Error option (RFC 8914): INFO-CODE and UTF-8 EXTRA-TEXT.  Raises
    ValueError for a text longer than an option holds."""
    data = _H.pack(code) + text.encode()
    if len(data) > 0xFFFF:
        raise ValueError(f"extended DNS error text of {len(data) - 2} bytes: at most {0xFFFF - 2}")
    return edns_option(EDNS_EDE, data)


def with_options(answer: Answer, *options: bytes) -> Answer:
    """``answer`` (its records, flags and rcode) with ``options`` added to its replies' OPT
    record, after any it carries already (slow path: made once per answer, then kept)."""
    out = answer.with_body(answer.body)
    out.options = answer.options + b"".join(options)
    return out


def extended_errors(rdata: bytes) -> bytes:
    """The extended DNS error options among an OPT record's options, as they are packed."""
    kept = []
    at = 0
    while at + 4 <= len(rdata):
        code, length = _HH.unpack_from(rdata, at)
        if at + 4 + length > len(rdata):
            break  # an option running past its record: not passed on
        if code == EDNS_EDE:
            kept.append(rdata[at : at + 4 + length])
        at += 4 + length
    return b"".join(kept)
