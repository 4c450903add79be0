"""The UDP listener: a socket answered on pydns's event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

from pydns import stats
from pydns.eventloop import wake_if_scheduled
from pydns.transport import Router, dispatch, settle
from pydns.wire import Answer, MalformedQuery, Request, badvers

log = logging.getLogger("pydns")


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
