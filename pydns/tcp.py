"""The TCP listener: length-prefixed queries, pipelined on each connection, within bounds.

A connection answers its queries as each completes, so pipelined queries that wait on an
upstream do not hold up the others.  What a client can make the server hold is bounded
(docs/limits.md lists each bound):

* deadlines per message, not per byte, as miekg/dns sets them: a query must arrive whole
  within the *read* timeout from its first byte (the first query: from the connect), the
  connection may sit between queries for the *idle* timeout, and replies the client does
  not take within the *write* timeout close it.  A client that trickles bytes cannot keep
  a connection past its read deadline;
* per-connection flow control: while more than ``TCP_WRITE_HIGH_WATER`` bytes of replies
  wait for the client to read them, or ``TCP_MAX_INFLIGHT`` answers are still being
  worked out, the connection is not read from; past ``TCP_MAX_PENDING_BYTES`` of unread
  replies it is closed.  The read buffer holds at most one message.  A query that gets no
  reply (acl's ``drop``) frees its place among the answers in flight like one that was
  answered, and the connection goes on serving, as CoreDNS's does;
* connection counts: ``TCP_MAX_CONNECTIONS`` per listener, and at most
  ``TCP_MAX_PER_SOURCE`` of them from one client address (IPv4 address or IPv6 /64), so
  one client cannot take them all.  A connection's slot is free once it is closed *and*
  its answers still being worked out are done.

The *timeouts* plugin sets read, write, idle and the queries served per connection
(``maxtcpqueries``); the other bounds are the constants below.  Every connection closed or
refused at a bound, and every reply that could not be sent, is counted (pydns.stats) and
logged once per cause.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import struct

from pydns import stats
from pydns.transport import Router, dispatch, settle
from pydns.wire import Answer, MalformedQuery, Request, badvers

log = logging.getLogger("pydns")

# The defaults of CoreDNS's TCP server; the timeouts plugin changes them per listener.
TCP_READ_TIMEOUT = 3.0
TCP_WRITE_TIMEOUT = 5.0
TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_QUERIES = -1  # queries served per connection before it is closed; -1: no limit

TCP_MAX_CONNECTIONS = 1000
TCP_MAX_PER_SOURCE = 250
TCP_MAX_INFLIGHT = 32
TCP_WRITE_HIGH_WATER = 64 * 1024
TCP_WRITE_LOW_WATER = 16 * 1024
TCP_MAX_PENDING_BYTES = 256 * 1024
# The read buffer's usual size; it grows to hold a larger message (at most 2 + 65535 bytes)
# while that message arrives, and shrinks back after.
TCP_READ_BUFFER = 4096

_LEN = struct.Struct("!H")

# Why a connection was closed or refused at a bound (the ``reason`` label), and what the
# log says the first time.
CLOSE_REASONS = {
    "connection_cap": "TCP connection refused: the listener already has the most connections allowed",
    "source_cap": "TCP connection refused: one client address already has the most connections allowed",
    "read_timeout": "TCP connection closed: a query did not arrive whole within the read timeout",
    "idle_timeout": "TCP connection closed: idle past the idle timeout",
    "write_timeout": "TCP connection closed: the client did not read its replies within the write timeout",
    "pending_limit": "TCP connection closed: more unread replies than the per-connection limit",
    "max_queries": "TCP connection closed: it served the most queries allowed per connection",
    "malformed": "TCP connection closed: a query that cannot be answered, not even with FORMERR",
}


def source_key(peer) -> str:
    """The client address connections are counted by: IPv4 address, or IPv6 /64."""
    host = str(peer[0]).split("%")[0]
    if ":" not in host:
        return host
    ip = ipaddress.IPv6Address(host)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class TCPConnection(asyncio.BufferedProtocol):
    """One TCP client: its queries, their answers, its deadlines and flow control."""

    def __init__(self, listener: "TCPListener"):
        self.listener = listener
        self.transport = None
        self.buf = bytearray(TCP_READ_BUFFER)
        self.start = 0  # the first byte not yet taken as a message
        self.end = 0  # the end of what was read
        self.inflight = 0  # answers still being worked out
        self.served = 0  # queries taken from this connection
        self.write_paused = False
        self.read_paused = False
        self.finished = False  # served its most queries: answer what is in flight, then close
        self.eof = False  # the client sent all it will send
        self.holding = False  # counts against the listener's caps
        self.lost = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ connection
    def connection_made(self, transport) -> None:
        self.transport = transport
        listener = self.listener
        self.loop = asyncio.get_running_loop()
        self.peer = transport.get_extra_info("peername")
        if self.peer is None:  # reset before it was taken in (uvloop asks for the address only now)
            self.listener.note(stats.tcp_send_errors, "ENOTCONN", "TCP connection gone before it was accepted")
            transport.abort()
            return
        self.source = source_key(self.peer)
        if listener.open >= TCP_MAX_CONNECTIONS:
            self._close("connection_cap")
            return
        if listener.by_source.get(self.source, 0) >= TCP_MAX_PER_SOURCE:
            self._close("source_cap")
            return
        listener.open += 1
        listener.by_source[self.source] = listener.by_source.get(self.source, 0) + 1
        stats.tcp_open += 1
        self.holding = True
        settings = listener.settings
        self.read_timeout = settings.get("read", TCP_READ_TIMEOUT)
        self.write_timeout = settings.get("write", TCP_WRITE_TIMEOUT)
        self.idle_timeout = settings.get("idle", TCP_IDLE_TIMEOUT)
        self.max_queries = settings.get("max_queries", TCP_MAX_QUERIES)
        transport.set_write_buffer_limits(high=TCP_WRITE_HIGH_WATER, low=TCP_WRITE_LOW_WATER)
        self._expect(self.read_timeout)  # the first query must arrive whole within the read timeout

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if exc is not None:
            cause = errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)
            peer = self.peer[0] if self.peer else "a client"
            self.listener.note(stats.tcp_send_errors, cause, f"TCP connection from {peer} failed: {exc}")
        self._release()

    def _release(self) -> None:
        """Give back the connection's slot once it is closed and owes no answer."""
        if self.holding and self.lost and self.inflight == 0:
            self.holding = False
            listener = self.listener
            listener.open -= 1
            left = listener.by_source[self.source] - 1
            if left:
                listener.by_source[self.source] = left
            else:
                del listener.by_source[self.source]
            stats.tcp_open -= 1

    def _close(self, reason: str) -> None:
        """Close (or refuse) at a bound: at once, dropping unread replies."""
        self.listener.note(stats.tcp_closed, reason, CLOSE_REASONS[reason])
        self.transport.abort()

    # ------------------------------------------------------------ deadlines
    def _expect_next(self) -> None:
        """Per message: the next one must be whole within the read timeout of its first byte;
        between messages the idle timeout runs.  Replies waiting for the client come first."""
        if not self.write_paused and not self.transport.is_closing():
            self._expect(self.read_timeout if self.start < self.end else self.idle_timeout)

    def _expect(self, seconds: float) -> None:
        """The connection must make progress within ``seconds`` (one timer, moved lazily)."""
        self.deadline = when = self.loop.time() + seconds
        timer = self.timer
        if timer is None or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self.timer = None
        if self.lost:
            return
        if self.loop.time() < self.deadline:  # progress was made since: wait for the new deadline
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)
        elif self.write_paused or self.transport.is_closing():
            self._close("write_timeout")
        elif self.inflight >= TCP_MAX_INFLIGHT or (self.finished and self.inflight):
            self._expect(self.read_timeout)  # waiting on our answers, not on the client
        elif self.start < self.end or self.served == 0:
            self._close("read_timeout")
        elif self.inflight:
            self._expect(self.idle_timeout)
        else:
            self._close("idle_timeout")

    # ------------------------------------------------------------ reading
    def get_buffer(self, sizehint: int):
        if self.end == len(self.buf):
            self._make_room()
        return memoryview(self.buf)[self.end :]

    def _make_room(self) -> None:
        """Room for more of the message being read (called only when the buffer is full)."""
        buf, start, end = self.buf, self.start, self.end
        need = 2 + _LEN.unpack_from(buf, start)[0] if end - start >= 2 else 2
        size = max(TCP_READ_BUFFER, need)
        if size > len(buf):
            fresh = bytearray(size)
            fresh[: end - start] = buf[start:end]
            self.buf = fresh
        else:
            buf[: end - start] = buf[start:end]
        self.start, self.end = 0, end - start

    def buffer_updated(self, nbytes: int) -> None:
        new_message = self.start == self.end
        self.end += nbytes
        if self._take() or new_message:
            self._expect_next()

    def _take(self) -> int:
        """Answer the whole messages in the buffer while the flow allows; how many were taken."""
        buf = self.buf
        taken = 0
        while not (self.write_paused or self.finished or self.inflight >= TCP_MAX_INFLIGHT):
            start = self.start
            avail = self.end - start
            if avail < 2:
                break
            n = (buf[start] << 8) | buf[start + 1]
            if avail < 2 + n:
                break
            msg = bytes(buf[start + 2 : start + 2 + n])
            self.start = start + 2 + n
            taken += 1
            self.served += 1
            if self.served == self.max_queries:
                self.finished = True
            self._query(msg)
            if self.lost or self.transport.is_closing():
                return taken
        if self.start == self.end:
            self.start = self.end = 0
            if len(buf) > TCP_READ_BUFFER:
                self.buf = bytearray(TCP_READ_BUFFER)
        self._flow()
        return taken

    def _flow(self) -> None:
        """Read from the client only while its replies are taken and its answers keep up."""
        if self.transport.is_closing():
            return
        if self.inflight == 0 and (self.finished or (self.eof and not self._whole_message())):
            if self.finished:
                self.listener.note(stats.tcp_closed, "max_queries", CLOSE_REASONS["max_queries"])
            self.transport.close()  # sends what is pending first
            self._expect(self.write_timeout)
            return
        hold = self.write_paused or self.finished or self.inflight >= TCP_MAX_INFLIGHT
        if hold and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not hold and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _whole_message(self) -> bool:
        avail = self.end - self.start
        return avail >= 2 and avail >= 2 + _LEN.unpack_from(self.buf, self.start)[0]

    def eof_received(self) -> bool:
        # The client is done sending: answer what it sent, then close (see _flow).
        self.eof = True
        return bool(self.inflight or self._whole_message())  # True: stay open for the replies

    # ------------------------------------------------------------ answering
    def _query(self, msg: bytes) -> None:
        try:
            req = Request(msg, "tcp", self.peer, self.listener.label)
        except MalformedQuery as bad:
            if bad.reply is None:
                self._close("malformed")
            else:
                self._send(bad.reply)
            return
        if req.badvers:
            self._send(badvers(req))
            return
        result = dispatch(self.listener.router, req)
        if isinstance(result, Answer):
            self._send(req.render(result))
        else:
            self.inflight += 1
            tasks = self.listener.tasks  # a strong reference: the loop keeps only weak ones
            task = asyncio.ensure_future(self._later(req, result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _later(self, req: Request, result) -> None:
        try:
            answer = await settle(req, result)
        finally:
            self.inflight -= 1
            self._release()  # a connection already gone gives back its slot with its last answer
        if answer is not None:  # None: dropped (acl), the connection goes on with the next query
            self._send(req.render(answer))
        if not self.transport.is_closing():
            self._resume()

    def _resume(self) -> None:
        """An answer was sent or replies were read: take what is buffered, maybe read again."""
        self._take()
        self._expect_next()

    def _send(self, out: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            self.listener.note(stats.tcp_send_errors, "closed", "TCP reply not sent: the connection was already closed")
            return
        transport.write(_LEN.pack(len(out)) + out)
        # Only a paused connection (past the high-water mark) can be past the hard limit.
        if self.write_paused and transport.get_write_buffer_size() > TCP_MAX_PENDING_BYTES:
            self._close("pending_limit")

    def pause_writing(self) -> None:
        self.write_paused = True
        self._expect(self.write_timeout)  # the client must take its replies in time
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.transport.is_closing():
            self._resume()


class TCPListener:
    """The TCP side of one address and port: its router, settings and connection counts."""

    def __init__(self, router: Router, label: str):
        self.router = router
        self.label = label
        # read/write/idle (seconds) and max_queries set by the timeouts plugin; the rest default
        self.settings: dict[str, float] = {}
        self.open = 0
        self.by_source: dict[str, int] = {}
        self.tasks: set[asyncio.Future] = set()  # answers still being worked out
        self.logged: set[str] = set()  # the causes already logged

    def protocol(self) -> TCPConnection:
        return TCPConnection(self)

    def note(self, table: dict[str, int], cause: str, message: str) -> None:
        """Count one event of ``cause``; the listener logs the first of each cause."""
        table[cause] = table.get(cause, 0) + 1
        if cause not in self.logged:
            self.logged.add(cause)
            log.warning("%s (%s; counted from now on, not logged again)", message, self.label)


def settings_of(configs) -> dict[str, float]:
    """The TCP settings of server blocks sharing a listener: the last block that sets one wins."""
    merged: dict[str, float] = {}
    for config in configs:
        merged.update(config.tcp_settings)
    return merged
