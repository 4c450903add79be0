"""Ready answers of the kubernetes plugin, packed straight to wire bytes.

A cluster holds tens of thousands of names and every change re-renders a few of them, so
records are packed here with ``struct`` rather than through dnslib's object model (which
costs ~100µs an answer).  Names are wire bytes (lower case, ending in the root label).
Compression only ever points into the question (offset 12 onwards), never from one record
into another: an answer stays valid for every query of the same name whatever its case,
and loadbalance may reorder its records freely.  SRV targets are never compressed
(RFC 2782).
"""

from __future__ import annotations

import socket
import struct

from pydns.parser import label_offsets, labels_of
from pydns.wire import NOERROR, Answer

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_TXT, TYPE_AAAA, TYPE_SRV = 1, 2, 5, 6, 12, 16, 28, 33
CLASS_IN = 1
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400

_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_SRV = struct.Struct("!HHH")
_SOA_TIMES = struct.Struct("!IIIII")
_PTR_AT = struct.Struct("!H")
_QUESTION = b"\xc0\x0c"  # a pointer to the question's name

NS_DNS = b"\x02ns\x03dns"
HOSTMASTER = b"\x0ahostmaster"


_LABELS: dict[str, bytes] = {}
_LABELS_MAX = 65536


def label(text: str, remember: bool = True) -> bytes:
    """One wire label (lower-cased); ValueError if it cannot be one.

    Cluster names repeat (namespaces, services, ports), so labels are remembered, unless
    the caller knows the name is one of a kind.
    """
    wire = _LABELS.get(text)
    if wire is None:
        raw = text.lower().encode("utf-8")
        if not raw or len(raw) > 63 or b"." in raw:
            raise ValueError(f"not a DNS label: {text!r}")
        wire = bytes((len(raw),)) + raw
        if not remember:
            return wire
        if len(_LABELS) >= _LABELS_MAX:
            _LABELS.clear()
        _LABELS[text] = wire
    return wire


def name_wire(name: str) -> bytes:
    """Wire form of a dotted name (lower-cased, made fully qualified)."""
    name = name.lower().rstrip(".")
    if not name:
        return b"\x00"
    return b"".join(label(part) for part in name.split(".")) + b"\x00"


_IN_ADDR = b"\x07in-addr\x04arpa\x00"
_IP6 = b"\x03ip6\x04arpa\x00"
_NIBBLES = {c: bytes((1, ord(c))) for c in "0123456789abcdef"}


def reverse_wire(ip: str) -> bytes:
    """The PTR name of an address in canonical text form, as wire bytes."""
    if ":" in ip:
        digits = socket.inet_pton(socket.AF_INET6, ip).hex()
        return b"".join(_NIBBLES[c] for c in reversed(digits)) + _IP6
    return b"".join(label(part) for part in reversed(ip.split("."))) + _IN_ADDR


def ip_of_reverse(wire: bytes) -> str | None:
    """The address whose PTR name is ``wire`` (canonical text), or None if it names none."""
    if wire.endswith(_IN_ADDR):
        labels, want = wire_labels(wire[: -len(_IN_ADDR)]), 4
    elif wire.endswith(_IP6):
        labels, want = wire_labels(wire[: -len(_IP6)]), 32
    else:
        return None
    if len(labels) != want:
        return None
    try:
        if want == 4:
            ip = socket.inet_ntop(socket.AF_INET, bytes(int(part) for part in reversed(labels)))
        else:
            ip = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(b"".join(reversed(labels)).decode("ascii")))
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    # Only the canonical spelling names the address (no leading zeros, lower-case nibbles).
    return ip if reverse_wire(ip) == wire else None


def wire_labels(wire: bytes) -> list[bytes]:
    """The labels of the leading part of a wire name (up to a root label, if any)."""
    return labels_of(wire)


def pointer(offset: int) -> bytes:
    return _PTR_AT.pack(0xC000 | offset)


def address(ip: str) -> tuple[int, bytes]:
    """(record type, packed address) of an address in canonical text form."""
    if ":" in ip:
        return TYPE_AAAA, socket.inet_pton(socket.AF_INET6, ip)
    return TYPE_A, socket.inet_pton(socket.AF_INET, ip)


class Packer:
    """Packs records that follow a question for ``qkey`` (compressing into it)."""

    __slots__ = ("suffixes",)

    def __init__(self, qkey: bytes):
        self.suffixes = {qkey[i:]: 12 + i for i in label_offsets(qkey)}

    def name(self, wire: bytes) -> bytes:
        get = self.suffixes.get
        for i in label_offsets(wire):
            off = get(wire[i:])
            if off is not None:
                return wire[:i] + pointer(off)
        return wire

    def rr(self, owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
        head = _QUESTION if self.suffixes.get(owner) == 12 else self.name(owner)
        return head + _FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata

    # -- records at the question's own name
    def here(self, rtype: int, ttl: int, rdata: bytes) -> bytes:
        return _QUESTION + _FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata

    def srv(self, ttl: int, priority: int, weight: int, port: int, target: bytes) -> bytes:
        return self.here(TYPE_SRV, ttl, _SRV.pack(priority, weight, port) + target)

    def named(self, rtype: int, ttl: int, target: bytes) -> bytes:
        """A record at the question's name whose data is one name (CNAME, PTR, NS)."""
        return self.here(rtype, ttl, self.name(target))


def soa_record(zone_at: bytes, ttl: int, serial: int, minttl: int) -> bytes:
    """An SOA for the zone whose name is written as ``zone_at`` (usually a pointer)."""
    rdata = (NS_DNS + zone_at + HOSTMASTER + zone_at
             + _SOA_TIMES.pack(serial & 0xFFFFFFFF, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, minttl))
    return zone_at + _FIXED.pack(TYPE_SOA, CLASS_IN, ttl, len(rdata)) + rdata


def txt_rdata(*strings: str) -> bytes:
    out = bytearray()
    for s in strings:
        raw = s.encode("utf-8")[:255]
        out.append(len(raw))
        out += raw
    return bytes(out)


def build(answer: list[bytes], additional: list[bytes] = (), authority: list[bytes] = (), *, ttl: int | None,
          rcode: int = NOERROR, plugin: str = "kubernetes") -> Answer:
    """An authoritative Answer from packed records."""
    body = b"".join((*answer, *authority, *additional))
    return Answer(rcode, len(answer), len(authority), len(additional), body, aa=True, ttl=ttl, plugin=plugin)
