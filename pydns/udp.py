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
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket

from pydns import stats
from pydns.transport import Router, dispatch, settle
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

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        stats.udp_listeners.add(self)
        loop.add_reader(self.sock.fileno(), self._readable)

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
        recv, answer = self.sock.recvfrom, self._answer
        for _ in range(self.BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # nothing a client can cause on an unconnected socket
                count_error(stats.udp_receive_errors, exc, f"UDP listener {self.label}: receive")
                if not self.closed:  # uvloop stops watching a socket that reported an error
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.add_reader(self.sock.fileno(), self._readable)
                return
            try:
                answer(data, addr)
            except Exception:  # a bug in answering one query must not end the listener
                stats.panics += 1
                log.exception("UDP listener %s: error while answering", self.label)

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
            out = req.render(result)
            try:
                self.sock.sendto(out, addr)  # _send, inlined: this is the hot path
            except OSError as exc:
                self._send_failed(exc, out, addr)
        elif self.pending < self.MAX_PENDING:
            self.pending += 1
            asyncio.ensure_future(self._later(req, result, addr))
        else:
            asyncio.ensure_future(result).cancel()  # never run: whatever it would wait for
            stats.udp_pending_overflows += 1
            if stats.udp_pending_overflows == 1:
                log.warning("UDP listener %s: %d answers already wait on the loop; answering SERVFAIL past that "
                            "(counted in pydns_udp_pending_overflows_total, logged only once)", self.label,
                            self.MAX_PENDING)
            self._send(req.render(status(SERVFAIL)), addr)

    def _send(self, out: bytes, addr) -> None:
        try:
            self.sock.sendto(out, addr)
        except OSError as exc:
            self._send_failed(exc, out, addr)

    def _send_failed(self, exc: OSError, out: bytes, addr) -> None:
        count_error(stats.udp_send_errors, exc, f"UDP listener {self.label}: reply of {len(out)} bytes to {addr[0]}")

    async def _later(self, req: Request, result, addr) -> None:
        try:
            answer = await settle(req, result)
        finally:
            self.pending -= 1
        if not self.closed:
            self._send(req.render(answer), addr)


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
