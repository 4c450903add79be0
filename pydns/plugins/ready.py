"""ready — an HTTP endpoint that says when every plugin is ready to serve.

Syntax::

    ready [ADDRESS] {
        monitor until-ready|continuously
    }

``GET /ready`` on ADDRESS (default ``:8181``) answers 200 and ``OK`` once every plugin that
reports readiness (kubernetes, until its first sync) is ready, in every server block;
otherwise 503 and the names of the plugins that are not, sorted and comma separated.
With ``monitor until-ready`` (the default) a plugin that was ready once is not asked
again; with ``continuously`` it is asked on every request, so the endpoint can go back to
503.  While the process shuts down (health's lameduck) it answers 503 ``Shutting down``.
Server blocks that name the same address share one endpoint.
"""

from __future__ import annotations

from pydns.corefile import Directive
from pydns.httpd import TEXT, HttpListener, http_address, open_http
from pydns.plugin import Plugin, register

DEFAULT_ADDRESS = ":8181"
MONITORS = ("until-ready", "continuously")


@register("ready")
class Ready(Plugin):
    def setup(self, d: Directive) -> None:
        self.addr, self.where = http_address(d, "ready", DEFAULT_ADDRESS)
        self.continuously = False
        for opt in d.options:
            if opt.name != "monitor":
                raise opt.error(f"plugin/ready: unknown property '{opt.name}'")
            if len(opt.args) != 1:
                raise opt.error("plugin/ready: wrong argument count or unexpected line ending after 'monitor'")
            if opt.args[0] not in MONITORS:
                raise opt.error(f"plugin/ready: monitor type '{opt.args[0]}' not supported", opt.args[0])
            self.continuously = opt.args[0] == "continuously"
        self.listener: HttpListener | None = None
        self.confirmed: set[Plugin] = set()
        self.shutting_down = False

    async def start(self) -> None:
        self.listener = self.server.http(self.addr, 8181)
        self.listener.add("/ready", self.handle, owner=self)
        await open_http(self.listener, self.addr, self.where, "ready")

    async def lameduck(self) -> None:
        self.shutting_down = True

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.remove_owner(self)

    def not_ready(self) -> list[str]:
        """Names of the plugins that are not ready yet, sorted, each once."""
        waiting: set[str] = set()
        # The plugins of this configuration, not the instance's running one: while it starts
        # (the kubernetes plugin waiting for its first sync) the instance has none yet.
        for plugin in (p for config in self.server.siblings for p in config.plugins):
            if not plugin.reports_ready or plugin in self.confirmed:
                continue
            try:
                ok = bool(plugin.ready())
            except Exception:
                self.log.exception("plugin %s failed to report readiness", plugin.name)
                ok = False
            if not ok:
                waiting.add(plugin.name)
            elif not self.continuously:
                self.confirmed.add(plugin)
        return sorted(waiting)

    def handle(self, query: str) -> tuple[int, str, bytes]:
        if self.shutting_down:
            return 503, TEXT, b"Shutting down"
        waiting = self.not_ready()
        if not waiting:
            return 200, TEXT, b"OK"
        names = ",".join(waiting)
        self.log.info("Plugins not ready: %r", names)
        return 503, TEXT, names.encode()
