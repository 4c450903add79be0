"""DNS over HTTPS (RFC 8484) for the forward plugin: HTTP/1.1 with kept-alive connections.

A query is sent with ID 0 (as the RFC recommends) to ``/dns-query``, by POST with an
``application/dns-message`` body, or by GET with the message in the ``dns`` parameter
(base64url, unpadded).  Connections are reused until idle for ``expire`` or closed by the
server.
"""

from __future__ import annotations

import asyncio
import base64
import ssl

PATH = "/dns-query"
MIME = "application/dns-message"
MAX_BODY = 65535


class HTTPError(Exception):
    """The exchange failed at the HTTP level (closed connection, bad status, bad framing)."""


class HTTPConn:
    """One kept-alive HTTPS connection to a DoH server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, now: float):
        self.reader, self.writer = reader, writer
        self.created = self.used = now
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext, server_name: str | None, source: str | None,
                   now: float) -> "HTTPConn":
        kw = {"ssl": tls}
        if server_name:
            kw["server_hostname"] = server_name
        if source:
            kw["local_addr"] = (source, 0)
        reader, writer = await asyncio.open_connection(host, port, **kw)
        return cls(reader, writer, now)

    def request(self, method: str, authority: str, wire: bytes) -> bytes:
        if method == "GET":
            b64 = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
            head = f"GET {PATH}?dns={b64} HTTP/1.1\r\n"
            body = b""
        else:
            head = f"POST {PATH} HTTP/1.1\r\nContent-Type: {MIME}\r\nContent-Length: {len(wire)}\r\n"
            body = wire
        return (head + f"Host: {authority}\r\nAccept: {MIME}\r\n\r\n").encode() + body

    async def roundtrip(self, method: str, authority: str, wire: bytes) -> bytes:
        """Send one query and return the response body."""
        self.writer.write(self.request(method, authority, wire))
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            self.closed = True
            # the server closed the connection (perhaps long idle): the caller may retry on a fresh one
            raise HTTPError("EOF" if not isinstance(exc, asyncio.LimitOverrunError) else str(exc)) from None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            self.closed = True
            raise HTTPError(f"malformed HTTP response: {lines[0]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, sep, val = line.partition(":")
            if sep:
                headers[name.strip().lower()] = val.strip()
        body = await self._body(headers)
        if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            self.closed = True
        if status != 200:
            raise HTTPError(f"unexpected HTTP status {status}")
        return body

    async def _body(self, headers: dict) -> bytes:
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                out = bytearray()
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                    if size == 0:
                        await self.reader.readuntil(b"\r\n")  # no trailers expected
                        return bytes(out)
                    out += await self.reader.readexactly(size + 2)
                    del out[-2:]
                    if len(out) > MAX_BODY:
                        raise ValueError("body too large")
            length = int(headers.get("content-length", "-1"))
            if length < 0:
                self.closed = True
                return await self.reader.read(MAX_BODY + 1)
            if length > MAX_BODY:
                raise ValueError("body too large")
            return await self.reader.readexactly(length)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            self.closed = True
            raise HTTPError(f"bad HTTP body: {exc}") from None

    def close(self) -> None:
        self.closed = True
        self.writer.close()
