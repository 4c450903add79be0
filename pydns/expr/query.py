"""CoreDNS's functions on the query (its plugin/pkg/expression), for the template and view plugins."""

from __future__ import annotations

import ipaddress

from pydns.expr.values import BOOL, INT, STRING, ExprError, Function
from pydns.wire import class_name, type_name


def _incidr(ctx, ip: str, cidr: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ExprError("first argument is not an IP address") from None
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ExprError(f"invalid CIDR address: {cidr}") from None
    if address.version == 6 and address.ipv4_mapped is not None and network.version == 4:
        address = address.ipv4_mapped  # as Go's net.IP.To4 reads it
    return address.version == network.version and address in network


def metadata_value(req, label: str) -> str:
    """The *metadata* plugin's value for ``label`` on this query, or ""."""
    values = getattr(req, "metadata", None) or {}
    value = values.get(str(label), "")
    return str(value() if callable(value) else value)


def _listener(req) -> tuple[str, str]:
    """(address, port) of the listener the query came in on, from its ``dns://host:port`` label."""
    local = str(req.local or "")
    host, _, port = local.removeprefix("dns://").rpartition(":")
    return host.strip("[]"), port


def query_functions() -> dict[str, Function]:
    """name(), type(), client_ip(), incidr(), metadata()... as CoreDNS's expressions have them."""
    def remote(ctx) -> tuple:
        return ctx.req.remote or ("", "")

    return {
        "name": Function(lambda ctx: ctx.req.lname, (), STRING),
        "type": Function(lambda ctx: type_name(ctx.req.qtype), (), STRING),
        "class": Function(lambda ctx: class_name(ctx.req.qclass), (), STRING),
        "proto": Function(lambda ctx: ctx.req.proto, (), STRING, per_query=True),
        "size": Function(lambda ctx: len(ctx.req.data), (), INT, per_query=True),
        "client_ip": Function(lambda ctx: str(remote(ctx)[0]), (), STRING, per_query=True),
        "port": Function(lambda ctx: str(remote(ctx)[1]), (), STRING, per_query=True),
        "id": Function(lambda ctx: ctx.req.id, (), INT, per_query=True),
        "opcode": Function(lambda ctx: ctx.req.opcode, (), INT, per_query=True),
        "do": Function(lambda ctx: bool(ctx.req.do), (), BOOL, per_query=True),
        "bufsize": Function(lambda ctx: 65535 if ctx.req.proto == "tcp" else max(ctx.req.edns_size, 512),
                            (), INT, per_query=True),
        "server_ip": Function(lambda ctx: _listener(ctx.req)[0], (), STRING, per_query=True),
        "server_port": Function(lambda ctx: _listener(ctx.req)[1], (), STRING, per_query=True),
        "incidr": Function(_incidr, (STRING, STRING), BOOL),
        "metadata": Function(lambda ctx, label: metadata_value(ctx.req, label), (STRING,), STRING, per_query=True),
    }
