"""header — sets or clears header flags of queries and of replies.

Syntax::

    header {
        SELECTOR ACTION FLAGS...
    }

SELECTOR is ``query`` (the flags the plugins after this one see, and what is forwarded) or
``response`` (the reply's flags); ACTION is ``set`` or ``clear``; FLAGS are ``aa``
(authoritative), ``ra`` (recursion available) and ``rd`` (recursion desired).  Rules apply in
the order written, so the last one for a flag wins.  A reply echoes the query's RD bit, so
``query set rd`` also sets it in the reply.
"""

from __future__ import annotations

import struct

from pydns.corefile import Directive
from pydns.plugin import PerAnswer, Plugin, register, then
from pydns.wire import AA, RA, RD, Answer, Request

FLAGS = {"aa": AA, "ra": RA, "rd": RD}


def parse_rules(d: Directive, opt: Directive) -> list[tuple[int, bool]]:
    action = str(opt.args[0]).lower() if opt.args else ""
    if not action:
        raise opt.error("plugin/header: setting up rule: no flag action provided")
    if action not in ("set", "clear"):
        raise opt.error(f"plugin/header: setting up rule: unknown flag action={action}, should be set or clear",
                        opt.args[0])
    if len(opt.args) < 2:
        raise opt.error("plugin/header: setting up rule: at least one flag should be given")
    rules = []
    for arg in opt.args[1:]:
        bit = FLAGS.get(str(arg).lower())
        if bit is None:
            raise opt.error(f"plugin/header: setting up rule: unknown/unsupported flag={str(arg).lower()}", arg)
        rules.append((bit, action == "set"))
    return rules


def apply(flags: int, rules: list[tuple[int, bool]]) -> int:
    for bit, state in rules:
        flags = flags | bit if state else flags & ~bit
    return flags


@register("header")
class Header(Plugin):
    memoizable = True  # what it changes follows from the query's bytes and the answer (pydns.replies)

    def __init__(self, server) -> None:
        super().__init__(server)
        self.query: list[tuple[int, bool]] = []
        self.response: list[tuple[int, bool]] = []
        self._kept = PerAnswer()

    def setup(self, d: Directive) -> None:
        if d.args:
            raise d.error(f"plugin/header: takes no arguments, found '{d.args[0]}'", d.args[0])
        for opt in d.options:
            selector = str(opt.name).lower()
            if selector not in ("query", "response"):
                raise opt.error(f"plugin/header: setting up rule: invalid selector={selector} should be query or response")
            (self.query if selector == "query" else self.response).extend(parse_rules(d, opt))
        if not self.query and not self.response:
            raise d.error("plugin/header: needs a block with at least one query or response rule")

    def serve(self, req: Request):
        if self.query:
            flags = apply(req.flags, self.query)
            if flags != req.flags:
                # The plugins after this one (and forward's upstream) see the changed header.
                req.data = req.data[:2] + struct.pack("!H", flags) + req.data[4:]
                req.flags = flags
                req.echo = (req.echo & ~RD) | (flags & RD)
        if not self.response:
            return self.next.serve(req)
        return then(self.next.serve(req), lambda answer: self._reply(req, answer))

    def _reply(self, req: Request, answer: Answer) -> Answer:
        # The reply's RD bit comes from the query when it is spliced: it is changed there.
        echo = apply(req.echo, [(bit, state) for bit, state in self.response if bit == RD])
        if echo != req.echo:
            req.echo = echo
        out = self._kept.get(answer)
        if out is None:
            out = answer.with_body(answer.body)
            out.flags = apply(answer.flags, [(bit, state) for bit, state in self.response if bit != RD]) & ~RD
            self._kept.keep(answer, out)
        return out
