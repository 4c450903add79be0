"""health — an HTTP endpoint that says the process is up.

Syntax::

    health [ADDRESS] {
        lameduck DURATION
    }

``GET /health`` on ADDRESS (default ``:8080``; ``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT``)
answers 200 and the word ``OK``.  ``lameduck`` delays shutdown by DURATION: DNS keeps being
answered and ``/health`` keeps saying ``OK`` (the *ready* endpoint says 503 meanwhile), so
that load balancers drain the process before it goes.  Server blocks that name the same
address share one endpoint.

Once a second the plugin asks its own endpoint and records how long that took in
``coredns_health_request_duration_seconds``; failed attempts count in
``coredns_health_request_failures_total``.  A slow answer means the process is struggling
with its load.
"""

from __future__ import annotations

import asyncio
import time

from pydns import metrics
from pydns.corefile import CorefileError, Directive
from pydns.httpd import TEXT, HttpListener, http_address, open_http, split_hostport
from pydns.plugin import Plugin, parse_duration, register

DEFAULT_ADDRESS = ":8080"
PROBE_EVERY = 1.0
PROBE_TIMEOUT = 3.0


def show_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    return f"{int(seconds // 60)}m{seconds % 60:g}s"


def _probe_metrics():
    duration = metrics.histogram("coredns_health_request_duration_seconds",
                                 "Time (in seconds) each self health check took.",
                                 buckets=metrics.SLIM_TIME_BUCKETS)
    failures = metrics.counter("coredns_health_request_failures_total",
                               "Number of self health checks that failed.")
    return duration, failures


@register("health")
class Health(Plugin):
    def setup(self, d: Directive) -> None:
        self.addr, self.where = http_address(d, "health", DEFAULT_ADDRESS)
        self.lameduck_for = 0.0
        for opt in d.options:
            if opt.name != "lameduck":
                raise opt.error(f"plugin/health: unknown property '{opt.name}'")
            if len(opt.args) != 1:
                raise opt.error("plugin/health: wrong argument count or unexpected line ending after 'lameduck'")
            try:
                self.lameduck_for = parse_duration(opt.args[0])
            except CorefileError:
                raise opt.error(f"plugin/health: unable to parse lameduck duration value: '{opt.args[0]}'",
                                opt.args[0]) from None
        self.listener: HttpListener | None = None
        self.prober: asyncio.Task | None = None
        self.duration, self.failures = _probe_metrics()

    async def start(self) -> None:
        self.listener = self.server.http(self.addr, 8080)
        self.listener.add("/health", self.handle, owner=self)
        await open_http(self.listener, self.addr, self.where, "health")

    async def started(self) -> None:
        self.prober = asyncio.ensure_future(self._probe_forever())

    async def lameduck(self) -> None:
        if self.lameduck_for > 0:
            self.log.info("Going into lameduck mode for %s", show_duration(self.lameduck_for))
            await asyncio.sleep(self.lameduck_for)

    async def stop(self) -> None:
        if self.prober is not None:
            self.prober.cancel()
            self.prober = None
        if self.listener is not None:
            self.listener.remove_owner(self)

    def handle(self, query: str) -> tuple[int, str, bytes]:
        return 200, TEXT, b"OK"

    # ------------------------------------------------------------ self check
    def _probe_target(self) -> tuple[str, int]:
        host, _port = split_hostport(self.addr, 8080)
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host, self.listener.bound_port

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY)
            host, port = self._probe_target()
            start = time.perf_counter()
            try:
                await asyncio.wait_for(self._probe_once(host, port), PROBE_TIMEOUT)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                self.duration.observe(time.perf_counter() - start)
                self.failures.inc()
                self.log.warning("Local health request to %r failed: %s", f"http://{host}:{port}/health",
                                 exc or type(exc).__name__)
                continue
            elapsed = time.perf_counter() - start
            self.duration.observe(elapsed)
            if elapsed > 1.0:
                self.log.warning("Local health request to %r took more than 1s: %.3fs",
                                 f"http://{host}:{port}/health", elapsed)

    @staticmethod
    async def _probe_once(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            if not (await reader.readline()).startswith(b"HTTP/1."):
                raise ValueError("not an HTTP response")
            await reader.read()
        finally:
            writer.close()
