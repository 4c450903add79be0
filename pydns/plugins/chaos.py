"""chaos — answers the CH class TXT queries that ask a server who it is.

Syntax::

    chaos [VERSION] [AUTHORS...]

``version.bind`` and ``version.server`` answer VERSION (default ``pydns-<version>``);
``authors.bind`` answers one TXT record per author, in random order (default: the
project's authors); ``hostname.bind`` and ``id.server`` answer the host's name.  Only
queries of class CH and type TXT for these names are answered; anything else goes on to the
next plugin.  Each string is cut to 255 characters.  The server block must receive these
names (a ``.`` block does).
"""

from __future__ import annotations

import random
import socket

from dnslib import RR, TXT

from pydns import __version__
from pydns.corefile import Directive
from pydns.plugin import Plugin, expect_no_block, register
from pydns.wire import Answer, Request, label_from_wire

CLASS_CH, TYPE_TXT = 3, 16
AUTHORS = ["pydns"]


def trim(text: str) -> str:
    return text[:255]


@register("chaos")
class Chaos(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        self.version = trim(f"pydns-{__version__}")
        self.authors = list(AUTHORS)

    def setup(self, d: Directive) -> None:
        expect_no_block(d)
        args = [str(a) for a in d.args]
        if args:
            self.version = trim(args[0])
        if len(args) > 1:
            self.authors = sorted({trim(a) for a in args[1:]})

    def serve(self, req: Request):
        if req.qclass != CLASS_CH or req.qtype != TYPE_TXT:
            return self.next.serve(req)
        name = req.lname
        if name in ("version.bind.", "version.server."):
            texts = [self.version]
        elif name in ("hostname.bind.", "id.server."):
            texts = [trim(socket.gethostname() or "localhost")]
        elif name == "authors.bind.":
            texts = random.sample(self.authors, len(self.authors))
        else:
            return self.next.serve(req)
        owner = label_from_wire(req.key)
        records = [RR(owner, TYPE_TXT, rclass=CLASS_CH, ttl=0, rdata=TXT(t.encode())) for t in texts]
        return Answer.build(owner, TYPE_TXT, answer=records, aa=False, plugin=self.name)
