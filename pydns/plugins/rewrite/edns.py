"""The rewrite rules for EDNS0 options of the query: local, nsid and subnet."""

from __future__ import annotations

import ipaddress
import re
import struct

from pydns.plugins.rewrite.rules import Rule, State
from pydns.wire import Request

EDNS_SUBNET = 8  # RFC 7871, Client Subnet
VARIABLES = ("{qname}", "{qtype}", "{client_ip}", "{client_port}", "{protocol}", "{server_ip}", "{server_port}")


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
        ip = _address((state.req.remote or ("",))[0])
        if ip is None:
            return None
        bits, family = (self.v4, 1) if ip.version == 4 else (self.v6, 2)
        net = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
        return struct.pack("!HBB", family, bits, 0) + net.network_address.packed[: (bits + 7) // 8]


def _address(host: str):
    """The client's address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return None
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip


def _ip_bytes(host: str) -> bytes | None:
    ip = _address(host)
    return ip.packed if ip is not None else None


def _local_address(req: Request) -> tuple:
    """(host, port) of the listener the query came in on, from its ``dns://host:port`` label."""
    label = str(req.local or "")
    m = re.fullmatch(r"dns://\[?([^\]]*?)\]?:(\d+)", label)
    if not m or not m.group(1):
        return None, 0
    return m.group(1), int(m.group(2))
