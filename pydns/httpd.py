"""A tiny HTTP/1.1 server on asyncio for health, ready and metrics endpoints, and the
helpers those plugins share (their ADDRESS argument, binding at start-up).

Listeners are shared by address: several server blocks (and the old and new configuration
during a reload) register paths on the same ``HttpListener``.  Handlers are plain functions
``(query_string) -> (status, content_type, body)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

from pydns.corefile import Directive, Token
from pydns.plugin import expect_args

Handler = Callable[[str], "tuple[int, str, bytes]"]

log = logging.getLogger("pydns")

TEXT = "text/plain; charset=utf-8"

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable", 400: "Bad Request"}


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
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        # path -> registrations, newest last: a reload's new configuration answers while it
        # is registered, and removing it (a failed reload) brings back the running one's.
        self.routes: dict[str, list[tuple[Handler, object]]] = {}
        self._server: asyncio.AbstractServer | None = None

    @property
    def bound_port(self) -> int:
        if self._server and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self.port

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
            self._server = await asyncio.start_server(self._serve, self.host or None, self.port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    break
                parts = line.decode("latin-1").split()
                headers = {}
                while True:
                    h = await asyncio.wait_for(reader.readline(), 10)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if len(parts) < 2:
                    status, ctype, body = 400, "text/plain", b"bad request\n"
                else:
                    status, ctype, body = self._dispatch(parts[0], parts[1])
                close = headers.get("connection", "").lower() == "close" or (len(parts) > 2 and parts[2] == "HTTP/1.0")
                head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n")
                writer.write(head.encode() + (body if parts and parts[0] != "HEAD" else b""))
                await writer.drain()
                if close:
                    break
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _dispatch(self, method: str, target: str) -> tuple[int, str, bytes]:
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
