"""Why a name answers as it does: a real query, run with a trace (``pydns explain``).

``explain(instance, name, qtype)`` builds an ordinary query and runs it through the same
dispatch the UDP and TCP listeners use (``pydns.transport.dispatch``): the same routing to
a server block, the same chain, the same caches.  The reply it reports is that query's own
reply, so the explanation cannot show another answer than a client gets.

What the explanation adds comes from two places:

* ``Request.trace``: None for every client query (a class attribute, so the hot path pays
  nothing).  For an explained query it is a ``Trace``; plugins note there, on their slow
  paths only, decisions that do not end in an answer of their own: a cache miss, a
  fallthrough, the upstream that answered, a failure.
* ``Plugin.explain(req, answer)``: after the chain has answered, the plugin that wrote the
  answer (``Answer.plugin``) is asked why.  A synchronous answer is described in the same
  turn of the event loop that made it, so from the very state it was made from.

The result is a dict, served as JSON by the *explain* plugin and printed by
``pydns explain`` (``describe``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

from dnslib import EDNS0, DNSRecord

from pydns.transport import dispatch, settle
from pydns.wire import Answer, Request, rcode_of, type_name

# The query explain makes: UDP with an EDNS0 buffer of 1232 bytes, as dig sends by default.
EDNS_SIZE = 1232
DEADLINE = 10.0  # seconds: forward's own limit is 5 s for all its attempts


class Trace:
    """The steps an explained query went through, in order.

    A plugin notes a step only behind ``if req.trace is not None:``, so that a client's
    query does not even build the words.
    """

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def note(self, plugin: str, verdict: str, reason: str, **fields) -> None:
        self.steps.append({"plugin": plugin, "verdict": verdict, "reason": reason, **fields})


def query_bytes(name: str, qtype: str) -> bytes:
    query = DNSRecord.question(name, qtype)
    query.header.rd = 1
    query.add_ar(EDNS0(udp_len=EDNS_SIZE))
    return bytes(query.pack())


def _router_for(instance, port: int | None):
    """(Corefile port, router) of the listener asked about: by its Corefile or its real port."""
    routers = instance.routers
    if port is None and len(routers) == 1:
        return next(iter(routers.items()))
    if port in routers:
        return port, routers[port]
    for (_host, configured), real in instance.addresses.items():
        if real == port and configured in routers:
            return configured, routers[configured]
    if port is None:
        raise ValueError(f"pydns listens on several ports ({', '.join(map(str, _real_ports(instance)))}): say which")
    raise ValueError(f"pydns does not listen on port {port} (it does on {', '.join(map(str, _real_ports(instance)))})")


def _real_ports(instance) -> list[int]:
    return sorted(set(instance.addresses.values()))


async def explain(instance, name: str, qtype: str = "A", port: int | None = None, proto: str = "udp") -> dict:
    """Run the query ``name``/``qtype`` as a client's and say what answered it and why.

    Raises ValueError for a question that cannot be asked (bad name, type or port).
    """
    if proto not in ("udp", "tcp"):
        raise ValueError(f"proto must be udp or tcp, not {proto!r}")
    configured, router = _router_for(instance, port)
    try:
        data = query_bytes(name, qtype.upper())
    except Exception as exc:  # dnslib: a bad type name, a label over 63 bytes...
        raise ValueError(f"cannot ask {name!r} {qtype!r}: {exc}") from None
    req = Request(data, proto, ("127.0.0.1", 0), "explain")
    req.trace = trace = Trace()
    result = dispatch(router, req)
    answer = result if isinstance(result, Answer) else await asyncio.wait_for(settle(req, result), DEADLINE)
    server = req.server
    out: dict = {"name": req.name, "type": type_name(req.qtype), "port": configured}
    if answer is None:  # dropped: no reply at all
        out.update(rcode=None, flags=[], answer=[], authority=[], additional=[])
        return _dropped(out, server, req.zone, trace)
    reply = DNSRecord.parse(req.render(answer))
    out.update({
        "rcode": rcode_of(answer),
        "flags": [f for f in ("aa", "tc", "rd", "ra", "ad", "cd") if getattr(reply.header, f)],
        "answer": [_record(rr) for rr in reply.rr],
        "authority": [_record(rr) for rr in reply.auth],
        "additional": [_record(rr) for rr in reply.ar if rr.rtype != 41],
    })
    if server is None:
        zones = sorted({zone for _cfg, zone in router.by_zone.values()})
        out.update(block=None, chain=[], plugin=None, steps=trace.steps)
        out["reason"] = (f"no server block on port {configured} serves a zone that holds this name "
                         f"(zones: {', '.join(zones)}): REFUSED")
        return out
    _block_and_chain(out, server, req.zone)
    out["plugin"] = answer.plugin or None
    steps = trace.steps
    writer = server.plugin(answer.plugin) if answer.plugin else None
    why = writer.explain(req, answer) if writer is not None else None
    if why is not None:
        reason, fields = why
        steps.append({"plugin": answer.plugin, "verdict": "answered", "reason": reason, **fields})
    elif answer.plugin:
        if not (steps and steps[-1]["plugin"] == answer.plugin):  # else it said itself what it did
            steps.append({"plugin": answer.plugin, "verdict": "answered",
                          "reason": f"{answer.plugin} wrote this answer"})
    elif not steps or steps[-1]["verdict"] == "passed on":
        steps.append({"plugin": None, "verdict": "failed",
                      "reason": f"every plugin passed the query on: the end of the chain answers {rcode_of(answer)}"})
    out["steps"] = steps
    out["reason"] = _summary(out)
    return out


def _block_and_chain(out: dict, server, zone: str) -> None:
    out["block"] = {"keys": [str(t) for t in server.block.keys], "zone": zone}
    chain = []
    plugin = server.handler
    while plugin is not None:
        chain.append(plugin.name)
        plugin = plugin.next
    out["chain"] = chain[:-1]  # without the end of the chain


def _dropped(out: dict, server, zone: str, trace: Trace) -> dict:
    """The explanation of a query that gets no reply at all (``rcode`` None); the plugin that
    dropped it noted why as the last step."""
    _block_and_chain(out, server, zone)
    out["plugin"] = trace.steps[-1]["plugin"] if trace.steps else None
    out["steps"] = trace.steps
    out["reason"] = f"server block `{' '.join(out['block']['keys'])}` (zone {zone}); no reply"
    if trace.steps:
        out["reason"] += f": {trace.steps[-1]['plugin']}: {trace.steps[-1]['reason']}"
    return out


def _record(rr) -> str:
    return " ".join(str(rr).split())


def _summary(out: dict) -> str:
    keys = " ".join(out["block"]["keys"])
    last = out["steps"][-1] if out["steps"] else {}
    who = f"plugin {out['plugin']}" if out["plugin"] else "no plugin"
    text = f"server block `{keys}` (zone {out['block']['zone']}); {who} answered {out['rcode']}"
    if last.get("reason"):
        text += f": {last['reason']}"
    return text


# ---------------------------------------------------------------- the command line


def fetch(url: str, name: str, qtype: str, port: int | None = None, timeout: float = 15.0) -> tuple[int, dict]:
    """Ask a running pydns's /explain endpoint: (HTTP status, its JSON)."""
    params = {"name": name, "type": qtype}
    if port is not None:
        params["port"] = str(port)
    target = url.rstrip("/") + "/explain?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode("utf-8", "replace").strip()}


def describe(out: dict) -> str:
    """The explanation as a person reads it."""
    lines = [f"{out['name']} {out['type']}: {out['rcode'] or 'no reply'}"]
    if out.get("block"):
        lines.append(f"  server block: {' '.join(out['block']['keys'])} (zone {out['block']['zone']}, "
                     f"port {out['port']})")
        lines.append(f"  chain:        {' -> '.join(out['chain'])}")
    for step in out["steps"]:
        who = step["plugin"] or "-"
        lines.append(f"  {who}: {step['verdict']}: {step['reason']}")
    if not out.get("block"):
        lines.append(f"  {out['reason']}")
    for section in ("answer", "authority", "additional"):
        if out[section]:
            lines.append(f"  {section}:")
            lines.extend(f"    {rr}" for rr in out[section])
    return "\n".join(lines)
