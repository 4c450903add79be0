"""autopath — walks the client's search path on the server, so one query does the client's work.

Syntax::

    autopath [ZONE...] RESOLV-CONF|@kubernetes

ZONES (default: the server block's) are the names autopath looks at.  RESOLV-CONF is a
``resolv.conf``-like file whose ``search`` (or ``domain``) line is the search path of every
client; ``@kubernetes`` asks the block's *kubernetes* plugin for the search path of the pod
that sent the query: ``NS.svc.ZONE svc.ZONE ZONE``, then the search domains of this host's
``/etc/resolv.conf`` (which pods inherit from their node), as CoreDNS builds it.

A query whose name sits below the first element of the client's search path
(``api.example.com.shop.svc.cluster.local`` from a pod of namespace ``shop``) is taken as
the first step of the client's own search for ``api.example.com``: the rest of the chain is
asked for that name with each element of the search path appended in turn, and the name
alone last, until one is not NXDOMAIN.  That answer is returned for the question asked, led
by a CNAME from the asked name to the one that resolved.  If every step is NXDOMAIN, or a
step fails (anything but NOERROR and NXDOMAIN), the client gets the answer to its own
question, as without autopath, and goes on searching.

With ``@kubernetes``, as in CoreDNS, the *kubernetes* plugin needs ``pods verified`` (the
pods are watched only then; start-up warns otherwise, and autopath then changes nothing).
Beyond CoreDNS, a client gets exactly the answer it would get without autopath, never a
search path that may be someone else's, whenever its namespace is not certain from the
cluster's state: an address that no pod has (a pod not seen yet, a node-local cache or
any other forwarder), an address of a host-network pod (it is the node's), an address that
pods of two namespaces hold at once, and any query before the first full sync.  The answer
depends on that state alone, never on the order events came in, so every replica that has
seen the same objects answers the same.

Metrics: ``coredns_autopath_success_total{server}``, queries answered from the search path
walk (as in CoreDNS, also when the first element resolved).
"""

from __future__ import annotations

import logging

from dnslib import CNAME, QTYPE, RR, DNSRecord
from prometheus_client.core import CounterMetricFamily

from pydns import metrics
from pydns.corefile import Directive
from pydns.parser import label_offsets
from pydns.plugin import DNSError, Plugin, expect_no_block, load_plugins, register, resolve
from pydns.wire import NOERROR, NXDOMAIN, TCP_MESSAGE_MAX, TYPE_OPT, Answer, Request
from pydns.zones import in_wire_zones, normalize_zones, to_wire

log = logging.getLogger("plugin/autopath")

HOST_RESOLV_CONF = "/etc/resolv.conf"
ROOT = b"\x00"
SVC = b"\x03svc"
SEARCH_PATHS_MAX = 4096  # (namespace, zone) search paths kept built
REWRITTEN_MAX = 4096  # replies kept made for the question asked

# Successful walks per server label: plain integers, read at scrape time.
SUCCESS: dict[str, int] = {}


def read_search(path: str) -> list[str]:
    """The search domains of a resolv.conf (its last ``search`` or ``domain`` line), as
    miekg/dns reads them; OSError if the file cannot be read."""
    search: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split("#", 1)[0].split(";", 1)[0].split()
            if len(fields) >= 2 and fields[0] in ("search", "domain"):
                search = fields[1:] if fields[0] == "search" else fields[1:2]
    # Names that cannot be DNS names (empty, not ASCII, a label over 63 octets) are left out.
    return [name.lower().rstrip(".") + "." for name in search
            if name.strip(".") and name.isascii() and all(0 < len(x) < 64 for x in name.rstrip(".").split("."))]


def base_of(key: bytes, first: bytes) -> bytes | None:
    """The leading labels of ``key`` in front of ``first`` (wire forms), or None when ``key`` is
    not strictly below ``first``."""
    if len(key) <= len(first) or not key.endswith(first):
        return None
    for offset in label_offsets(key):
        if offset + len(first) == len(key):
            return key[:offset] if offset else None
        if offset + len(first) > len(key):
            return None
    return None


@register("autopath")
class AutoPath(Plugin):
    def setup(self, d: Directive) -> None:
        expect_no_block(d)
        if not d.args:
            raise d.error("plugin/autopath: no resolv-conf specified")
        *zones, source = d.args
        self.zones = frozenset(to_wire(z) for z in normalize_zones(zones, self.server.zones))
        self.directive = d
        self.source_plugin: str | None = None
        self.source: Plugin | None = None  # the plugin named by @NAME, found at start
        self.search: tuple[bytes, ...] | None = None
        self._paths: dict[tuple[str, bytes], tuple[bytes, ...]] = {}
        # (asked name, type, step) -> (the step's answer, the reply made of it): made again
        # only when the step answers with another object (a change, a new cache entry).
        self._rewritten: dict[tuple[bytes, int, int], tuple[Answer, Answer]] = {}
        if str(source).startswith("@"):
            self.source_plugin = str(source)[1:]
            cls = load_plugins().get(self.source_plugin)
            if cls is not None and not hasattr(cls, "autopath_namespace"):
                raise d.error(f"plugin/autopath: {self.source_plugin} does not implement the AutoPather interface",
                              source)
            self.host_search = self._host_search()
            return
        try:
            search = read_search(str(source))
        except OSError as exc:
            raise d.error(f'plugin/autopath: failed to parse "{source}": {exc.strerror or exc}', source) from None
        if not search:
            log.warning("%s:%d: %s has no search domains: autopath changes nothing", d.file, d.line, source)
        self.search = tuple(to_wire(s) for s in search) + (ROOT,) if search else None

    def _host_search(self) -> tuple[bytes, ...]:
        """This host's search domains, appended to each pod's (CoreDNS reads them the same way)."""
        try:
            return tuple(to_wire(s) for s in read_search(HOST_RESOLV_CONF))
        except OSError:
            return ()

    async def start(self) -> None:
        if self.source_plugin is None:
            return
        where = f"{self.directive.file}:{self.directive.line}"
        self.source = self.server.plugin(self.source_plugin)
        if self.source is None:
            log.warning("%s: no %s plugin in this server block: autopath changes nothing", where, self.source_plugin)
        elif getattr(getattr(self.source, "options", None), "pods", "verified") != "verified":
            log.warning("%s: autopath @%s needs 'pods verified' in the %s plugin: autopath changes nothing", where,
                        self.source_plugin, self.source_plugin)

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        key = req.key
        if not in_wire_zones(key, self.zones):
            return self.next.serve(req)
        search = self.search if self.source is None else self._search_of(req)
        if search is None:
            return self.next.serve(req)
        base = base_of(key, search[0])
        if base is None:
            return self.next.serve(req)
        return self._walk(req, base, search)

    def _search_of(self, req: Request) -> tuple[bytes, ...] | None:
        """The search path (wire names, the root last) of the pod that sent ``req``, or None."""
        found = self.source.autopath_namespace(req)
        if found is None:
            return None
        path = self._paths.get(found)
        if path is None:
            ns, zone = found
            if not 0 < len(ns) < 64 or not ns.isascii():
                return None  # no namespace is named so, but a label it must be
            first = bytes((len(ns),)) + ns.encode("ascii") + SVC + zone
            # The zone may be the root: the same name is not tried twice.
            path = tuple(dict.fromkeys((first, SVC + zone, zone, *self.host_search, ROOT)))
            if len(self._paths) >= SEARCH_PATHS_MAX:
                self._paths.clear()
            self._paths[found] = path
        return path

    def _walk(self, req: Request, base: bytes, search: tuple[bytes, ...]):
        """Ask the rest of the chain for each step in turn; synchronous while the answers are."""
        first = None
        i, step = 0, req  # the question as asked: the first element appended
        while step is not None:
            try:
                answer = self.next.serve(step)
            except DNSError:
                if first is None:
                    raise
                return first
            if not isinstance(answer, Answer):
                return self._walk_later(req, base, search, i, step, answer, first)
            first = first or answer
            done = self._judge(req, i, step, answer, first)
            if done is not None:
                return done
            i, step = self._step(req, base, search, i + 1)
        return first

    async def _walk_later(self, req: Request, base: bytes, search: tuple[bytes, ...], i: int, step: Request,
                          pending, first: Answer | None) -> Answer:
        """The rest of ``_walk``, once a step's answer is on its way (forwarded, say)."""
        while step is not None:
            try:
                answer = await resolve(pending)
            except DNSError:
                if first is None:
                    raise
                return first
            first = first or answer
            done = self._judge(req, i, step, answer, first)
            if done is not None:
                return done
            i, step = self._step(req, base, search, i + 1)
            if step is not None:
                try:
                    pending = self.next.serve(step)
                except DNSError:
                    return first
        return first

    def _step(self, req: Request, base: bytes, search: tuple[bytes, ...], i: int) -> tuple[int, Request | None]:
        """The query for the ``i``-th element of the search path (or the next that makes a valid name)."""
        case_kept = req.qwire[:len(base)]
        tail = req.data[12 + len(req.qwire):]  # type, class and the rest of the query (its OPT)
        while i < len(search):
            name = case_kept + search[i]
            if len(name) <= 255:
                step = Request(req.data[:12] + name + tail, req.proto, req.remote, req.local)
                step.server, step.zone = req.server, req.zone
                return i, step
            i += 1
        return i, None

    def _judge(self, req: Request, i: int, step: Request, answer: Answer, first: Answer) -> Answer | None:
        """The reply once step ``i`` answered, or None to go on: NXDOMAIN goes on; NOERROR is the
        reply (for the question asked); anything else is a failure, and the client gets the
        answer to its own question, as CoreDNS documents."""
        if answer.rcode == NXDOMAIN:
            return None
        if answer.rcode != NOERROR:
            return first
        self._count(req)
        if i == 0:
            return answer
        key = (req.key, req.qtype, i)
        made = self._rewritten.get(key)
        if made is not None and made[0] is answer:
            return made[1]
        rewritten = self._as_asked(req, step, answer)
        if len(self._rewritten) >= REWRITTEN_MAX:
            self._rewritten.clear()
        self._rewritten[key] = (answer, rewritten)
        return rewritten

    def _count(self, req: Request) -> None:
        label = req.local or ""  # the listener, as every query metric labels it
        SUCCESS[label] = SUCCESS.get(label, 0) + 1

    def _as_asked(self, req: Request, step: Request, answer: Answer) -> Answer:
        """``answer`` (to ``step``'s name) for the question asked, led by a CNAME from the asked
        name to the first owner name that differs from it (CoreDNS's shape)."""
        msg = DNSRecord.parse(answer.render(step, TCP_MESSAGE_MAX))
        asked = req.label
        records = list(msg.rr)
        for rr in records:
            if rr.rname != asked:
                records.insert(0, RR(asked, QTYPE.CNAME, ttl=rr.ttl, rdata=CNAME(rr.rname)))
                break
        extra = [rr for rr in msg.ar if rr.rtype != TYPE_OPT]
        out = Answer.build(asked, req.qtype, answer.rcode, answer=records, authority=msg.auth, additional=extra,
                           aa=bool(msg.header.aa), ra=bool(msg.header.ra), plugin=self.name)
        out.options = answer.options  # an upstream's extended errors, say
        return out


class _Collector:
    """coredns_autopath_success_total from the plain counts."""

    def describe(self):
        return []

    def collect(self):
        family = CounterMetricFamily("coredns_autopath_success_total", "Counter of requests that did autopath.",
                                     labels=("server",))
        for label, n in list(SUCCESS.items()):
            family.add_metric((label,), n)
        yield family


metrics.register_collector("autopath", _Collector())
