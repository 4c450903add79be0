"""Domain names and zones: normalising server block keys and plugin zone arguments.

Names are kept lower-cased and fully qualified (``example.org.``).  A CIDR written where a
zone is expected becomes the reverse zones it covers, split on label boundaries the way
CoreDNS does it (``10.0.0.0/17`` is the 128 zones ``0.0.10.in-addr.arpa.`` to
``127.0.10.in-addr.arpa.``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pydns.corefile import Token
from pydns.parser import label_offsets

SUPPORTED_SCHEMES = ("dns",)
KNOWN_SCHEMES = ("dns", "tls", "https", "grpc", "quic", "https3")


def fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def to_wire(name: str) -> bytes:
    """Wire form of a (lower-cased) dotted name, for matching against queries."""
    name = fqdn(name)
    if name == ".":
        return b"\x00"
    out = bytearray()
    for label in name[:-1].split("."):
        raw = label.encode("latin-1")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def wire_lookup(key: bytes, table: dict):
    """The value for the most specific suffix of the wire name ``key`` in ``table``, or None.

    Suffixes are taken at label boundaries only, so ``\\x03foo\\x03org\\x00`` tries itself,
    ``\\x03org\\x00`` and the root ``\\x00``.
    """
    get = table.get
    for i in label_offsets(key):
        value = get(key[i:])
        if value is not None:
            return value
    return get(b"\x00")


def in_wire_zones(key: bytes, zones) -> bool:
    """Does the wire name ``key`` fall in one of ``zones`` (a set of wire names)?"""
    for i in label_offsets(key):
        if key[i:] in zones:
            return True
    return b"\x00" in zones


def zones_by_wire(zones) -> dict[bytes, str]:
    """``zones`` (lower-case FQDNs) keyed by their wire form: ``wire_lookup(req.key, table)``
    is then the most specific of them that a query name falls in, compared label by label
    (so an escaped dot inside a label is not taken for a label boundary)."""
    return {to_wire(zone): zone for zone in zones}


def is_subdomain(child: str, parent: str) -> bool:
    """True when ``child`` equals or sits below ``parent`` (both lower-case FQDNs)."""
    return parent == "." or child == parent or child.endswith("." + parent)


def reverse_zones(cidr: str) -> list[str] | None:
    """Reverse zones covering a CIDR, or None when ``cidr`` is not one."""
    if "/" not in cidr:
        return None
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    step = 8 if net.version == 4 else 4
    prefix = -(-net.prefixlen // step) * step
    subnets = [net] if prefix == net.prefixlen else list(net.subnets(new_prefix=prefix))
    zones = []
    for sub in subnets:
        labels = sub.network_address.reverse_pointer.split(".")
        keep = prefix // step  # labels of the address part that the zone fixes
        total = 4 if net.version == 4 else 32
        zones.append(".".join(labels[total - keep :]) + ".")
    return zones


def normalize_zones(args: list[Token] | list[str], default: list[str]) -> list[str]:
    """Zone arguments of a plugin (``hosts FILE example.org 10.0.0.0/24``) or the block's zones."""
    if not args:
        return list(default)
    zones: list[str] = []
    for arg in args:
        rev = reverse_zones(arg)
        zones.extend(rev if rev else [fqdn(arg)])
    return zones


@dataclass(frozen=True)
class Key:
    """One server block key: ``[dns://]zone[:port]`` after normalisation."""

    zone: str
    port: int
    token: Token


def parse_key(tok: Token, default_port: int) -> list[Key]:
    text = str(tok)
    scheme = "dns"
    if "://" in text:
        scheme, text = text.split("://", 1)
        scheme = scheme.lower()
        if scheme not in KNOWN_SCHEMES:
            raise tok.error(f"unknown transport scheme '{scheme}://' in '{tok}'")
        if scheme not in SUPPORTED_SCHEMES:
            raise tok.error(f"transport '{scheme}://' is not supported; use dns://")
    port = default_port
    colon = text.rfind(":")
    if colon == len(text) - 1 and text:
        raise tok.error(f"expecting a port after the last colon in '{tok}'")
    if colon != -1 and text[colon + 1 :].isdigit():
        port = int(text[colon + 1 :])
        text = text[:colon]
        if not 0 <= port < 65536:
            raise tok.error(f"port {port} out of range in '{tok}'")
    if text == "":
        text = "."
    if len(text) > 255:
        raise tok.error(f"zone is too long: {len(text)} > 255")
    rev = reverse_zones(text)
    if rev is not None:
        return [Key(z, port, tok) for z in rev]
    if "/" in text:
        raise tok.error(f"invalid CIDR '{text}'")
    name = fqdn(text)
    if any(len(label) > 63 for label in name[:-1].split(".")) or ".." in name:
        raise tok.error(f"zone is not a valid domain name: '{text}'")
    return [Key(name, port, tok)]
