"""The UDP listener: a socket read by pydns's event loop.

When the socket is readable the loop calls ``_readable``, which drains up to ``BATCH``
datagrams with plain ``recvfrom`` and answers each at once: a known name is one dict lookup
and a byte splice, then ``sendto``.  An answer that is not ready (a forwarded query, an
ExternalName being followed) becomes a task on the same loop, which sends the reply when it
is done; the drain goes on meanwhile, so a slow upstream never delays the answers pydns
already knows.  Everything runs in the loop's one thread: a timer a plugin sets while
answering fires on time.

The batch bounds how long one busy socket keeps the loop: after ``BATCH`` datagrams the
loop runs its other callbacks (TCP, timers, cluster watches, other sockets) before it reads
this socket again.  What queues up meanwhile waits in the socket's receive buffer, which is
made large (``-so-rcvbuf``) so that a burst of clients is queued rather than dropped.

A socket bound to every address (``.:53`` without *bind*) reads each datagram with
``recvmsg`` and its destination address (``IP_PKTINFO`` / ``IPV6_PKTINFO``), and sends the
reply from that address with ``sendmsg``: otherwise the kernel picks the source, and a
client that asked another local address (a service IP on a dummy interface, 127.0.0.53)
drops the reply as coming from a stranger.  Sockets bound to one address keep the cheaper
``recvfrom``/``sendto``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from random import choice
from time import monotonic

from pydns import stats
from pydns.replies import ReplyMemo
from pydns.transport import IP_PKTINFO, IPV6_RECVPKTINFO, Router, dispatch, settle
from pydns.wire import SERVFAIL, Answer, MalformedQuery, Request, badvers, status

log = logging.getLogger("pydns")


class UDPListener:
    """A UDP socket answered on the event loop."""

    BATCH = 256
    # Answers waiting on the loop (forwarded, mostly): each is a task holding its query.
    # Past this many, a query that would wait is answered SERVFAIL at once.
    MAX_PENDING = 10_000

    def __init__(self, router: Router, label: str, sock: socket.socket):
        self.router = router
        self.label = label
        self.sock = sock
        self.inode = os.fstat(sock.fileno()).st_ino  # its row in /proc/net/udp (kernel drops)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.pending = 0
        self.pktinfo = receives_destination(sock)
        # received destination control data -> (control data of the reply, destination address)
        self._replies: dict[bytes, tuple[list, str]] = {}
        self.memo = ReplyMemo()  # replies kept by the query's bytes: the first lookup of each datagram
        # IPv4 clients of a dual-stack socket apart, as what a reply counts (prometheus) names the family
        self.memo_mapped = ReplyMemo()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        stats.udp_listeners.add(self)
        loop.add_reader(self.sock.fileno(), self._readable_pktinfo if self.pktinfo else self._readable)

    @property
    def sockname(self):
        return self.sock.getsockname()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in stats.udp_listeners:
            # the kernel's count ends with the socket: keep what it had for the metric
            stats.udp_closed_drops[self.label] = stats.udp_closed_drops.get(self.label, 0) + kernel_drops(
                {self.inode: self.label}).get(self.label, 0)
            stats.udp_listeners.discard(self)
        if self.loop is not None and self.sock.fileno() != -1:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    # ---------------------------------------------------------------- serving
    def _readable(self) -> None:
        recv, send, answer = self.sock.recvfrom, self.sock.sendto, self._answer
        kept, now = self.memo.current(), monotonic()
        for _ in range(self.BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # nothing a client can cause on an unconnected socket
                self._receive_failed(exc)
                return
            entry = kept.get(data[2:])
            if entry is not None and now < entry[1]:
                if entry[2] is not None:
                    for hook in entry[2]:
                        hook()
                tail = entry[0] if entry[3] is None else choice(entry[3])
                try:
                    send(data[:2] + tail, addr)
                except OSError as exc:
                    self._send_failed(exc, len(tail) + 2, addr)
                continue
            try:
                answer(data, addr)
            except Exception:  # a bug in answering one query must not end the listener
                stats.panics += 1
                log.exception("UDP listener %s: error while answering", self.label)

    def _readable_pktinfo(self) -> None:
        """``_readable`` for a socket bound to every address: each datagram with its destination."""
        recv, answer, reply_from = self.sock.recvmsg, self._answer, self._reply_from
        kept, kept_mapped, now = self.memo.current(), self.memo_mapped.current(), monotonic()
        for _ in range(self.BATCH):
            try:
                data, ancdata, _flags, addr = recv(65535, CONTROL_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._receive_failed(exc)
                return
            entry = (kept_mapped if addr[0].startswith("::ffff:") else kept).get(data[2:])
            if entry is not None and now < entry[1]:
                if entry[2] is not None:
                    for hook in entry[2]:
                        hook()
                self._send(data[:2] + (entry[0] if entry[3] is None else choice(entry[3])), addr,
                           reply_from(ancdata))
                continue
            try:
                answer(data, addr, reply_from(ancdata))
            except Exception:  # as in _readable
                stats.panics += 1
                log.exception("UDP listener %s: error while answering", self.label)

    def _reply_from(self, ancdata: list) -> tuple[list, str] | None:
        """The reply's control data and the query's destination address, from the query's."""
        for level, kind, data in ancdata:
            reply = self._replies.get(data)
            if reply is None:
                reply = reply_control(level, kind, data)
                if reply is None:
                    continue
                if len(self._replies) >= 1024:  # as many as local addresses and interfaces: rarely
                    self._replies.clear()
                self._replies[data] = reply
            return reply
        return None

    def _receive_failed(self, exc: OSError) -> None:
        count_error(stats.udp_receive_errors, exc, f"UDP listener {self.label}: receive")
        if not self.closed:  # uvloop stops watching a socket that reported an error
            fd = self.sock.fileno()
            self.loop.remove_reader(fd)
            self.loop.add_reader(fd, self._readable_pktinfo if self.pktinfo else self._readable)

    def _answer(self, data: bytes, addr, reply_from: tuple[list, str] | None = None) -> None:
        try:
            req = Request(data, "udp", addr, self.label)
        except MalformedQuery as bad:
            if bad.reply is not None:
                self._send(bad.reply, addr, reply_from)
            return
        if reply_from is not None:
            req.local_ip = reply_from[1]  # the log plugin's {local}
            if addr[0].startswith("::ffff:"):  # an IPv4 client of a dual-stack socket: IPv4, as CoreDNS shows it
                req.remote = (addr[0][7:], addr[1])
        if req.badvers:
            self._send(badvers(req), addr, reply_from)
            return
        result = dispatch(self.router, req)
        if isinstance(result, Answer):
            out = req.render(result)
            if req.memo_until:
                memo = self.memo_mapped if reply_from is not None and addr[0].startswith("::ffff:") else self.memo
                choices = req.memo_choices
                if choices is not None:
                    choices = tuple(answer.render(req, req.limit)[2:] for answer in choices)
                memo.keep(data[2:], out[2:], req.memo_until, req.memo_hooks, choices)
            self._send(out, addr, reply_from)
        elif self.pending < self.MAX_PENDING:
            self.pending += 1
            asyncio.ensure_future(self._later(req, result, addr, reply_from))
        else:
            asyncio.ensure_future(result).cancel()  # never run: whatever it would wait for
            stats.udp_pending_overflows += 1
            if stats.udp_pending_overflows == 1:
                log.warning("UDP listener %s: %d answers already wait on the loop; answering SERVFAIL past that "
                            "(counted in pydns_udp_pending_overflows_total, logged only once)", self.label,
                            self.MAX_PENDING)
            self._send(req.render(status(SERVFAIL)), addr, reply_from)

    def _send(self, out: bytes, addr, reply_from: tuple[list, str] | None = None) -> None:
        try:
            if reply_from is None:
                self.sock.sendto(out, addr)
            else:
                self.sock.sendmsg((out,), reply_from[0], 0, addr)
        except OSError as exc:
            self._send_failed(exc, len(out), addr)

    def _send_failed(self, exc: OSError, size: int, addr) -> None:
        count_error(stats.udp_send_errors, exc, f"UDP listener {self.label}: reply of {size} bytes to {addr[0]}")

    async def _later(self, req: Request, result, addr, reply_from: tuple[list, str] | None) -> None:
        try:
            answer = await settle(req, result)
        finally:
            self.pending -= 1
        if answer is not None and not self.closed:  # None: dropped (acl), the client gets nothing
            self._send(req.render(answer), addr, reply_from)


# Room for one in6_pktinfo (16-byte address, interface index), the larger of the two.
CONTROL_SPACE = socket.CMSG_SPACE(20)
_V4_MAPPED = bytes(10) + b"\xff\xff"


def receives_destination(sock: socket.socket) -> bool:
    """Was the socket asked for each datagram's destination (pydns.transport.receive_destination)?"""
    try:
        if sock.family == socket.AF_INET6 and IPV6_RECVPKTINFO is not None:
            return bool(sock.getsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO))
        if sock.family == socket.AF_INET and IP_PKTINFO is not None:
            return bool(sock.getsockopt(socket.IPPROTO_IP, IP_PKTINFO))
    except OSError:
        pass
    return False


def reply_control(level: int, kind: int, data: bytes) -> tuple[list, str] | None:
    """The control data that sends a reply from the address a query's control data names
    (``None`` for other control data), and that address as text.

    IPv6: the same address and interface (a link-local address needs its interface).
    IPv4, and IPv4 as v4-mapped on a dual-stack socket: the address only, the interface
    left to routing, as Unbound does.
    """
    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
        addr = data[:16]
        if addr[:12] == _V4_MAPPED:
            return [(level, kind, addr + bytes(4))], socket.inet_ntop(socket.AF_INET, addr[12:])
        return [(level, kind, data[:20])], socket.inet_ntop(socket.AF_INET6, addr)
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
        # in_pktinfo: interface index, the local address (ipi_spec_dst), the header's destination
        return [(level, kind, bytes(4) + data[8:12] + bytes(4))], socket.inet_ntop(socket.AF_INET, data[8:12])
    return None


def kernel_drops(labels: dict[int, str]) -> dict[str, int]:
    """Datagrams the kernel dropped on the given sockets (inode -> label), from /proc/net/udp*:
    a full receive buffer, mostly.  Summed per label; empty where /proc has no such files."""
    drops: dict[str, int] = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split()
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                    if len(fields) >= 13:
                        label = labels.get(int(fields[9]))
                        if label is not None:
                            drops[label] = drops.get(label, 0) + int(fields[12])
        except OSError:
            continue
    return drops


def listener_drops() -> dict[str, int]:
    """Kernel drops of every UDP listener socket pydns has had, per listener (a counter)."""
    labels = {listener.inode: listener.label for listener in list(stats.udp_listeners)}
    drops = dict(stats.udp_closed_drops)
    for label, n in kernel_drops(labels).items():
        drops[label] = drops.get(label, 0) + n
    return drops


def kept_replies() -> dict[str, tuple[int, int]]:
    """Replies the UDP listeners keep now (pydns.replies), per listener: (replies, bytes)."""
    kept: dict[str, tuple[int, int]] = {}
    for listener in list(stats.udp_listeners):
        replies, size = kept.get(listener.label, (0, 0))
        for memo in (listener.memo, listener.memo_mapped):
            replies, size = replies + len(memo.table), size + memo.size
        kept[listener.label] = (replies, size)
    return kept


# EAGAIN/ENOBUFS: the send buffer or the device queue is full (a lost packet: the client
# retries); EMSGSIZE: the reply is larger than a datagram can be.
CAUSES = {errno.EAGAIN: "buffer full", errno.ENOBUFS: "buffer full", errno.EMSGSIZE: "message too long"}
_logged: set[tuple[int, str]] = set()


def count_error(counts: dict[str, int], exc: OSError, what: str) -> None:
    """Count a socket error by its cause; log the first of each cause."""
    cause = CAUSES.get(exc.errno) or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    counts[cause] = counts.get(cause, 0) + 1
    if (id(counts), cause) not in _logged:
        _logged.add((id(counts), cause))
        log.warning("%s failed: %s (%s; counted, logged only once)", what, exc.strerror or exc, cause)
