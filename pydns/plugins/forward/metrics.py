"""The forward plugin's metrics, with CoreDNS's names and labels.

Current CoreDNS counts upstream traffic under ``coredns_proxy_*`` (label
``proxy_name="forward"``); the older ``coredns_forward_*`` series that dashboards still
query are kept alongside.  What every forwarded query counts (the request, its response
and duration, the connection it used) is kept as plain numbers per upstream and turned
into metric families at scrape time; the rare events (health checks, rejections) are
prometheus_client objects.  An upstream's counts live as long as the process, shared by
every configuration that names it, so counters never go down across reloads.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from pydns import metrics
from pydns.metrics import TIME_BUCKETS, bucket_samples

PROXY_NAME = "forward"

healthcheck_broken = metrics.counter(
    "coredns_forward_healthcheck_broken_total",
    "Counter of the number of complete failures of the healthchecks.")
max_concurrent_rejects = metrics.counter(
    "coredns_forward_max_concurrent_rejects_total",
    "Counter of the number of queries rejected because the concurrent queries were at maximum.")
_proxy_hc_failures = metrics.counter(
    "coredns_proxy_healthcheck_failures_total", "Counter of the number of failed healthchecks.",
    ("proxy_name", "to"))
_hc_failures = metrics.counter(
    "coredns_forward_healthcheck_failures_total", "Counter of the number of failed healthchecks.", ("to",))

_upstreams: dict[str, "UpstreamMetrics"] = {}  # to -> its counts, for the process's lifetime


def for_upstream(to: str) -> "UpstreamMetrics":
    """The counts of the upstream ``to`` (``host:port``), made on first use."""
    found = _upstreams.get(to)
    if found is None:
        found = _upstreams[to] = UpstreamMetrics(to)
    return found


class UpstreamMetrics:
    """The counts of one upstream: requests; per rcode [responses, seconds in all, one count
    per duration bucket and one above them]; connection cache hits and misses by protocol."""

    def __init__(self, to: str):
        self.to = to
        self.requests = 0
        self.by_rcode: dict[str, list] = {}
        self.conn: dict[tuple[bool, str], int] = {}
        self.hc_failures = (_proxy_hc_failures.labels(PROXY_NAME, to), _hc_failures.labels(to))

    def response(self, rcode: str, seconds: float) -> None:
        counts = self.by_rcode.get(rcode)
        if counts is None:
            counts = self.by_rcode[rcode] = [0, 0.0] + [0] * (len(TIME_BUCKETS) + 1)
        counts[0] += 1
        counts[1] += seconds
        counts[2 + bisect_left(TIME_BUCKETS, seconds)] += 1

    def healthcheck_failed(self) -> None:
        for child in self.hc_failures:
            child.inc()

    def conn_cache(self, hit: bool, proto: str) -> None:
        key = (hit, proto)
        self.conn[key] = self.conn.get(key, 0) + 1


class _Collector:
    """The per-query counts of every upstream, as CoreDNS's families, at scrape time."""

    def describe(self):
        return list(self._families().values())

    @staticmethod
    def _families() -> dict:
        return {
            "requests": CounterMetricFamily("coredns_forward_requests", "Counter of requests made per upstream.",
                                            labels=["to"]),
            "responses": CounterMetricFamily("coredns_forward_responses", "Counter of responses received per "
                                             "upstream.", labels=["to", "rcode"]),
            "proxy_duration": HistogramMetricFamily("coredns_proxy_request_duration_seconds", "Histogram of the "
                                                    "time each request took.", labels=["proxy_name", "to", "rcode"]),
            "duration": HistogramMetricFamily("coredns_forward_request_duration_seconds", "Histogram of the time "
                                              "each request took.", labels=["to", "rcode"]),
            "hits": CounterMetricFamily("coredns_proxy_conn_cache_hits", "Counter of connection cache hits per "
                                        "upstream and protocol.", labels=["proxy_name", "to", "proto"]),
            "misses": CounterMetricFamily("coredns_proxy_conn_cache_misses", "Counter of connection cache misses "
                                          "per upstream and protocol.", labels=["proxy_name", "to", "proto"]),
        }

    def collect(self):
        out = self._families()
        for to, up in sorted(_upstreams.items()):
            out["requests"].add_metric([to], up.requests)
            for rcode, counts in sorted(up.by_rcode.items()):
                out["responses"].add_metric([to, rcode], counts[0])
                buckets = bucket_samples(TIME_BUCKETS, counts[2:])
                out["proxy_duration"].add_metric([PROXY_NAME, to, rcode], buckets, counts[1])
                out["duration"].add_metric([to, rcode], buckets, counts[1])
            for (hit, proto), n in sorted(up.conn.items()):
                out["hits" if hit else "misses"].add_metric([PROXY_NAME, to, proto], n)
        return list(out.values())


metrics.register_collector("forward-upstreams", _Collector())
