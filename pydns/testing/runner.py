"""``ServerThread``: a pydns instance on its own event loop in a background thread.

    with ServerThread(corefile_text) as srv:
        srv.port          # the first DNS listener's real port (``:0`` in a key picks a free one)
        srv.query("web.default.svc.cluster.local", "A")   # a dnspython answer message
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading

from pydns import loops
from pydns.server import Instance


class ServerThread:
    def __init__(self, corefile: str, dns_port: int = 0, path: str | None = None, start_timeout: float = 30.0):
        self._tmp = None
        if path is None:
            self._tmp = tempfile.NamedTemporaryFile("w", suffix=".Corefile", delete=False)
            self._tmp.write(corefile)
            self._tmp.close()
            path = self._tmp.name
        self.path = path
        self.instance = Instance(path, dns_port=dns_port)
        self.start_timeout = start_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._done: asyncio.Event | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "ServerThread":
        self._thread = threading.Thread(target=self._run, name="pydns", daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout):
            raise TimeoutError("pydns did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        self.loop = loops.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            loops.close(self.loop)

    async def _main(self) -> None:
        self._done = asyncio.Event()
        try:
            await self.instance.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        # Stop when asked, or when the instance gives up by itself (a detected loop).
        waiters = [asyncio.ensure_future(self._done.wait()), asyncio.ensure_future(self.instance.stopping.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        await self.instance.stop()

    def stop(self) -> None:
        if self.loop is not None and self._done is not None and self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._done.set)
            self._thread.join(30)
        if self._tmp is not None:
            try:
                os.unlink(self._tmp.name)
            except OSError:
                pass

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- helpers
    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def reload(self) -> bool:
        return self.call(self.instance.reload())

    @property
    def port(self) -> int:
        return next(iter(self.instance.addresses.values()))

    def port_for(self, configured: int) -> int:
        """The real port of the listener configured as ``configured`` (0 stays 0 if ambiguous)."""
        return self.instance.port_of(configured)

    @property
    def address(self) -> tuple[str, int]:
        (host, _port), real = next(iter(self.instance.addresses.items()))
        return (host or "127.0.0.1", real)

    def query(self, name: str, rdtype: str = "A", tcp: bool = False, port: int | None = None, timeout: float = 3.0, **kw):
        """Ask the server with dnspython (must be installed: the ``test`` extra)."""
        import dns.message
        import dns.query

        q = dns.message.make_query(name, rdtype, **kw)
        host, real = self.address
        fn = dns.query.tcp if tcp else dns.query.udp
        return fn(q, host, port=port or real, timeout=timeout)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now (for ports a Corefile names)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def plugin_named(name: str, cls):
    """Register ``cls`` as the plugin ``name`` (a Corefile directive) for the ``with`` block,
    then put back whatever was registered under that name before."""
    from pydns.plugin import REGISTRY, register

    previous = REGISTRY.get(name)
    register(name)(cls)
    try:
        yield cls
    finally:
        if previous is None:
            REGISTRY.pop(name, None)
        else:
            REGISTRY[name] = previous


def wait_until_answering(port: int, process=None, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Wait for a DNS server (a pydns started as a process, say) to answer on ``port``;
    fail early if ``process`` (a ``subprocess.Popen``) exits first."""
    import time

    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query("example.org.", "A")
    deadline = time.monotonic() + timeout
    while True:
        try:
            dns.query.udp(query, host, port=port, timeout=0.5)
            return
        except (OSError, dns.exception.Timeout):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered DNS on {host}:{port}") from None
            time.sleep(0.1)
