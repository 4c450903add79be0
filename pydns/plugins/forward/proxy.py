"""One upstream of the forward plugin: reused sockets, exchanges and in-band health checks.

UDP: one connected socket per upstream carries every query in flight, each under a fresh
random ID; replies are matched on ID and question, anything else is dropped (late, spoofed
or stray replies).  The socket is replaced once idle for ``expire`` (or older than
``max_age``).  TCP and TLS: a FIFO pool of kept-alive connections, one query at a time on
each, like CoreDNS's connection cache.

Health: a failed exchange starts a probe (at most one per upstream) that sends ``. IN NS``
every ``health_check`` interval until any reply comes back; each failed probe counts a
fail, and an upstream with more than ``max_fails`` fails is down.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import ssl
import struct

from dnslib import QTYPE, DNSHeader, DNSQuestion, DNSRecord

from pydns.plugins.forward.doh import HTTPConn, HTTPError
from pydns.plugins.forward.metrics import for_upstream
from pydns.transport import DEFAULT_RCVBUF, set_receive_buffer
from pydns.wire import QR, RCODE_NAMES, TC

_ID = struct.Struct("!H")
_LEN = struct.Struct("!H")
_HEADER = struct.Struct("!HHHHHH")
HEALTH_TIMEOUT = 1.0  # CoreDNS's health check client: 1s read and write timeouts
MIN_DIAL_TIMEOUT, MAX_DIAL_TIMEOUT = 1.0, 30.0


class ExchangeError(Exception):
    """The upstream did not answer (timeout, refused, reset): try another one."""


class CachedClosed(ExchangeError):
    """A pooled connection turned out to be closed by the peer: retry on a fresh one."""


def show_addr(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reply_matches(data: bytes, key: bytes, qtail: bytes) -> bool:
    """Is ``data`` a response to our question (name compared case-insensitively)?"""
    if len(data) < 12:
        return False
    _id, flags, qd, an, ns, _ar = _HEADER.unpack_from(data)
    if not flags & QR:
        return False
    if qd == 0:
        # Some servers answer errors without the question: fine when it carries no records.
        return flags & 0xF != 0 and an == 0 and ns == 0
    end = 12 + len(key)
    return data[12:end].lower() == key and data[end:end + 4] == qtail


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def _wait(fut: asyncio.Future, timeout: float):
    handle = asyncio.get_running_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        handle.cancel()


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


class UDPChannel:
    """A connected UDP socket shared by the queries in flight to one upstream."""

    def __init__(self, loop: asyncio.AbstractEventLoop, addr: tuple, family: int, source: str | None):
        self.loop = loop
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            # The replies to a burst of forwarded queries arrive together: room for them all.
            set_receive_buffer(self.sock, DEFAULT_RCVBUF)
            if source:
                self.sock.bind((source, 0))
            self.sock.connect(addr)
        except OSError:
            self.sock.close()
            raise
        self.name = f"udp {show_addr(self.sock.getsockname())}->{show_addr(addr)}"
        self.pending: dict[int, tuple[bytes | None, bytes, asyncio.Future]] = {}
        self.created = self.used = loop.time()
        self.retired = False
        loop.add_reader(self.sock.fileno(), self._readable)

    def new_id(self) -> int:
        while True:
            qid = random.getrandbits(16)
            if qid not in self.pending:
                return qid

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as exc:
            raise ExchangeError(f"write {self.name}: {_reason(exc)}") from None

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error (port unreachable) on a connected socket: the upstream is not
                # there, so every query waiting on it fails now rather than at its timeout.
                self._fail_all(ExchangeError(f"read {self.name}: {_reason(exc)}"))
                # uvloop stops watching a socket that reported an error: watch it again.
                self.loop.remove_reader(self.sock.fileno())
                self.loop.add_reader(self.sock.fileno(), self._readable)
                return
            if len(data) < 12:
                continue
            entry = self.pending.get(_ID.unpack_from(data)[0])
            if entry is None:
                continue
            key, qtail, fut = entry
            if not fut.done() and (key is None or reply_matches(data, key, qtail)):
                fut.set_result(data)

    def _fail_all(self, exc: Exception) -> None:
        for _key, _qtail, fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)

    async def exchange(self, tail: bytes, key: bytes | None, qtail: bytes, timeout: float) -> bytes:
        qid = self.new_id()
        fut = self.loop.create_future()
        self.pending[qid] = (key, qtail, fut)
        try:
            self.send(_ID.pack(qid) + tail)
            return await _wait(fut, timeout)
        except TimeoutError:
            raise ExchangeError(f"read {self.name}: i/o timeout") from None
        finally:
            del self.pending[qid]
            self.used = self.loop.time()
            if self.retired and not self.pending:
                self.close()

    def close(self) -> None:
        if self.sock.fileno() != -1:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self._fail_all(ExchangeError(f"read {self.name}: use of closed network connection"))


class StreamConn(asyncio.Protocol):
    """A TCP or TLS connection to an upstream: length-prefixed messages, one query at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proto: str):
        self.loop = loop
        self.proto = proto
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: tuple[int, bytes, bytes, asyncio.Future] | None = None
        self.closed = False
        self.created = self.used = loop.time()
        self.name = proto

    def connection_made(self, transport) -> None:
        self.transport = transport
        local = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        if local and peer:
            self.name = f"tcp {show_addr(local)}->{show_addr(peer)}"

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2:2 + n])
            del buf[:2 + n]
            waiter = self.waiter
            if waiter is None or len(msg) < 12 or _ID.unpack_from(msg)[0] != waiter[0]:
                continue  # out-of-order or stray: keep waiting for ours
            qid, key, qtail, fut = waiter
            if not fut.done() and (key is None or reply_matches(msg, key, qtail)):
                fut.set_result(msg)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter[3].done():
            self.waiter[3].set_exception(CachedClosed(f"read {self.name}: EOF"))

    async def exchange(self, tail: bytes, key: bytes | None, qtail: bytes, timeout: float) -> bytes:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise CachedClosed(f"write {self.name}: broken pipe")
        qid = random.getrandbits(16)
        fut = self.loop.create_future()
        self.waiter = (qid, key, qtail, fut)
        try:
            msg = _ID.pack(qid) + tail
            self.transport.write(_LEN.pack(len(msg)) + msg)
            return await _wait(fut, timeout)
        except TimeoutError:
            raise ExchangeError(f"read {self.name}: i/o timeout") from None
        finally:
            self.waiter = None
            self.used = self.loop.time()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Proxy:
    """An upstream server: its address, connections, health and metrics."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None, server_name: str | None = None,
                 protocol: str = "dns"):
        self.protocol = protocol  # dns, tls or https
        self.doh_method = "POST"
        self.host, self.port = host, port
        self.addr = (host, port)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.to = show_addr(self.addr)
        self.tls = tls
        self.server_name = server_name
        self.fails = 0
        self.metrics = for_upstream(self.to)
        # set by the plugin's options
        self.expire = 10.0
        self.max_age = 0.0
        self.max_idle = 0
        self.read_timeout = 2.0
        self.source: str | None = None
        self.hc_interval = 0.5
        self.hc_proto = "udp"
        self._hc_tail = b""
        self.health_query(".", True)
        self._udp: UDPChannel | None = None
        self._idle: dict[str, collections.deque] = {"tcp": collections.deque(), "tcp-tls": collections.deque(),
                                                    "https": collections.deque()}
        self._probe: asyncio.Task | None = None
        self.stopped = False

    def health_query(self, domain: str, recursion: bool) -> None:
        msg = DNSRecord(DNSHeader(id=0, rd=1 if recursion else 0), q=DNSQuestion(domain, QTYPE.NS))
        self._hc_tail = msg.pack()[2:]

    def down(self, max_fails: int) -> bool:
        return max_fails != 0 and self.fails > max_fails

    # ------------------------------------------------------------ exchanges
    async def exchange(self, data: bytes, key: bytes, qtail: bytes, proto: str, deadline: float) -> bytes:
        """Send the query (``data`` with its ID replaced) and return the matching reply."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.metrics.requests += 1
        tail = data[2:]
        if self.protocol == "https":
            reply = await self._exchange_doh(loop, self.doh_method, b"\0\0" + tail, key, qtail, self.read_timeout)
            self.metrics.response(_rcode_name(reply), loop.time() - start)
            return reply
        if self.tls is not None:
            proto = "tcp-tls"
        if proto == "udp":
            reply = await self._udp_channel(loop).exchange(tail, key, qtail, self.read_timeout)
            if reply[2] & (TC >> 8):
                # Truncated: ask again over TCP, so that the answer is whole.
                reply = await self._exchange_stream(loop, "tcp", tail, key, qtail, deadline)
        else:
            reply = await self._exchange_stream(loop, proto, tail, key, qtail, deadline)
        self.metrics.response(_rcode_name(reply), loop.time() - start)
        return reply

    def _udp_channel(self, loop) -> UDPChannel:
        ch = self._udp
        if ch is not None:
            now = loop.time()
            stale = now - ch.used > self.expire and not ch.pending
            old = self.max_age and now - ch.created > self.max_age
            if not (stale or old) and ch.sock.fileno() != -1:
                self.metrics.conn_cache(True, "udp")
                return ch
            self._retire(ch)
        self.metrics.conn_cache(False, "udp")
        try:
            ch = UDPChannel(loop, self.addr, self.family, self.source)
        except OSError as exc:
            raise ExchangeError(f"dial udp {self.to}: {_reason(exc)}") from None
        if self.stopped:
            ch.retired = True
        else:
            self._udp = ch
        return ch

    def _retire(self, ch: UDPChannel) -> None:
        if self._udp is ch:
            self._udp = None
        ch.retired = True
        if not ch.pending:
            ch.close()

    async def _exchange_stream(self, loop, proto: str, tail: bytes, key, qtail: bytes, deadline: float) -> bytes:
        while True:
            conn = self._take_stream(loop, proto)
            cached = conn is not None
            if conn is None:
                conn = await self._dial(loop, proto, deadline)
            try:
                reply = await conn.exchange(tail, key, qtail, self.read_timeout)
            except CachedClosed as exc:
                conn.close()
                if cached:
                    continue  # the peer closed an idle connection: use a fresh one
                raise ExchangeError(str(exc)) from None
            except ExchangeError:
                conn.close()
                raise
            self._yield_stream(proto, conn)
            return reply

    async def _exchange_doh(self, loop, method: str, wire: bytes, key, qtail: bytes, timeout: float) -> bytes:
        authority = self.to
        while True:
            conn = self._take_stream(loop, "https", count=False)
            cached = conn is not None
            try:
                if conn is None:
                    conn = await asyncio.wait_for(HTTPConn.open(self.host, self.port, self.tls, self.server_name,
                                                                self.source, loop.time()), timeout)
                reply = await asyncio.wait_for(conn.roundtrip(method, authority, wire), timeout)
            except HTTPError as exc:
                if conn is not None:
                    conn.close()
                if cached and str(exc) == "EOF":
                    continue  # the server closed an idle connection: use a fresh one
                raise ExchangeError(f"doh {self.to}: {exc}") from None
            except asyncio.TimeoutError:
                if conn is not None:
                    conn.close()
                raise ExchangeError(f"doh {self.to}: i/o timeout") from None
            except ssl.SSLError as exc:
                raise ExchangeError(f"tls: {exc.reason or exc}") from None
            except OSError as exc:
                if conn is not None:
                    conn.close()
                raise ExchangeError(f"doh {self.to}: {_reason(exc)}") from None
            conn.used = loop.time()
            self._yield_stream("https", conn)
            if key is not None and not reply_matches(reply, key, qtail):
                raise ExchangeError(f"doh {self.to}: the reply does not answer the question")
            return reply

    def _take_stream(self, loop, proto: str, count: bool = True):
        pool = self._idle[proto]
        now = loop.time()
        while pool:
            conn = pool.popleft()
            if conn.closed or now - conn.used > self.expire or (self.max_age and now - conn.created > self.max_age):
                conn.close()
                continue
            if count:
                self.metrics.conn_cache(True, proto)
            return conn
        if count:
            self.metrics.conn_cache(False, proto)
        return None

    def _yield_stream(self, proto: str, conn) -> None:
        pool = self._idle[proto]
        if self.stopped or conn.closed or (self.max_idle and len(pool) >= self.max_idle):
            conn.close()
        else:
            pool.append(conn)

    async def _dial(self, loop, proto: str, deadline: float, timeout: float | None = None) -> StreamConn:
        if timeout is None:
            timeout = max(MIN_DIAL_TIMEOUT, min(MAX_DIAL_TIMEOUT, deadline - loop.time()))
        kw = {}
        if proto == "tcp-tls":
            kw["ssl"] = self.tls
            if self.server_name:
                kw["server_hostname"] = self.server_name
        if self.source:
            kw["local_addr"] = (self.source, 0)
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: StreamConn(loop, proto), self.host, self.port, **kw), timeout)
        except asyncio.TimeoutError:
            raise ExchangeError(f"dial tcp {self.to}: i/o timeout") from None
        except ssl.SSLError as exc:
            raise ExchangeError(f"tls: {exc.reason or exc}") from None
        except OSError as exc:
            raise ExchangeError(f"dial tcp {self.to}: connect: {_reason(exc)}") from None
        return conn

    def sweep(self) -> None:
        """Close connections idle for longer than ``expire`` (or older than ``max_age``)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        ch = self._udp
        if ch is not None and not ch.pending and (now - ch.used > self.expire
                                                  or (self.max_age and now - ch.created > self.max_age)):
            self._retire(ch)
        for pool in self._idle.values():
            for conn in [c for c in pool if c.closed or now - c.used > self.expire
                         or (self.max_age and now - c.created > self.max_age)]:
                pool.remove(conn)
                conn.close()

    # ------------------------------------------------------------ health
    def healthcheck(self) -> None:
        """Start probing (unless a probe already runs) until the upstream answers again."""
        if self._probe is None and not self.stopped:
            self._probe = asyncio.ensure_future(self._probe_loop())

    async def _probe_loop(self) -> None:
        try:
            while not self.stopped:
                if await self.check():
                    self.fails = 0
                    return
                self.metrics.healthcheck_failed()
                self.fails += 1
                await asyncio.sleep(max(self.hc_interval, 0.01))
        finally:
            self._probe = None

    async def check(self) -> bool:
        """One health check: any reply at all means the upstream is up."""
        loop = asyncio.get_running_loop()
        proto = "tcp-tls" if self.tls is not None else self.hc_proto
        try:
            if self.protocol == "https":
                conn = await asyncio.wait_for(HTTPConn.open(self.host, self.port, self.tls, self.server_name,
                                                            self.source, loop.time()), HEALTH_TIMEOUT)
                try:
                    await asyncio.wait_for(conn.roundtrip("POST", self.to, b"\0\0" + self._hc_tail), HEALTH_TIMEOUT)
                finally:
                    conn.close()
            elif proto == "udp":
                ch = UDPChannel(loop, self.addr, self.family, self.source)
                ch.retired = True
                await ch.exchange(self._hc_tail, None, b"", HEALTH_TIMEOUT)
            else:
                conn = await self._dial(loop, proto, 0.0, HEALTH_TIMEOUT)
                try:
                    await conn.exchange(self._hc_tail, None, b"", HEALTH_TIMEOUT)
                finally:
                    conn.close()
        except (ExchangeError, HTTPError, OSError, asyncio.TimeoutError):
            return False
        return True

    # ------------------------------------------------------------ lifecycle
    def stop(self) -> asyncio.Task | None:
        """Close idle connections and stop probing; returns the probe to wait for, if any."""
        self.stopped = True
        probe = self._probe
        if probe is not None:
            probe.cancel()
        if self._udp is not None:
            self._retire(self._udp)
        for pool in self._idle.values():
            while pool:
                pool.popleft().close()
        return probe


def _rcode_name(reply: bytes) -> str:
    rcode = reply[3] & 0xF
    return RCODE_NAMES.get(rcode, str(rcode))
