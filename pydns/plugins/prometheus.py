"""prometheus — Prometheus metrics on ``/metrics``, and the per-query DNS metrics.

Syntax::

    prometheus [ADDRESS]

``GET /metrics`` on ADDRESS (default ``localhost:9153``) serves every metric of the process
in the Prometheus text format.  Server blocks that name the same address share one
endpoint.  The queries of each server block with *prometheus* are counted, with CoreDNS's
names and labels:

* ``coredns_dns_requests_total{server, zone, view, proto, family, type}``
* ``coredns_dns_responses_total{server, zone, view, rcode, plugin}``
* ``coredns_dns_request_duration_seconds{server, zone, view}`` (histogram)
* ``coredns_dns_request_size_bytes{server, zone, view, proto}`` (histogram)
* ``coredns_dns_response_size_bytes{server, zone, view, proto}`` (histogram)
* ``coredns_dns_do_requests_total{server, zone, view}``
* ``coredns_plugin_enabled{server, zone, view, name}``, ``coredns_build_info{version,
  revision, goversion}`` (goversion holds the Python version), ``coredns_panics_total``,
  ``coredns_reload_failed_total``, pydns's own ``pydns_udp_receive_drops_total{server}``,
  ``pydns_udp_send_errors_total{cause}``, ``pydns_udp_receive_errors_total{cause}`` and
  ``pydns_udp_pending_overflows_total``, and
  the ``process_*`` and ``python_*`` metrics.

``server`` is the listener (``dns://:53``, ``dns://127.0.0.1:53`` with *bind*), ``zone`` the
server block zone the query fell in, ``view`` is empty, ``family`` 1 for IPv4 and 2 for
IPv6, ``type`` one of A AAAA CNAME DNSKEY DS MX NSEC NSEC3 NS PTR RRSIG SOA SRV TXT HTTPS
IXFR AXFR ANY, else ``other``, and ``plugin`` the plugin that wrote the answer (empty when
the server did).  A query that gets no reply (*acl*'s ``drop``) is counted as CoreDNS counts
it: a NOERROR response of 0 bytes with an empty ``plugin``.  Counters live as long as the
process, across reloads.

CoreDNS 1.14's ``runtime_metrics`` and ``tls`` options are Go-specific / not supported
here, and are refused at start-up.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from time import perf_counter

from prometheus_client import (CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

import pydns
from pydns import metrics, stats
from pydns.corefile import Directive
from pydns.httpd import http_address, open_http
from pydns.plugin import DNSError, NoReply, Plugin, register
from pydns.udp import kept_replies, listener_drops
from pydns.wire import NOERROR, Answer, Request, status

DEFAULT_ADDRESS = "localhost:9153"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
TIME_BUCKETS = metrics.TIME_BUCKETS

# The query types CoreDNS names in the `type` label; every other type is "other".
TYPE_LABELS = {1: "A", 28: "AAAA", 5: "CNAME", 48: "DNSKEY", 43: "DS", 15: "MX", 50: "NSEC3", 47: "NSEC",
               2: "NS", 12: "PTR", 46: "RRSIG", 6: "SOA", 33: "SRV", 16: "TXT", 65: "HTTPS", 251: "IXFR",
               252: "AXFR", 255: "ANY"}

RCODE_LABELS = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
                6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADSIG",
                17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC",
                23: "BADCOOKIE"}


# One flat list of numbers per label combination, so that a query costs one dict lookup:
# [queries, duration sum, request bytes sum, response bytes sum, then the non-cumulative
# bucket counts of the duration, request size and response size histograms].
_DURATION = 4
_REQUEST = _DURATION + len(TIME_BUCKETS) + 1
_RESPONSE = _REQUEST + len(SIZE_BUCKETS) + 1
_RECORD_LEN = _RESPONSE + len(SIZE_BUCKETS) + 1

# The record slot of each size a DNS message can have (at most 65535 bytes: TCP's length
# prefix, and the most recvfrom reads), worked out once: an index per query, not a bisect.
_MAX_MESSAGE = 65535
_REQUEST_SLOTS = bytes(_REQUEST + bisect_left(SIZE_BUCKETS, n) for n in range(_MAX_MESSAGE + 1))
_RESPONSE_SLOTS = bytes(_RESPONSE + bisect_left(SIZE_BUCKETS, n) for n in range(_MAX_MESSAGE + 1))
# Most queries are answered within the first duration bucket: no bisect for them.
_FIRST_TIME = TIME_BUCKETS[0]

# Process-wide, so that counters survive reloads (as CoreDNS's do).
# (server, zone, proto, ipv6, qtype, rcode, plugin, do) -> record
RECORDS: dict[tuple, list] = {}
# the prometheus plugins of the running configuration(s), for coredns_plugin_enabled
LIVE: set["Prometheus"] = set()


@register("prometheus")
class Prometheus(Plugin):
    memoizable = True  # what it counts per query is the same for a kept reply (see _count_kept)
    def setup(self, d: Directive) -> None:
        self.addr, self.where = http_address(d, "prometheus", DEFAULT_ADDRESS)
        for opt in d.options:
            if opt.name == "runtime_metrics":
                raise opt.error("plugin/prometheus: runtime_metrics (Go runtime metrics) is not supported; "
                                "the process_* and python_* metrics are always exported")
            if opt.name == "tls":
                raise opt.error("plugin/prometheus: tls is not supported")
            raise opt.error(f"plugin/prometheus: unknown option: {opt.name}")
        self.listener = None

    async def start(self) -> None:
        self.listener = self.server.http(self.addr, 9153)
        self.listener.add("/metrics", serve_metrics, owner=self)
        await open_http(self.listener, self.addr, self.where, "prometheus")
        LIVE.add(self)
        if count_unrouted not in stats.unrouted_hooks:
            stats.unrouted_hooks.append(count_unrouted)

    async def stop(self) -> None:
        LIVE.discard(self)
        if not LIVE and count_unrouted in stats.unrouted_hooks:
            stats.unrouted_hooks.remove(count_unrouted)
        if self.listener is not None:
            self.listener.remove_owner(self)

    # ------------------------------------------------------------ the hot path
    def serve(self, req: Request):
        start = perf_counter()
        try:
            result = self.next.serve(req)
        except DNSError as err:
            result = status(err.rcode)
        if result.__class__ is Answer:
            count(req, result, start)
            return result
        return self._later(req, result, start)

    @staticmethod
    async def _later(req: Request, result, start: float) -> Answer:
        try:
            answer = await result
        except DNSError as err:
            answer = status(err.rcode)
        except NoReply:
            count(req, _NOT_WRITTEN, start, 0)
            raise
        count(req, answer, start)
        return answer


# What CoreDNS counts for a query no plugin wrote a reply to (acl's drop): NOERROR, no plugin, 0 bytes.
_NOT_WRITTEN = Answer(NOERROR, aa=False)


def count(req: Request, answer: Answer, start: float, size: int | None = None) -> None:
    """Record one answered query: one dict lookup, then plain increments."""
    elapsed = perf_counter() - start
    if size is None:
        # The reply as it will be sent (truncated too): the listener sends these same bytes,
        # which the request keeps, so rendering here costs nothing extra.
        size = len(req.render(answer))
    remote = req.remote
    ipv6 = remote is not None and ":" in remote[0] and not remote[0].startswith("::ffff:")
    key = (req.local, req.zone, req.proto, ipv6, req.qtype, answer.rcode, answer.plugin, req.do)
    rec = RECORDS.get(key)
    if rec is None:
        rec = RECORDS[key] = [0] * _RECORD_LEN
    rec[0] += 1
    rec[1] += elapsed
    rec[_DURATION if elapsed <= _FIRST_TIME else _DURATION + bisect_left(TIME_BUCKETS, elapsed)] += 1
    n = len(req.data)
    rec[2] += n
    request_slot = _REQUEST_SLOTS[n] if n <= _MAX_MESSAGE else _REQUEST + bisect_left(SIZE_BUCKETS, n)
    rec[request_slot] += 1
    rec[3] += size
    response_slot = _RESPONSE_SLOTS[size] if size <= _MAX_MESSAGE else _RESPONSE + bisect_left(SIZE_BUCKETS, size)
    rec[response_slot] += 1
    if req.memo_until:  # the reply may be kept: each reply sent from it counts the same
        hook = _count_kept(rec, n, request_slot, size, response_slot)
        req.memo_hooks = (hook,) if req.memo_hooks is None else (*req.memo_hooks, hook)


def _count_kept(rec: list, n: int, request_slot: int, size: int, response_slot: int):
    """What ``count`` adds for a kept reply (pydns.replies): the same sizes, and a duration
    in the first bucket (the reply is sent microseconds after its query is read)."""
    def count_one() -> None:
        rec[0] += 1
        rec[_DURATION] += 1
        rec[2] += n
        rec[request_slot] += 1
        rec[3] += size
        rec[response_slot] += 1
    return count_one


def count_unrouted(req: Request, answer: Answer) -> None:
    """A query for a name in no zone: counted under zone "dropped", as CoreDNS does."""
    req.zone = "dropped"
    count(req, answer, perf_counter())


def serve_metrics(query: str) -> tuple[int, str, bytes]:
    return 200, CONTENT_TYPE, generate_latest(metrics.registry)


# ------------------------------------------------------------ scrape time


def _listen_label(host: str, port: int) -> str:
    return f"dns://[{host}]:{port}" if ":" in host else f"dns://{host}:{port}"


def _sum_into(table: dict, key: tuple, rec: list, lo: int, hi: int, total: int) -> None:
    """Add rec[lo:hi] (bucket counts) and rec[total] (a sum) into table[key]."""
    have = table.get(key)
    if have is None:
        table[key] = [rec[total], *rec[lo:hi]]
        return
    have[0] += rec[total]
    for i in range(lo, hi):
        have[1 + i - lo] += rec[i]


def _udp_families():
    """pydns's own UDP socket counters: kernel drops (read from /proc now), send/receive errors."""
    family = CounterMetricFamily("pydns_udp_receive_drops", "Queries the kernel dropped on a UDP listener's socket "
                                 "(receive buffer full), from /proc/net/udp.", labels=("server",))
    for server, n in listener_drops().items():
        family.add_metric((server,), n)
    yield family
    for direction, counts in (("send", stats.udp_send_errors), ("receive", stats.udp_receive_errors)):
        family = CounterMetricFamily(f"pydns_udp_{direction}_errors", f"UDP {direction} errors of the DNS "
                                     "listeners, per cause.", labels=("cause",))
        for cause, n in list(counts.items()):
            family.add_metric((cause,), n)
        yield family
    kept = kept_replies()
    entries = GaugeMetricFamily("pydns_udp_kept_replies", "Replies a UDP listener keeps by the query's bytes, "
                                "to answer the same query again without running the chain.", labels=("server",))
    size = GaugeMetricFamily("pydns_udp_kept_reply_bytes", "Bytes the kept replies of a UDP listener take, "
                             "roughly (bounded: docs/limits.md).", labels=("server",))
    for server, (n, nbytes) in kept.items():
        entries.add_metric((server,), n)
        size.add_metric((server,), nbytes)
    yield entries
    yield size
    yield CounterMetricFamily("pydns_udp_pending_overflows", "UDP queries answered SERVFAIL at once because a "
                              "listener had too many answers waiting (forwarded) already.",
                              value=stats.udp_pending_overflows)


class QueryCollector:
    """Turns the plain counts into metric families when Prometheus scrapes."""

    def describe(self):
        return []

    def collect(self):
        requests: dict[tuple, int] = {}
        responses: dict[tuple, int] = {}
        dnssec: dict[tuple, int] = {}
        durations: dict[tuple, list] = {}
        request_sizes: dict[tuple, list] = {}
        response_sizes: dict[tuple, list] = {}
        for (server, zone, proto, ipv6, qtype, rcode, plugin, do), rec in list(RECORDS.items()):
            n = rec[0]
            k = (server, zone, "", proto, "2" if ipv6 else "1", TYPE_LABELS.get(qtype, "other"))
            requests[k] = requests.get(k, 0) + n
            k = (server, zone, "", RCODE_LABELS.get(rcode) or str(rcode), plugin)
            responses[k] = responses.get(k, 0) + n
            if do:
                k = (server, zone, "")
                dnssec[k] = dnssec.get(k, 0) + n
            _sum_into(durations, (server, zone, ""), rec, _DURATION, _REQUEST, 1)
            _sum_into(request_sizes, (server, zone, "", proto), rec, _REQUEST, _RESPONSE, 2)
            _sum_into(response_sizes, (server, zone, "", proto), rec, _RESPONSE, _RECORD_LEN, 3)

        family = CounterMetricFamily("coredns_dns_requests_total", "Counter of DNS requests made per zone, "
                                     "protocol and family.", labels=("server", "zone", "view", "proto", "family", "type"))
        for k, n in requests.items():
            family.add_metric(k, n)
        yield family
        family = CounterMetricFamily("coredns_dns_responses_total", "Counter of response status codes.",
                                     labels=("server", "zone", "view", "rcode", "plugin"))
        for k, n in responses.items():
            family.add_metric(k, n)
        yield family
        family = CounterMetricFamily("coredns_dns_do_requests_total", "Counter of DNS requests with the DO bit "
                                     "set per zone.", labels=("server", "zone", "view"))
        for k, n in dnssec.items():
            family.add_metric(k, n)
        yield family
        for name, doc, labels, bounds, table in (
            ("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took per "
             "zone.", ("server", "zone", "view"), TIME_BUCKETS, durations),
            ("coredns_dns_request_size_bytes", "Size of the request in bytes.", ("server", "zone", "view", "proto"),
             SIZE_BUCKETS, request_sizes),
            ("coredns_dns_response_size_bytes", "Size of the returned response in bytes.",
             ("server", "zone", "view", "proto"), SIZE_BUCKETS, response_sizes),
        ):
            family = HistogramMetricFamily(name, doc, labels=labels)
            for k, (total, *counts) in table.items():
                family.add_metric(k, metrics.bucket_samples(bounds, counts), total)
            yield family

        yield CounterMetricFamily("coredns_panics_total", "Counter of panics (crashes while serving a query).",
                                  value=stats.panics)
        yield CounterMetricFamily("coredns_reload_failed_total", "Counter of failed reload attempts.",
                                  value=stats.reload_failed)
        yield GaugeMetricFamily("pydns_tcp_connections", "Open DNS over TCP connections.", value=stats.tcp_open)
        for name, doc, label, table in (
            ("pydns_http_rejected_total", "HTTP requests and connections of the health, ready and metrics "
             "endpoints refused or cut by a limit, by cause.", "cause", stats.http_rejected),
            ("pydns_tcp_closed_total", "DNS over TCP connections closed or refused at a bound, by reason.",
             "reason", stats.tcp_closed),
            ("pydns_tcp_send_errors_total", "DNS over TCP replies not sent and connections failed, by cause.",
             "cause", stats.tcp_send_errors),
            ("pydns_rewrite_cname_failures_total", "Answers rewrite's cname rules left as they came because "
             "the new target could not be looked up, by cause.", "cause", stats.rewrite_cname_failures),
        ):
            family = CounterMetricFamily(name, doc, labels=(label,))
            for value, n in list(table.items()):
                family.add_metric((value,), n)
            yield family
        yield from _udp_families()
        info = GaugeMetricFamily("coredns_build_info", "Constant 1, labeled by the version, revision and "
                                 "runtime version the server was built from.", labels=("version", "revision", "goversion"))
        info.add_metric((pydns.__version__, getattr(pydns, "__revision__", ""), f"python{platform.python_version()}"), 1)
        yield info
        yield self._plugin_enabled()

    @staticmethod
    def _plugin_enabled() -> GaugeMetricFamily:
        family = GaugeMetricFamily("coredns_plugin_enabled", "Whether a plugin is enabled per server and zone.",
                                   labels=("server", "zone", "view", "name"))
        seen = set()
        for plugin in list(LIVE):
            config = plugin.server
            # Only plugins that take part in answering queries, as CoreDNS reports its handlers.
            names = [p.name for p in config.plugins if type(p).serve is not Plugin.serve]
            for key in config.keys:
                for host in config.binds or [""]:
                    for name in names:
                        labels = (_listen_label(host, key.port), key.zone, "", name)
                        if labels not in seen:
                            seen.add(labels)
                            family.add_metric(labels, 1)
        return family


metrics.register_collector("coredns_dns", QueryCollector())
metrics.register_collector("process", ProcessCollector(registry=None))
metrics.register_collector("platform", PlatformCollector(registry=None))
# CoreDNS's endpoint has no `_created` series; dashboards built on it do not expect them.
disable_created_metrics()
# GCCollector insists on registering somewhere when made: a scratch registry, then ours.
metrics.register_collector("gc", GCCollector(registry=CollectorRegistry()))
