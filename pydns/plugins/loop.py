"""loop — detects a forwarding loop at start-up and stops the server.

Syntax::

    loop

Once the listeners are open, the plugin asks its own server for
``<random>.<random>.<zone>`` with type HINFO (``zone``: the block's first zone), retrying
each second for up to 30 seconds until the query gets any answer.  If that query comes back
to the server more than twice, the server is forwarding to itself (typically ``forward .
/etc/resolv.conf`` where resolv.conf lists a loopback address such as 127.0.0.53): the loop
is logged with the path of the probe and the process exits with a non-zero status.  Two
seconds after a probe is answered, or after 30 seconds, the plugin steps out of the way and
costs nothing per query.  It only finds loops present at start-up, and only for HINFO.
"""

from __future__ import annotations

import asyncio
import secrets
import socket

from pydns.corefile import Directive
from pydns.plugin import DNSError, Plugin, expect_args, expect_no_block, register
from pydns.wire import SERVFAIL, Request
from pydns.zones import to_wire

HINFO = 13
PROBE_PERIOD = 30.0  # keep trying to reach ourselves this long (start-up may be slow)
PROBE_TIMEOUT = 2.0
RETRY_EVERY = 1.0
LINGER = 2.0  # after a probe is answered, keep counting this long before stepping aside
TROUBLESHOOTING = "https://coredns.io/plugins/loop#troubleshooting"


def _random_label() -> str:
    return str(secrets.randbelow(1 << 62))


def _show(host: str, port) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@register("loop")
class Loop(Plugin):
    def setup(self, d: Directive) -> None:
        expect_args(d, 0, 0)
        expect_no_block(d)
        self.zone = self.server.keys[0].zone if self.server.keys else "."
        labels = f"{_random_label()}.{_random_label()}"
        self.qname = f"{labels}." if self.zone == "." else f"{labels}.{self.zone}"
        self.qkey = to_wire(self.qname)
        self.seen = 0
        self.detected = False
        self.address = ""
        self._task: asyncio.Task | None = None
        self._stopping = False

    def serve(self, req: Request):
        if req.qtype == HINFO and req.key == self.qkey:
            self.seen += 1
            if self.seen > 2:
                if not self.detected:
                    self.detected = True
                    self.server.instance.fatal(self._message(req))
                # Stop the query going round again while the server shuts down.
                raise DNSError(SERVFAIL, "forwarding loop detected")
        return self.next.serve(req)

    def _message(self, req: Request) -> str:
        remote = _show(req.remote[0], req.remote[1]) if req.remote else "-"
        return (f'Loop ({remote} -> {self.address}) detected for zone "{self.zone}", see {TROUBLESHOOTING}. '
                f'Query: "HINFO {self.qname}". The server forwards this zone to itself: point forward at a '
                f"real upstream resolver instead of this server's own address (or of a resolv.conf that lists "
                f"a local address such as 127.0.0.53).")

    # ------------------------------------------------------------ the probe
    async def started(self) -> None:
        self._task = asyncio.ensure_future(self._probe())

    async def stop(self) -> None:
        self._stopping = True  # a cancel can be lost when a reply lands at the same moment
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _target(self) -> tuple[str, int]:
        binds = self.server.binds
        host = binds[0] if binds else ""
        port = self.server.instance.port_of(self.server.ports[0])
        self.address = _show(host, port)
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host, port

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            host, port = self._target()
            deadline = loop.time() + PROBE_PERIOD
            query = self._query()
            while loop.time() < deadline and not self._stopping:
                try:
                    await _exchange(loop, host, port, query)
                except (OSError, asyncio.TimeoutError):
                    self.seen = 0
                    await asyncio.sleep(RETRY_EVERY)
                    continue
                if not self._stopping:
                    await asyncio.sleep(LINGER)
                break
        except (OSError, KeyError) as exc:  # no listener to probe: nothing to detect
            self.log.warning("cannot probe this server for a forwarding loop: %s", exc)
        finally:
            self._step_aside()

    def _query(self) -> bytes:
        from dnslib import DNSRecord

        return DNSRecord.question(self.qname, "HINFO").pack()

    def _step_aside(self) -> None:
        # From now on the chain calls the next plugin directly: no per-query cost.
        if self.next is not None:
            self.serve = self.next.serve


async def _exchange(loop: asyncio.AbstractEventLoop, host: str, port: int, query: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))
        await loop.sock_sendall(sock, query)
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), PROBE_TIMEOUT)
            if reply[:2] == query[:2]:
                return reply
