"""timeouts — the TCP server's read, write and idle timeouts, and queries per connection.

Syntax::

    timeouts {
        read DURATION
        write DURATION
        idle DURATION
        maxtcpqueries MAXIMUM
    }

At least one option must be given.  Each DURATION is a Go duration (``30s``, ``1m``,
``1h``) or a number of seconds (``10``), from 1 second to 24 hours:

* ``read`` (default 3s): a query must arrive whole within it, counted from its first byte
  (the connection's first query: from the connect).  A client that trickles its bytes is
  closed at this deadline, however often a byte comes.
* ``write`` (default 5s): replies the client leaves unread this long (the connection has
  stopped being read from for them) close the connection.
* ``idle`` (default 10s): how long a connection may wait between queries.
* ``maxtcpqueries`` (default -1, no limit): after this many queries the connection is
  closed once their replies are sent, so clients behind a connection-based load balancer
  reconnect and spread over the replicas.  A positive integer, or -1.

The values apply to DNS over TCP on the block's addresses; UDP has no timeouts.  Server
blocks that share an address and port share one listener: where several set a value, the
last block in the Corefile wins, as in CoreDNS.  After a reload, new connections get the
new values.  The other TCP bounds (connections per
listener and per client address, answers in flight and unread replies per connection) are
listed in docs/limits.md.
"""

from __future__ import annotations

import re

from pydns.corefile import CorefileError, Directive, Token
from pydns.plugin import Plugin, parse_duration, register

MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 24 * 3600.0
_INTEGER = re.compile(r"[+-]?\d+")


@register("timeouts")
class Timeouts(Plugin):
    multiple = True  # each line is read in turn; a later value replaces an earlier one

    def setup(self, d: Directive) -> None:
        if d.args:
            raise d.error(f"plugin/timeouts: {_arg_error(d.args[-1])}", d.args[-1])
        settings = self.server.tcp_settings
        for opt in d.options:
            if len(opt.args) != 1:
                last = opt.args[-1] if opt.args else opt.name
                raise opt.error(f"plugin/timeouts: {_arg_error(last)}", last)
            value = opt.args[0]
            if opt.name == "maxtcpqueries":
                settings["max_queries"] = _max_queries(value)
                continue
            seconds = _duration(value)
            if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:
                raise value.error(f"plugin/timeouts: timeout provided '{value}' needs to be between "
                                  "1 second and 24 hours")
            if opt.name not in ("read", "write", "idle"):
                raise opt.error(f"plugin/timeouts: unknown option: '{opt.name}'")
            settings[str(opt.name)] = seconds
        if not d.options:
            raise d.error("plugin/timeouts: timeouts block with no timeouts specified")


def _arg_error(last: Token) -> str:
    return f"Wrong argument count or unexpected line ending after '{last}'"


def _duration(tok: Token) -> float:
    """As CoreDNS reads it: a bare integer is seconds, anything else a Go duration."""
    text = str(tok)
    if _INTEGER.fullmatch(text):
        return float(int(text))
    sign = -1.0 if text.startswith("-") else 1.0
    body = Token(text.lstrip("+-"), tok.file, tok.line)
    try:
        return sign * parse_duration(body)
    except CorefileError:
        raise tok.error(f"plugin/timeouts: failed to parse duration '{text}'") from None


def _max_queries(tok: Token) -> int:
    try:
        n = int(str(tok))
    except ValueError:
        raise tok.error(f"plugin/timeouts: invalid value for maxtcpqueries '{tok}': not an integer") from None
    if n == 0 or n < -1:
        raise tok.error(f"plugin/timeouts: maxtcpqueries provided '{n}' needs to be -1 (unlimited) or a "
                        "positive integer")
    return n
