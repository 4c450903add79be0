"""The TCP listener: length-prefixed queries, pipelined on each connection."""

from __future__ import annotations

import asyncio
import struct

from pydns.transport import Router, dispatch, settle
from pydns.wire import Answer, MalformedQuery, Request, badvers

TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_CONNECTIONS = 1000
_LEN = struct.Struct("!H")


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
