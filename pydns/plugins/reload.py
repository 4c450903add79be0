"""reload — reloads the Corefile when it changes.

Syntax::

    reload [INTERVAL] [JITTER]

Every INTERVAL (default 30s, at least 2s), give or take half of JITTER (default 15s, at
least 1s, at most half of INTERVAL), the Corefile is read again, with every file it
imports, and its SHA512 compared with the running configuration's.  The digest is taken
over the parsed server blocks (each word with its file and line), so comments and spacing
within a line do not count, while added or moved lines do.  On a change the configuration
is replaced without dropping a query.  A Corefile that does not parse, has no server block
(empty, comments or snippets only) or fails to start leaves the running configuration
serving, is logged, counted in ``coredns_reload_failed_total``, and not tried again until
it changes.  The running digest
is logged (``Running configuration SHA512 = ...``) and exported as
``coredns_reload_version_info{hash="sha512", value}``.  Sending SIGUSR1 to the process
reloads at once, with or without this plugin.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

from pydns import metrics
from pydns.corefile import CorefileError, Directive, ServerBlock
from pydns.plugin import Plugin, expect_args, parse_duration, register

DEFAULT_INTERVAL, DEFAULT_JITTER = 30.0, 15.0
MIN_INTERVAL, MIN_JITTER = 2.0, 1.0


def _tokens(tokens) -> list:
    return [[str(t), t.file, t.line] for t in tokens]


def _directive(d: Directive) -> list:
    return [[str(d.name), d.name.file, d.name.line], _tokens(d.args),
            None if d.block is None else [_directive(o) for o in d.block]]


def digest(blocks: list[ServerBlock]) -> str:
    """SHA512 (hex) of the parsed configuration: keys and directives with where they were written."""
    shape = [[_tokens(b.keys), [_directive(d) for d in b.directives]] for b in blocks]
    return hashlib.sha512(json.dumps(shape, separators=(",", ":")).encode()).hexdigest()


def _version_info():
    return metrics.gauge("coredns_reload_version_info", "Constant 1, labeled by the hash type and the "
                         "hash of the running Corefile.", ("hash", "value"))


@register("reload")
class Reload(Plugin):
    def setup(self, d: Directive) -> None:
        args = expect_args(d, 0, 2)
        if d.block:
            raise d.block[0].error(f"plugin/reload: unknown property '{d.block[0].name}'")
        interval = parse_duration(args[0], "reload") if args else DEFAULT_INTERVAL
        if interval < MIN_INTERVAL:
            raise d.error("plugin/reload: interval value must be greater or equal to 2s", args[0])
        jitter = parse_duration(args[1], "reload") if len(args) > 1 else DEFAULT_JITTER
        if jitter < MIN_JITTER:
            raise d.error("plugin/reload: jitter value must be greater or equal to 1s", args[1])
        jitter = min(jitter, interval / 2)
        # Many replicas start together: spread their checks over the jitter.
        self.interval = interval + random.uniform(-jitter / 2, jitter / 2)
        # The digest of the files as this configuration was built from them; each new
        # configuration has a new instance of this plugin, which carries on from there.
        try:
            self.digest = digest(self.server.instance.read())
        except CorefileError:
            self.digest = ""
        self.task: asyncio.Task | None = None

    async def started(self) -> None:
        instance = self.server.instance
        # One watcher per process, whatever the number of server blocks naming reload.
        first = next(p for p in instance.all_plugins() if p.name == self.name)
        if first is not self:
            return
        self.log.info("Running configuration SHA512 = %s", self.digest)
        self._publish(self.digest)
        self.task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        # A successful reload stops this plugin from inside its own watcher: let that
        # task finish by itself rather than cancel the reload it is running.
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.task = None

    @staticmethod
    def _publish(value: str) -> None:
        gauge = _version_info()
        gauge.clear()
        gauge.labels("sha512", value).set(1)

    async def _watch(self) -> None:
        instance = self.server.instance
        while True:
            await asyncio.sleep(self.interval)
            try:
                current = digest(instance.read())
            except CorefileError as exc:
                # A Corefile that does not parse (or has no server block) is a failed reload
                # too: tried, logged and counted once, until the error changes.
                current = f"error: {exc}"
            if current == self.digest:
                continue
            # Remember it even if it fails: a broken Corefile is not retried until it changes.
            self.digest = current
            if not current.startswith("error: "):
                self._publish(current)
            try:
                ok = await instance.reload()
            except Exception:
                self.log.exception("Corefile changed but reload failed")
                ok = False
            if ok:
                return  # the new configuration's own reload plugin watches from here
            self.log.error("Corefile changed but reload failed")
