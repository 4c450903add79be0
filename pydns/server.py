"""Turning a parsed Corefile into running servers, and replacing them on reload.

``build`` makes one ``ServerConfig`` per server block: its zones and ports, and its plugins
set up and chained in the fixed order.  An ``Instance`` owns the listeners (one UDP and one
TCP socket per address and port) and the current configuration; a reload builds and starts
a new configuration beside the old one, then points the listeners at it, so that no query
is dropped and a broken Corefile leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
from typing import Callable, Iterable, NamedTuple

from pydns import replies, stats
from pydns.corefile import CorefileError, ServerBlock, load, parse
from pydns.httpd import HttpListener, split_hostport
from pydns.plugin import FOREIGN, ORDER, EndOfChain, Plugin, load_plugins, resolve
from pydns.tcp import TCPListener, settings_of
from pydns.transport import DEFAULT_RCVBUF, Router, make_sockets
from pydns.udp import UDPListener
from pydns.wire import Request, rcode_of
from pydns.zones import Key, parse_key, to_wire

log = logging.getLogger("pydns")


class Listeners(NamedTuple):
    """The sockets of one address and port: UDP, and TCP with its asyncio server."""

    udp: UDPListener
    tcp: TCPListener
    tcp_server: asyncio.AbstractServer

    def close(self) -> None:
        self.udp.close()
        self.tcp_server.close()


LOOKUP_DEPTH_MAX = 8
_LOOKUP_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("lookup_depth", default=0)


class ServerConfig:
    """One server block: what it serves, on which ports, with which chain."""

    def __init__(self, block: ServerBlock, keys: list[Key], instance: "Instance"):
        self.block = block
        self.keys = keys
        self.zones: list[str] = list(dict.fromkeys(k.zone for k in keys))
        self.ports: list[int] = sorted({k.port for k in keys})
        self.binds: list[str] = []  # filled by the bind plugin; empty means every address
        self.tcp_settings: dict[str, float] = {}  # filled by the timeouts plugin (pydns.tcp)
        self.instance = instance
        self.plugins: list[Plugin] = []
        self.handler: Plugin = EndOfChain(self)
        # Every block of the same configuration, this one included (set by ``build``): the
        # ready plugin asks them all, also while they are still starting.
        self.siblings: list[ServerConfig] = [self]

    @property
    def label(self) -> str:
        """The ``server`` label of metrics, as CoreDNS writes it (``dns://:53``)."""
        host = self.binds[0] if self.binds else ""
        host = f"[{host}]" if ":" in host else host
        return f"dns://{host}:{self.ports[0]}"

    def plugin(self, name: str) -> Plugin | None:
        for p in self.plugins:
            if p.name == name:
                return p
        return None

    def http(self, addr: str, default_port: int) -> HttpListener:
        return self.instance.http_listener(addr, default_port)

    async def lookup(self, name, qtype: int, trace=None):
        """Resolve ``name`` (text, or a dnslib label: a label may hold any octet, a dot too)
        through this server's own chain (ExternalName targets, CNAMEs); ``trace`` is the
        asking query's (``pydns explain``), which this lookup adds to.

        None when there is no block for it, or when lookups already nest LOOKUP_DEPTH_MAX
        deep for this query (a CNAME whose target's answer starts another lookup, and so on).
        """
        depth = _LOOKUP_DEPTH.get()
        if depth >= LOOKUP_DEPTH_MAX:
            log.warning("lookups for %s nest %d deep; not following further", name, depth)
            return None
        token = _LOOKUP_DEPTH.set(depth + 1)  # seen by lookups the chain below starts (same task)
        try:
            return await self._lookup(name, qtype, trace)
        finally:
            _LOOKUP_DEPTH.reset(token)

    async def _lookup(self, name, qtype: int, trace):
        from dnslib import EDNS0, DNSRecord

        query = DNSRecord.question(name, _qtype_name(qtype))
        query.header.rd = 1
        # The largest EDNS0 size: plugins size answers for it (loadbalance, truncation).
        query.add_ar(EDNS0(udp_len=65535))
        req = Request(bytes(query.pack()), "udp", ("127.0.0.1", 0), self.label)
        router = self.instance.routers.get(self.ports[0])
        entry = router.route(req.key) if router else (self, self.zones[0])
        if entry is None:
            return None
        server, req.zone = entry
        req.server = server
        if trace is not None:
            req.trace = trace
            trace.note(None, "lookup", f"{name} {_qtype_name(qtype)} asked through server block "
                       f"`{' '.join(str(t) for t in server.block.keys)}`")
        answer = await resolve(server.handler.serve(req))
        if trace is not None and answer.plugin and trace.steps[-1]["plugin"] != answer.plugin:
            trace.note(answer.plugin, "answered", f"{name} {_qtype_name(qtype)}: {rcode_of(answer)}")
        return DNSRecord.parse(req.render(answer))


def _qtype_name(qtype: int) -> str:
    from pydns.wire import type_name

    return type_name(qtype)


def build(blocks: list[ServerBlock], default_port: int, instance: "Instance",
          errors: list[CorefileError] | None = None) -> list[ServerConfig]:
    """Set up every plugin of every block; raises CorefileError naming file and line.

    With an ``errors`` list, every error is noted there instead and the faulty key,
    directive or plugin left out, so that one pass finds them all (``-validate``).
    """

    def problem(err: CorefileError) -> None:
        if errors is None:
            raise err
        errors.append(err)

    registry = load_plugins()
    configs: list[ServerConfig] = []
    for block in blocks:
        keys: list[Key] = []
        for tok in block.keys:
            try:
                keys.extend(parse_key(tok, default_port))
            except CorefileError as err:
                problem(err)
        # A block whose keys are all broken still has its directives checked, under a
        # stand-in root key; it is then left out.
        stand_in = not keys
        if stand_in:
            keys = [Key(".", default_port, block.keys[0])]
        config = ServerConfig(block, keys, instance)
        by_name: dict[str, list] = {}
        for d in block.directives:
            if d.name in FOREIGN:
                problem(d.error(f"plugin '{d.name}' is {FOREIGN[d.name]}"))
            elif d.name not in ORDER:
                problem(d.error(f"unknown directive '{d.name}'"))
            elif d.name not in registry:
                problem(d.error(f"plugin '{d.name}' is not available in this build"))
            else:
                by_name.setdefault(str(d.name), []).append(d)
        for name in ORDER:
            directives = by_name.get(name)
            if not directives:
                continue
            cls = registry[name]
            if len(directives) > 1 and not cls.multiple:
                problem(directives[1].error(f"plugin/{name}: this plugin can only be used once per Server Block"))
                directives = directives[:1]
            plugin = cls(config)
            try:
                for d in directives:
                    plugin.setup(d)
            except CorefileError as err:
                problem(err)
                continue
            config.plugins.append(plugin)
        # Plugins that never look at queries (health, ready, reload...) stay out of the chain.
        chain = [p for p in config.plugins if type(p).serve is not Plugin.serve] + [EndOfChain(config)]
        for a, b in zip(chain, chain[1:]):
            a.next = b
        keeps = True
        for plugin in chain:  # replies may be kept only where every plugin that saw the query allows it
            keeps = keeps and plugin.memoizable
            plugin.keeps = math.inf if keeps else 0.0
        config.handler = chain[0]
        if not stand_in:
            configs.append(config)
    for config in configs:
        config.siblings = configs
    _check_duplicates(configs, problem)
    return configs


def _check_duplicates(configs: list[ServerConfig], problem: Callable[[CorefileError], None]) -> None:
    seen: dict[tuple, Key] = {}
    for config in configs:
        binds = tuple(sorted(config.binds)) or ("",)
        for key in config.keys:
            for bind in binds:
                ident = (key.zone, key.port, bind)
                if ident in seen and seen[ident].token is not key.token:
                    problem(key.token.error(f"cannot serve dns://{key.zone}:{key.port} - it is already defined"))
                    break
                seen[ident] = key


class Instance:
    """The running process: listeners, the current configuration, reloads."""

    def __init__(self, path: str | None, text: str | None = None, dns_port: int = 53, so_rcvbuf: int = DEFAULT_RCVBUF):
        self.path = path
        self.text = text
        self.dns_port = dns_port
        self.so_rcvbuf = so_rcvbuf  # bytes asked for each UDP socket's receive buffer (0: the kernel's default)
        self.configs: list[ServerConfig] = []
        self.routers: dict[int, Router] = {}
        self.listeners: dict[tuple[str, int], Listeners] = {}
        self.http: dict[tuple[str, int], HttpListener] = {}
        self.stopping = asyncio.Event()
        self.reload_lock = asyncio.Lock()
        self.generation = 0
        self.fatal_error: str | None = None

    # ------------------------------------------------------------ configuration
    def read(self, *, warnings: list[str] | None = None,
             errors: list[CorefileError] | None = None) -> list[ServerBlock]:
        if self.path is not None:
            return load(self.path, warnings=warnings, errors=errors)
        return parse(self.text or "", "Corefile", warnings=warnings, errors=errors)

    def configure(self) -> list[ServerConfig]:
        """Read and build the Corefile for a start or a reload; its warnings go to the log."""
        warnings: list[str] = []
        blocks = self.read(warnings=warnings)
        for warning in warnings:
            log.warning("%s", warning)
        return build(blocks, self.dns_port, self)

    def http_listener(self, addr: str, default_port: int) -> HttpListener:
        host, port = split_hostport(addr, default_port)
        listener = self.http.get((host, port))
        if listener is None:
            listener = self.http[(host, port)] = HttpListener(host, port)
        return listener

    def all_plugins(self) -> Iterable[Plugin]:
        for config in self.configs:
            yield from config.plugins

    @property
    def addresses(self) -> dict[tuple[str, int], int]:
        """Where each listener really is (port 0 in a Corefile becomes a free port)."""
        return {k: v.udp.sockname[1] for k, v in self.listeners.items()}

    def port_of(self, port: int) -> int:
        for (host, p), real in self.addresses.items():
            if p == port:
                return real
        raise KeyError(port)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        configs = self.configure()
        try:
            await self._start_plugins(configs)
            try:
                await self._listen(configs)
            except BaseException:
                await self._stop_plugins(configs)
                raise
        except BaseException:
            await self._close_http()  # a plugin may already have bound one
            raise
        self.configs = configs
        try:
            await self._sweep_http()
            await self._announce(configs)
        except BaseException:  # the listeners are open: close everything again
            await self._close(configs)
            self.configs = []
            raise

    async def _start_plugins(self, configs: list[ServerConfig]) -> None:
        started: list[Plugin] = []
        try:
            for config in configs:
                for plugin in config.plugins:
                    await plugin.start()
                    started.append(plugin)
        except BaseException:
            for plugin in reversed(started):
                await _quietly(plugin.stop())
            raise

    async def _announce(self, configs: list[ServerConfig]) -> None:
        for config in configs:
            for plugin in config.plugins:
                await plugin.started()

    def fatal(self, message: str) -> None:
        """A plugin found the configuration cannot work (a forwarding loop): stop, exit non-zero."""
        log.error("%s", message)
        self.fatal_error = message
        self.stopping.set()

    async def _stop_plugins(self, configs: list[ServerConfig]) -> None:
        for config in configs:
            for plugin in reversed(config.plugins):
                await _quietly(plugin.stop())

    async def _listen(self, configs: list[ServerConfig]) -> None:
        """Open what the configuration needs, re-point what stays, close what is gone."""
        wanted: dict[tuple[str, int], dict[bytes, tuple]] = {}
        first_key: dict[tuple[str, int], Key] = {}
        for config in configs:
            for key in config.keys:
                for host in config.binds or [""]:
                    table = wanted.setdefault((host, key.port), {})
                    table.setdefault(to_wire(key.zone), (config, key.zone))
                    first_key.setdefault((host, key.port), key)
        loop = asyncio.get_running_loop()
        opened: dict[tuple[str, int], Listeners] = {}
        try:
            for addr, table in wanted.items():
                if addr in self.listeners:
                    continue
                host, port = addr
                try:
                    udp_sock, tcp_sock = make_sockets(host, port, self.so_rcvbuf)
                except OSError as exc:
                    shown = f"[{host}]" if ":" in host else host
                    raise first_key[addr].token.error(f"listen udp {shown}:{port}: {exc.strerror or exc}") from None
                label = f"dns://{f'[{host}]' if ':' in host else host}:{port}"
                udp = UDPListener(Router(table), label, udp_sock)
                udp.start(loop)
                tcp = TCPListener(Router(table), label)
                opened[addr] = Listeners(udp, tcp, await loop.create_server(tcp.protocol, sock=tcp_sock))
        except BaseException:
            for listeners in opened.values():
                listeners.close()
            raise
        self.listeners.update(opened)
        # Swap the routing of every listener at once: from here on queries meet the new chains.
        for addr, listeners in self.listeners.items():
            if addr in wanted:
                listeners.udp.router = listeners.tcp.router = Router(wanted[addr])
                listeners.tcp.settings = settings_of(dict.fromkeys(c for c, _ in wanted[addr].values()))
        replies.changed()  # replies kept under the old chains may differ under the new
        self.routers = {port: Router(table) for (host, port), table in wanted.items()}
        for addr in [a for a in self.listeners if a not in wanted]:
            self.listeners.pop(addr).close()

    async def _sweep_http(self) -> None:
        for addr, listener in list(self.http.items()):
            if listener.routes:
                await listener.start()
            else:
                await listener.close()
                del self.http[addr]

    async def reload(self) -> bool:
        """Replace the configuration; on any error keep the running one and say why."""
        async with self.reload_lock:
            try:
                configs = self.configure()
            except CorefileError as exc:
                stats.reload_failed += 1
                log.error("reload failed, keeping the running configuration: %s", exc)
                return False
            old = self.configs
            try:
                await self._start_plugins(configs)
            except Exception as exc:
                stats.reload_failed += 1
                log.error("reload failed, keeping the running configuration: %s", exc)
                for listener in self.http.values():
                    for config in configs:
                        for plugin in config.plugins:
                            listener.remove_owner(plugin)
                await self._sweep_http()
                return False
            try:
                await self._listen(configs)
            except (CorefileError, OSError) as exc:
                stats.reload_failed += 1
                log.error("reload failed, keeping the running configuration: %s", exc)
                await self._stop_plugins(configs)
                await self._sweep_http()
                return False
            self.configs = configs
            self.generation += 1
            await self._stop_plugins(old)
            await self._sweep_http()
            await self._announce(configs)
            log.info("reload: configuration replaced")
            return True

    async def stop(self) -> None:
        """Graceful stop: lameduck first (still answering), then close everything."""
        await asyncio.gather(*(_quietly(p.lameduck()) for p in self.all_plugins()))
        await self._close(self.configs)

    async def _close(self, configs: list[ServerConfig]) -> None:
        """Close the listeners, stop ``configs``' plugins, close the HTTP listeners."""
        for listeners in self.listeners.values():
            listeners.close()
        self.listeners.clear()
        await self._stop_plugins(configs)
        await self._close_http()

    async def _close_http(self) -> None:
        for listener in self.http.values():
            await listener.close()
        self.http.clear()


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("error while stopping a plugin")


def corefile_path(arg: str | None) -> str | None:
    if arg:
        return arg
    return "Corefile" if os.path.exists("Corefile") else None
