"""explain — an HTTP endpoint that says why a name answers as it does (beyond CoreDNS).

Syntax::

    explain [ADDRESS]

``GET /explain?name=NAME&type=TYPE`` on ADDRESS (default ``:8181``, so it shares the
*ready* plugin's listener) asks NAME (type TYPE, default A) as a client would, through
the same routing and plugin chain as every query, and answers JSON: the reply (rcode,
``null`` for a query that gets no reply; flags, answer, authority and additional
records), the server block and chain it met, the plugin that answered and, step by step,
why: a cache hit and its TTL left, a fallthrough, which upstream forward asked, what the kubernetes plugin found (the namespace, the service,
its ready endpoints, a search-list expansion...).  ``port=N`` picks the DNS listener (by
default the port of the server block that names *explain*); ``proto=tcp`` asks as over TCP.  ``pydns explain NAME [TYPE]``
prints the same for a person.

The query is a real one: it is counted in the metrics, logged by *log*, and may fill the
cache, as any client's would.  Off unless the Corefile names it: anyone who can reach the
address learns what the server answers, as they could by asking DNS.  One server block
naming it is enough for every block; blocks naming the same address share one endpoint.
A bad question gets 400 and a JSON ``error``; an explanation not made within 10 seconds
gets 504.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse

from pydns import explain as explaining
from pydns.corefile import Directive
from pydns.httpd import HttpListener, http_address, open_http
from pydns.plugin import Plugin, expect_no_block, register

DEFAULT_ADDRESS = ":8181"
JSON = "application/json"
MAX_NAME = 1024  # characters of an escaped name: a DNS name is at most 255 bytes, each shown as up to 4


@register("explain")
class Explain(Plugin):
    def setup(self, d: Directive) -> None:
        self.addr, self.where = http_address(d, "explain", DEFAULT_ADDRESS)
        expect_no_block(d)
        self.listener: HttpListener | None = None

    async def start(self) -> None:
        self.listener = self.server.http(self.addr, 8181)
        self.listener.add("/explain", self.handle, owner=self)
        await open_http(self.listener, self.addr, self.where, "explain")

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.remove_owner(self)

    def handle(self, query: str):
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        name = params.get("name", [""])[0]
        qtype = params.get("type", ["A"])[0] or "A"
        proto = params.get("proto", ["udp"])[0]
        port = params.get("port", [""])[0]
        if not name:
            return _json(400, {"error": "say which name: /explain?name=NAME&type=TYPE"})
        if len(name) > MAX_NAME:
            return _json(400, {"error": f"name longer than {MAX_NAME} characters"})
        if port and not port.isdigit():
            return _json(400, {"error": f"port must be a number, not {port!r}"})
        # By default the DNS port of this block: where pydns listens on several, the one it names.
        return self._explain(name, qtype, int(port) if port else self.server.ports[0], proto)

    async def _explain(self, name: str, qtype: str, port: int | None, proto: str):
        try:
            out = await explaining.explain(self.server.instance, name, qtype, port, proto)
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        except asyncio.TimeoutError:
            return _json(504, {"error": f"no answer within {explaining.DEADLINE:g} s"})
        return _json(200, out)


def _json(status: int, body: dict) -> tuple[int, str, bytes]:
    return status, JSON, json.dumps(body, indent=2).encode() + b"\n"
