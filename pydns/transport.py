"""UDP and TCP listeners, and the per-query dispatch.

Each listener owns a socket and a ``Router`` (swapped atomically on reload).  The dispatch
is the hot path: parse the query, pick the server block, run its chain, splice the answer.
Nothing here knows any plugin.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import threading

from pydns import stats
from pydns.eventloop import wake_if_scheduled
from pydns.plugin import DNSError
from pydns.zones import wire_lookup
from pydns.wire import (NOTIMP, REFUSED, SERVFAIL, Answer, MalformedQuery, Request, badvers, status)

log = logging.getLogger("pydns")

OPCODE_QUERY, OPCODE_NOTIFY = 0, 4
TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_CONNECTIONS = 1000
_LEN = struct.Struct("!H")


class Router:
    """Maps a query to the server block with the most specific zone on this listener."""

    def __init__(self, servers_by_zone: dict[bytes, tuple]):
        # zone in wire form -> (ServerConfig, zone text)
        self.by_zone = servers_by_zone
        self.only = servers_by_zone.get(b"\x00") if len(servers_by_zone) == 1 else None

    def route(self, key: bytes):
        if self.only is not None:
            return self.only
        return wire_lookup(key, self.by_zone)


def _panic(req: Request, exc: BaseException) -> Answer:
    stats.panics += 1
    log.error("panic while serving %s %s: %r", req.name, req.qtype, exc, exc_info=exc)
    return status(SERVFAIL)


def dispatch(router: Router, req: Request):
    """Run one query through its server block: an Answer, or an awaitable of one."""
    entry = router.route(req.key)
    if entry is None:
        refused = status(REFUSED)
        for hook in stats.unrouted_hooks:
            hook(req, refused)
        return refused
    server, req.zone = entry
    req.server = server
    if req.opcode != OPCODE_QUERY and req.opcode != OPCODE_NOTIFY:
        return status(NOTIMP)
    try:
        return server.handler.serve(req)
    except DNSError as err:
        return status(err.rcode)
    except Exception as exc:
        return _panic(req, exc)


async def settle(req: Request, result) -> Answer:
    """The answer a chain gave later; its failures become rcodes, as in ``dispatch``."""
    try:
        return await result
    except DNSError as err:
        return status(err.rcode)
    except Exception as exc:
        return _panic(req, exc)


class UDPListener:
    """A UDP socket, answered by a thread of its own on pydns's event loop.

    On a loop of ``pydns.eventloop`` a thread per socket sits in a blocking ``recvfrom`` and
    answers each query under the loop's serving lock (see that module for why).  On any
    other loop the socket is read from the loop's selector: each wake-up drains up to
    ``BATCH`` datagrams with plain ``recvfrom`` and answers each with ``sendto``.  Answers
    that are not ready at once are finished on the loop in both cases.
    """

    BATCH = 256
    LOCK_WAIT = 0.05  # how often a thread waiting for the serving lock looks whether it is closed

    def __init__(self, router: Router, label: str, sock: socket.socket):
        self.router = router
        self.label = label
        self.sock = sock
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.closed = False
        self.dropped = 0  # replies the kernel would not take (socket buffer full)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        lock = getattr(loop, "serving_lock", None)
        # A loop in debug mode (-X dev) refuses callbacks scheduled from another thread.
        if lock is None or loop.get_debug():
            loop.add_reader(self.sock.fileno(), self._readable)
            return
        self.sock.setblocking(True)  # sends stay non-blocking: see _send
        host, port = self.sockname[:2]
        name = f"udp dns://{f'[{host}]' if ':' in host else host}:{port}"
        self.thread = threading.Thread(target=self._serve, args=(lock,), name=name, daemon=True)
        self.thread.start()

    @property
    def sockname(self):
        return self.sock.getsockname()

    def close(self) -> None:
        self.closed = True
        if self.thread is None:
            if self.loop is not None and self.sock.fileno() != -1:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            return
        try:
            # Wakes the thread's recvfrom (Linux does so for unconnected UDP sockets too, while
            # saying ENOTCONN); the socket is closed once the thread is out of it.
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self.thread.join(self.LOCK_WAIT * 4)
        if self.thread.is_alive():
            self._knock()  # systems where shutdown does not wake it: a datagram does
            self.thread.join(self.LOCK_WAIT * 20)
        self.sock.close()

    def _knock(self) -> None:
        """Send an empty datagram to our own socket."""
        host, port = self.sockname[:2]
        family = self.sock.family
        if host in ("0.0.0.0", "::"):
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as knock:
                knock.sendto(b"", (host, port))
        except OSError:
            pass

    # ---------------------------------------------------------------- serving
    def _serve(self, lock) -> None:
        """The thread: wait for a query; holding the serving lock, answer it and whatever
        else has arrived meanwhile (unless the loop wants the lock); again."""
        loop = self.loop
        asyncio._set_running_loop(loop)  # plugin code sees the loop it runs for
        recv, answer, batch = self.sock.recvfrom, self._answer, self.BATCH
        while not self.closed:
            try:
                data, addr = recv(65535)
            except InterruptedError:
                continue
            except OSError:
                if self.closed:
                    return
                continue
            while not lock.acquire(self.LOCK_WAIT):
                if self.closed:
                    return
            try:
                if self.closed:
                    return
                answer(data, addr)
                for _ in range(batch):
                    if lock.loop_waiting:
                        break
                    try:
                        data, addr = recv(65535, socket.MSG_DONTWAIT)
                    except OSError:  # nothing more queued (or the socket is closing)
                        break
                    answer(data, addr)
                wake_if_scheduled(loop)
            except Exception:  # a bug in answering one query must not end the listener
                stats.panics += 1
                log.exception("UDP listener %s: error while answering", self.label)
            finally:
                lock.release()

    def _readable(self) -> None:
        recv = self.sock.recvfrom
        for _ in range(self.BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._answer(data, addr)

    def _answer(self, data: bytes, addr) -> None:
        try:
            req = Request(data, "udp", addr, self.label)
        except MalformedQuery as bad:
            if bad.reply is not None:
                self._send(bad.reply, addr)
            return
        if req.badvers:
            self._send(badvers(req), addr)
            return
        result = dispatch(self.router, req)
        if isinstance(result, Answer):
            self._send(req.render(result), addr)
        else:
            asyncio.ensure_future(self._later(req, result, addr))

    def _send(self, out: bytes, addr) -> None:
        try:
            self.sock.sendto(out, socket.MSG_DONTWAIT, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # like a lost packet: the client retries
        except OSError:
            pass

    async def _later(self, req: Request, result, addr) -> None:
        answer = await settle(req, result)
        if not self.closed:
            self._send(req.render(answer), addr)


class TCPConnection(asyncio.Protocol):
    """One TCP client: length-prefixed queries, pipelined, answered as each completes."""

    def __init__(self, listener: "TCPListener"):
        self.listener = listener
        self.buf = bytearray()
        self.transport = None
        self.idle = None
        self.pending = 0

    def connection_made(self, transport):
        self.transport = transport
        if self.listener.open >= TCP_MAX_CONNECTIONS:
            transport.close()
            return
        self.listener.open += 1
        self.peer = transport.get_extra_info("peername")
        self._arm()

    def connection_lost(self, exc):
        if self.idle is not None:
            self.idle.cancel()
            self.listener.open -= 1
            self.idle = None

    def _arm(self):
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(TCP_IDLE_TIMEOUT, self._timeout)

    def _timeout(self):
        if self.pending == 0:
            self.transport.close()
        else:
            self._arm()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._arm()
        buf = self.buf
        while len(buf) >= 2:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
            self._query(msg)

    def _query(self, msg: bytes) -> None:
        try:
            req = Request(msg, "tcp", self.peer, self.listener.label)
        except MalformedQuery as bad:
            if bad.reply is None:
                self.transport.close()
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
            self.pending += 1
            asyncio.ensure_future(self._later(req, result))

    async def _later(self, req: Request, result) -> None:
        answer = await settle(req, result)
        self.pending -= 1
        self._send(req.render(answer))

    def _send(self, out: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(_LEN.pack(len(out)) + out)


class TCPListener:
    def __init__(self, router: Router, label: str):
        self.router = router
        self.label = label
        self.open = 0

    def protocol(self) -> TCPConnection:
        return TCPConnection(self)


def wildcard_family() -> tuple[str, int]:
    """Dual-stack '::' where the host has IPv6, else 0.0.0.0."""
    if socket.has_ipv6:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.close()
            return "::", socket.AF_INET6
        except OSError:
            pass
    return "0.0.0.0", socket.AF_INET


def make_sockets(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Bound UDP and TCP sockets for host:port (host '' means every address)."""
    # Port 0: the free UDP port may be taken for TCP by another process; try another one.
    for _ in range(19 if port == 0 else 0):
        try:
            return _bound_pair(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    return _bound_pair(host, port)


def _bound_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    if host == "":
        host, family = wildcard_family()
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            if family == socket.AF_INET6 and host == "::":
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((host, port))
        # port 0 asks for a free port: use the UDP one for TCP too
        tcp.bind((host, udp.getsockname()[1]))
        tcp.listen(1024)
        udp.setblocking(False)
        tcp.setblocking(False)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp
