"""The forward plugin's metrics, with CoreDNS's names and labels.

Current CoreDNS counts upstream traffic under ``coredns_proxy_*`` (label
``proxy_name="forward"``); the older ``coredns_forward_*`` series that dashboards still
query are kept alongside.  Forwarded queries are a slow path, so these are plain
prometheus_client objects; the labelled children are looked up once and kept.
"""

from __future__ import annotations

from pydns import metrics

PROXY_NAME = "forward"

healthcheck_broken = metrics.counter(
    "coredns_forward_healthcheck_broken_total",
    "Counter of the number of complete failures of the healthchecks.")
max_concurrent_rejects = metrics.counter(
    "coredns_forward_max_concurrent_rejects_total",
    "Counter of the number of queries rejected because the concurrent queries were at maximum.")

_proxy_duration = metrics.histogram(
    "coredns_proxy_request_duration_seconds", "Histogram of the time each request took.",
    ("proxy_name", "to", "rcode"))
_proxy_hc_failures = metrics.counter(
    "coredns_proxy_healthcheck_failures_total", "Counter of the number of failed healthchecks.",
    ("proxy_name", "to"))
_conn_hits = metrics.counter(
    "coredns_proxy_conn_cache_hits_total", "Counter of connection cache hits per upstream and protocol.",
    ("proxy_name", "to", "proto"))
_conn_misses = metrics.counter(
    "coredns_proxy_conn_cache_misses_total", "Counter of connection cache misses per upstream and protocol.",
    ("proxy_name", "to", "proto"))

_requests = metrics.counter(
    "coredns_forward_requests_total", "Counter of requests made per upstream.", ("to",))
_responses = metrics.counter(
    "coredns_forward_responses_total", "Counter of responses received per upstream.", ("to", "rcode"))
_duration = metrics.histogram(
    "coredns_forward_request_duration_seconds", "Histogram of the time each request took.", ("to", "rcode"))
_hc_failures = metrics.counter(
    "coredns_forward_healthcheck_failures_total", "Counter of the number of failed healthchecks.", ("to",))


class UpstreamMetrics:
    """The series of one upstream (``to``), children resolved on first use."""

    def __init__(self, to: str):
        self.to = to
        self.requests = _requests.labels(to)
        self.hc_failures = (_proxy_hc_failures.labels(PROXY_NAME, to), _hc_failures.labels(to))
        self._by_rcode: dict[str, tuple] = {}
        self._conn: dict[tuple[bool, str], object] = {}

    def response(self, rcode: str, seconds: float) -> None:
        series = self._by_rcode.get(rcode)
        if series is None:
            series = self._by_rcode[rcode] = (_proxy_duration.labels(PROXY_NAME, self.to, rcode),
                                              _responses.labels(self.to, rcode), _duration.labels(self.to, rcode))
        series[0].observe(seconds)
        series[1].inc()
        series[2].observe(seconds)

    def healthcheck_failed(self) -> None:
        for child in self.hc_failures:
            child.inc()

    def conn_cache(self, hit: bool, proto: str) -> None:
        child = self._conn.get((hit, proto))
        if child is None:
            family = _conn_hits if hit else _conn_misses
            child = self._conn[(hit, proto)] = family.labels(PROXY_NAME, self.to, proto)
        child.inc()
