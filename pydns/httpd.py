"""A tiny HTTP/1.1 server on asyncio for health, ready and metrics endpoints, and the
helpers those plugins share (their ADDRESS argument, binding at start-up).

Listeners are shared by address: several server blocks (and the old and new configuration
during a reload) register paths on the same ``HttpListener``.  Handlers are plain functions
``(query_string) -> (status, content_type, body)``, or an awaitable of that triple for a
handler that must wait for something (explain runs a DNS query).

Anyone who can reach the pod can reach these ports, so every request and connection is
bounded (docs/limits.md): a request that breaks a limit gets the status a production server
would send (414, 431, 413, 408, 400), is counted in ``pydns_http_rejected_total{cause}``,
logged in one line (at most once a minute per cause), and its connection closed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from typing import Callable, NamedTuple

from pydns import stats
from pydns.corefile import Directive, Token
from pydns.plugin import expect_args

Handler = Callable[[str], "tuple[int, str, bytes]"]

log = logging.getLogger("pydns")

TEXT = "text/plain; charset=utf-8"

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}

# Limits, of the size a production HTTP server sets (nginx's 8 KB header buffers, Apache's
# 100 header fields, Go's header read deadline); docs/limits.md lists them.
MAX_REQUEST_LINE = 8 * 1024  # bytes, without its line ending: else 414
MAX_HEADERS = 100  # header lines: else 431
MAX_HEADER_BYTES = 16 * 1024  # bytes of header lines, with their line endings: else 431
MAX_BODY = 8 * 1024  # no endpoint takes a body: up to this much is read and thrown away, else 413
REQUEST_TIMEOUT = 5.0  # seconds from a request's first byte until it is whole: else 408
IDLE_TIMEOUT = 10.0  # seconds a connection may wait with no request under way
WRITE_TIMEOUT = 10.0  # seconds a reply may wait for the client to read it
MAX_CONNECTIONS = 256  # open connections per listener
MAX_PER_ADDRESS = 64  # open connections per client address
LINGER = 0.5  # seconds input is still read (and thrown away) after an error reply
REPORT_EVERY = 60.0  # seconds between two log lines for the same kind of rejected request

# The request line and the header lines with their line endings: all a request may hold.
_HEAD_BUFFER = MAX_REQUEST_LINE + 2 + MAX_HEADER_BYTES + 2


def split_hostport(addr: str, default_port: int) -> tuple[str, int]:
    """``:8080``, ``127.0.0.1:8080``, ``[::1]:8080`` or ``localhost`` into host and port."""
    host, port = addr, default_port
    if addr.startswith("["):
        end = addr.index("]")
        host, rest = addr[1:end], addr[end + 1 :]
        if rest.startswith(":"):
            port = int(rest[1:])
    elif addr.count(":") == 1:
        host, p = addr.split(":")
        port = int(p)
    return host, port


def http_address(d: Directive, plugin: str, default: str) -> tuple[str, Token]:
    """The directive's optional ADDRESS argument, checked as Go's net.SplitHostPort would."""
    args = expect_args(d, 0, 1)
    if not args:
        return default, d.name
    tok = args[0]
    addr = str(tok)
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise tok.error(f"plugin/{plugin}: address {addr}: missing ']' in address")
        rest = addr[end + 1 :]
        if not rest.startswith(":"):
            raise tok.error(f"plugin/{plugin}: address {addr}: missing port in address")
        port = rest[1:]
    elif ":" not in addr:
        raise tok.error(f"plugin/{plugin}: address {addr}: missing port in address")
    elif addr.count(":") > 1:
        raise tok.error(f"plugin/{plugin}: address {addr}: too many colons in address")
    else:
        port = addr.rpartition(":")[2]
    if not port.isdigit() or int(port) > 65535:
        raise tok.error(f"plugin/{plugin}: address {addr}: invalid port '{port}'")
    return addr, tok


async def open_http(listener: HttpListener, addr: str, where: Token, plugin: str) -> None:
    """Bind the listener now, so a busy port fails start-up (or the reload) naming the line."""
    try:
        await listener.start()
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise where.error(f"plugin/{plugin}: listen tcp {addr}: bind: {reason}") from None


class HttpListener:
    """One address's HTTP server: its routes, its open connections and their limits."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        # path -> registrations, newest last: a reload's new configuration answers while it
        # is registered, and removing it (a failed reload) brings back the running one's.
        self.routes: dict[str, list[tuple[Handler, object]]] = {}
        self._server: asyncio.AbstractServer | None = None
        # client address -> its open connections, oldest first
        self.clients: dict[str, dict[_Connection, None]] = {}
        self.open = 0
        self._reported: dict[str, tuple[float, int]] = {}  # cause -> (last logged, since then)

    @property
    def bound_port(self) -> int:
        if self._server and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.bound_port}"

    def add(self, path: str, handler: Handler, owner: object) -> None:
        stack = self.routes.setdefault(path, [])
        stack[:] = [r for r in stack if r[1] is not owner]
        stack.append((handler, owner))

    def remove_owner(self, owner: object) -> None:
        for path, stack in list(self.routes.items()):
            stack[:] = [r for r in stack if r[1] is not owner]
            if not stack:
                del self.routes[path]

    async def start(self) -> None:
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: _Connection(self), self.host or None, self.port,
                                                    reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conns in list(self.clients.values()):
            for conn in list(conns):
                conn.transport.abort()

    # ------------------------------------------------------------ connection count
    def admit(self, conn: "_Connection") -> None:
        """Track a new connection; past a limit, the oldest connection of the greediest client goes.

        New connections are never refused: a client at its share loses its own oldest one,
        otherwise (the listener is full) the client holding the most loses its oldest.  So one
        client cannot hold more than MAX_PER_ADDRESS, and a connection that trickles or idles
        is the first to make room for one that is about to ask something.
        """
        mine = self.clients.setdefault(conn.client, {})
        victims = mine if len(mine) >= MAX_PER_ADDRESS else None
        if victims is None and self.open >= MAX_CONNECTIONS:
            victims = max(self.clients.values(), key=len)
        if victims:
            oldest = next(iter(victims))
            self.reject_quietly(oldest, "connection_limit",
                                f"connection from {oldest.client} closed: over {MAX_PER_ADDRESS} connections from "
                                f"one address or {MAX_CONNECTIONS} in all")
        mine[conn] = None
        self.open += 1

    def forget(self, conn: "_Connection") -> None:
        conns = self.clients.get(conn.client)
        if conns is not None and conn in conns:
            del conns[conn]
            self.open -= 1
            if not conns:
                del self.clients[conn.client]

    def reject_quietly(self, conn: "_Connection", cause: str, message: str) -> None:
        self.forget(conn)
        conn.transport.abort()
        self.report(cause, message)

    def report(self, cause: str, message: str) -> None:
        """Count a rejection; log it, at most once a minute per cause, with how many were not logged."""
        stats.http_rejected[cause] = stats.http_rejected.get(cause, 0) + 1
        now = time.monotonic()
        last, unlogged = self._reported.get(cause, (-REPORT_EVERY, 0))
        if now - last < REPORT_EVERY:
            self._reported[cause] = (last, unlogged + 1)
            return
        more = f" ({unlogged} more since the last report)" if unlogged else ""
        log.warning("http %s: %s%s", self.where, message, more)
        self._reported[cause] = (now, 0)

    def dispatch(self, method: str, target: str) -> tuple[int, str, bytes]:
        path, _, query = target.partition("?")
        stack = self.routes.get(path)
        if not stack:
            return 404, "text/plain", b"404 page not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        try:
            return stack[-1][0](query)
        except Exception:  # a handler bug must not kill the endpoint
            log.exception("http handler for %s failed", path)
            return 500, "text/plain", b"internal error\n"


class _Reject(Exception):
    """A request that breaks a limit or the protocol: answered with ``status`` and closed."""

    def __init__(self, status: int, cause: str, detail: str):
        super().__init__(detail)
        self.status, self.cause, self.detail = status, cause, detail


class _Request(NamedTuple):
    method: str
    target: str
    keep_alive: bool
    body: int  # Content-Length: bytes to read and throw away


# Reads that are thrown away (a body, input after an error reply) land here: never kept.
_SCRATCH = bytearray(64 * 1024)


class _Connection(asyncio.BufferedProtocol):
    """One client connection: reads requests into a fixed buffer, answers them in order.

    The socket is read straight into a buffer the size of the largest request head allowed,
    so a client cannot make the server hold more, whatever it sends.  One timer runs at a
    time: the idle limit while no request is under way, the whole-request deadline from a
    request's first byte, the write deadline while a reply waits for the client to read.
    """

    def __init__(self, listener: HttpListener):
        self.listener = listener
        self.buf = bytearray(_HEAD_BUFFER)
        self.filled = 0
        self.body_left = 0  # bytes of the current request's body still to throw away
        self.in_request = False  # a request's first byte has arrived and it is not answered yet
        self.closing = False  # after a reply with Connection: close, or an error reply
        self.writing_paused = False
        self.waiting = False  # a handler's reply is on its way: reading is paused until it is written
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        self.listener.admit(self)
        self._arm(IDLE_TIMEOUT)

    def connection_lost(self, exc) -> None:
        self.listener.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.closing:
            return memoryview(_SCRATCH)
        if self.body_left:
            return memoryview(_SCRATCH)[: min(self.body_left, len(_SCRATCH))]
        return memoryview(self.buf)[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing:
            return
        if self.body_left:
            self.body_left -= nbytes
            if not self.body_left:
                self.in_request = False
                self._arm(IDLE_TIMEOUT)
            return
        if not self.in_request:
            self.in_request = True
            self._arm(REQUEST_TIMEOUT)
        self.filled += nbytes
        self._answer_whole_requests()

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once our reply is written

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests until it does.
        self.writing_paused = True
        self.transport.pause_reading()
        self._arm(WRITE_TIMEOUT)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.closing or self.waiting:
            return
        self.transport.resume_reading()
        self._arm(REQUEST_TIMEOUT if self.in_request else IDLE_TIMEOUT)
        self._answer_whole_requests()

    # ------------------------------------------------------------ requests
    def _answer_whole_requests(self) -> None:
        while self.filled and not (self.closing or self.writing_paused or self.body_left or self.waiting
                                   or self.transport.is_closing()):  # a failed write closes it
            try:
                request = self._take_request()
            except _Reject as rej:
                self._reject(rej)
                return
            if request is None:
                return  # wait for the rest
            reply = self.listener.dispatch(request.method, request.target)
            if inspect.isawaitable(reply):
                self._await_reply(request, reply)
                return
            self._send(request, *reply)

    def _send(self, request: _Request, status: int, ctype: str, body: bytes) -> None:
        if not request.keep_alive:
            self._write(status, ctype, body, False, request.method == "HEAD")
            self._close()
            return
        if not self.body_left:  # else the rest of the body is still under this request's deadline
            # A pipelined request already under way gets its own deadline from here.
            self.in_request = bool(self.filled)
            self._arm(REQUEST_TIMEOUT if self.in_request else IDLE_TIMEOUT)
        self._write(status, ctype, body, True, request.method == "HEAD")

    def _await_reply(self, request: _Request, pending) -> None:
        """A handler that answers later (explain): stop reading until its reply is written.

        One reply at a time per connection keeps pipelined replies in order and bounds the
        work a client can start by the connection limits.  The handler bounds its own time.
        """
        self.waiting = True
        self.transport.pause_reading()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        task = asyncio.ensure_future(pending)
        task.add_done_callback(lambda done: self._replied(request, done))

    def _replied(self, request: _Request, done: asyncio.Future) -> None:
        self.waiting = False
        if self.transport.is_closing():
            return
        try:
            reply = done.result()
        except Exception:  # a handler bug must not kill the endpoint
            log.exception("http handler for %s failed", request.target.partition("?")[0])
            reply = 500, "text/plain", b"internal error\n"
        if not self.writing_paused:
            self.transport.resume_reading()
        self._send(request, *reply)
        self._answer_whole_requests()

    def _take_request(self) -> _Request | None:
        """Parse the head at the start of the buffer and take it (and what arrived of its body) out."""
        buf = self.buf
        while self.filled and (buf[0] == 10 or buf[:2] == b"\r\n"):
            self._consume(1 if buf[0] == 10 else 2)  # empty lines before a request are ignored (RFC 9112 2.2)
        filled = self.filled
        line_end = buf.find(b"\n", 0, filled)
        length = filled if line_end < 0 else line_end - (buf[line_end - 1] == 13)
        if length > MAX_REQUEST_LINE + (line_end < 0):  # a pending "\r" may still end the line
            raise _Reject(414, "request_line_too_long", f"request line over {MAX_REQUEST_LINE} bytes")
        if line_end < 0:
            return None
        headers_start = pos = line_end + 1
        headers: list[bytes] = []
        while True:
            nl = buf.find(b"\n", pos, filled)
            if nl < 0:
                if filled - headers_start > MAX_HEADER_BYTES + 1:  # room for a blank line's "\r"
                    raise _Reject(431, "headers_too_large", f"request headers over {MAX_HEADER_BYTES} bytes")
                return None
            line = bytes(buf[pos:nl]).rstrip(b"\r")
            pos = nl + 1
            if not line:
                break
            if pos - headers_start > MAX_HEADER_BYTES:
                raise _Reject(431, "headers_too_large", f"request headers over {MAX_HEADER_BYTES} bytes")
            if len(headers) == MAX_HEADERS:
                raise _Reject(431, "too_many_headers", f"more than {MAX_HEADERS} request headers")
            headers.append(line)
        request = _parse_head(bytes(buf[:length]), headers)
        self._consume(pos)
        taken = min(request.body, self.filled)
        self._consume(taken)
        self.body_left = request.body - taken
        return request

    def _consume(self, n: int) -> None:
        # Same-length slice assignment: the transport may still hold a view of the buffer.
        rest = self.filled - n
        self.buf[:rest] = self.buf[n : self.filled]
        self.filled = rest

    # ------------------------------------------------------------ replies
    def _write(self, status: int, ctype: str, body: bytes, keep_alive: bool, head_only: bool = False) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        self.transport.write(head.encode("latin-1") + (b"" if head_only else body))

    def _close(self) -> None:
        """Close once the reply is written; a client that does not read it is cut at the write deadline."""
        self.closing = True
        self.in_request = False
        self.filled = self.body_left = 0
        self._arm(WRITE_TIMEOUT)
        self.transport.close()

    def _reject(self, rej: _Reject) -> None:
        """Answer an error, stop reading requests, and close after a short linger.

        The client may still be sending: closing at once with its data unread would reset
        the connection and lose the reply, so input is read and thrown away for LINGER
        seconds (as Go's server does) after our side of the connection is shut.
        """
        reason = _REASONS[rej.status]
        self.listener.report(rej.cause, f"{rej.status} {reason} to {self.client}: {rej.detail}")
        self.closing = True
        self.in_request = False
        self.filled = self.body_left = 0
        self._write(rej.status, TEXT, f"{rej.status} {reason}\n".encode(), keep_alive=False)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER)

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._deadline)

    def _deadline(self) -> None:
        self.timer = None
        if self.closing:
            self.transport.abort()  # the linger is over, or the client never read its last reply
        elif self.writing_paused:
            self.listener.reject_quietly(self, "write_timeout",
                                         f"{self.client} did not read its reply within {WRITE_TIMEOUT:g}s")
        elif self.in_request:
            self._reject(_Reject(408, "timeout", f"request not whole within {REQUEST_TIMEOUT:g}s"))
        else:
            self._close()  # idle: a keep-alive connection nobody uses any more


def _parse_head(request_line: bytes, headers: list[bytes]) -> _Request:
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Reject(400, "malformed", "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if not version.startswith("HTTP/"):
        raise _Reject(400, "malformed", "malformed request line")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _Reject(505, "unsupported", f"HTTP version {version[:16]!r}")
    keep_alive = version == "HTTP/1.1"
    length = None
    for line in headers:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise _Reject(400, "malformed", "malformed header line")
        name, value = name.lower(), value.strip()
        if name == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            keep_alive = b"close" not in tokens and (keep_alive or b"keep-alive" in tokens)
        elif name == b"transfer-encoding":
            raise _Reject(501, "unsupported", "request bodies with Transfer-Encoding are not supported")
        elif name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise _Reject(400, "malformed", "invalid Content-Length")
            length = int(value)
            if length > MAX_BODY:
                raise _Reject(413, "body_too_large", f"request body over {MAX_BODY} bytes")
    return _Request(method, target, keep_alive, length or 0)
