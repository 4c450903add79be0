"""bufsize — caps the EDNS0 buffer size a query advertises.

Syntax::

    bufsize [SIZE]

SIZE is 512 to 4096 (default 1232, which avoids IP fragmentation on most networks).  A query
whose OPT record advertises more is handled as if it had advertised SIZE: the plugins after
this one (forward, when it asks upstream) see SIZE, and the reply is truncated to SIZE and
advertises it.  Queries without EDNS0, or advertising less, are left alone.
"""

from __future__ import annotations

import struct

from pydns.corefile import Directive
from pydns.plugin import Plugin, expect_args, expect_no_block, register
from pydns.parser import Parser
from pydns.wire import TYPE_OPT, Request

DEFAULT = 1232
_COUNTS = struct.Struct("!HHH")  # ANCOUNT, NSCOUNT, ARCOUNT


def opt_class_offset(data: bytes, qend: int) -> int | None:
    """Where the OPT record's class (the buffer size) sits in a query already read, or None.

    Its TTL (extended rcode, version, flags) follows at +2, its rdata length at +6 and its
    options at +8.
    """
    an, ns, ar = _COUNTS.unpack_from(data, 6)
    p = Parser(data, qend + 4)
    for _ in range(an + ns + ar):
        _start, rtype, _rclass, _ttl, rdlen = p.get_record()
        if rtype == TYPE_OPT:
            return p.current - 8  # the rdata follows class, TTL and rdata length
        p.skip(rdlen)
    return None


@register("bufsize")
class Bufsize(Plugin):
    size = DEFAULT
    memoizable = True  # what it changes follows from the query's bytes alone (pydns.replies)

    def setup(self, d: Directive) -> None:
        expect_no_block(d)
        args = expect_args(d, 0, 1)
        if args:
            text = str(args[0])
            if not text.isdigit() or not 512 <= int(text) <= 4096:
                raise d.error(f"plugin/bufsize: SIZE must be an integer from 512 to 4096, got '{text}'", args[0])
            self.size = int(text)

    def serve(self, req: Request):
        if req.edns_size > self.size:
            # The query was read before: its OPT record is well formed.
            at = opt_class_offset(req.data, req.qend)
            req.data = req.data[:at] + struct.pack("!H", self.size) + req.data[at + 2:]
            req.edns_size = self.size
        return self.next.serve(req)
