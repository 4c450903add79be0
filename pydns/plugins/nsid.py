"""nsid — tells clients that ask (RFC 5001) which server answered.

Syntax::

    nsid [DATA]

A query whose EDNS0 OPT record carries an NSID option gets a reply whose OPT record carries
an NSID option with DATA (the words given, joined by spaces; default: the host's name).
Other queries are not touched.  The reply is the same ready answer as without the plugin,
with the option appended when it is spliced (after any the answer carries already, such as
an extended DNS error).
"""

from __future__ import annotations

import socket
import struct

from pydns.corefile import Directive
from pydns.edns import EDNS_NSID, edns_option, with_options
from pydns.plugin import PerAnswer, Plugin, register, then
from pydns.plugins.bufsize import opt_class_offset
from pydns.wire import Answer, Request

_OPTION = struct.Struct("!HH")


def asks_nsid(req: Request) -> bool:
    """Does the query's OPT record carry an NSID option?"""
    if not req.edns_size:
        return False
    at = opt_class_offset(req.data, req.qend)
    (rdlen,) = struct.unpack_from("!H", req.data, at + 6)
    pos, end = at + 8, at + 8 + rdlen
    while pos + 4 <= end:
        code, length = _OPTION.unpack_from(req.data, pos)
        if code == EDNS_NSID:
            return True
        pos += 4 + length
    return False


@register("nsid")
class Nsid(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        self.data = socket.gethostname() or "localhost"
        self.option = edns_option(EDNS_NSID, self.data.encode())
        self._kept = PerAnswer()

    def setup(self, d: Directive) -> None:
        if d.block is not None:
            raise d.error(f"plugin/nsid: unknown property '{d.block[0].name}'" if d.block else
                          "plugin/nsid: takes no block")
        if d.args:
            self.data = " ".join(map(str, d.args))
        self.option = edns_option(EDNS_NSID, self.data.encode())

    def serve(self, req: Request):
        if not asks_nsid(req):
            return self.next.serve(req)
        return then(self.next.serve(req), self._with_nsid)

    def _with_nsid(self, answer: Answer) -> Answer:
        return self._kept.get(answer) or self._kept.keep(answer, with_options(answer, self.option))
