"""The process's Prometheus registry, shared by every plugin, served by the prometheus plugin.

Metrics are created once per process and reused across reloads (and across instances in a
test process), so plugins ask for them through these helpers instead of constructing them.
Hot-path counts are plain integers that a custom collector reads at scrape time; these
helpers are for the slower paths (forwarding, watch events, health checks).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry(auto_describe=True)
_made: dict[str, object] = {}
_lock = threading.Lock()

# CoreDNS's plugin.TimeBuckets: exponential from 250µs, doubling, 16 buckets.
TIME_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
# CoreDNS's plugin.SlimTimeBuckets: exponential from 250µs, factor 10, 5 buckets.
SLIM_TIME_BUCKETS = tuple(0.00025 * 10**i for i in range(5))


def _get(kind, name: str, doc: str, labels: tuple[str, ...], **kw):
    with _lock:
        metric = _made.get(name)
        if metric is None:
            metric = _made[name] = kind(name, doc, labels, registry=registry, **kw)
        return metric


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return _get(Counter, name, doc, labels)


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return _get(Gauge, name, doc, labels)


def histogram(name: str, doc: str, labels: tuple[str, ...] = (), buckets=TIME_BUCKETS) -> Histogram:
    return _get(Histogram, name, doc, labels, buckets=buckets)


def bucket_samples(bounds, counts: list[int]) -> list[tuple[str, float]]:
    """A histogram's cumulative buckets, from plain per-bucket counts (one per bound, then
    the count above the last), as a collector hands them to HistogramMetricFamily."""
    out, total = [], 0
    for bound, n in zip(bounds, counts):
        total += n
        # Go writes bucket bounds in their shortest form ("100", "0.00025"), so do the same.
        out.append((str(int(bound)) if float(bound).is_integer() else repr(float(bound)), total))
    out.append(("+Inf", total + counts[-1]))
    return out


def register_collector(key: str, collector) -> None:
    """Register a custom collector once per process (later calls with the same key are ignored)."""
    with _lock:
        if key not in _made:
            _made[key] = collector
            registry.register(collector)


class PlainCounters:
    """Counters kept as plain integers on the hot path: ``counters.bump((name, *labels))``.

    ``families`` maps each metric name to its help text and label names; a collector reads
    the integers at scrape time.  Made once per process (by ``plain_counters``), so counts
    survive reloads and never go down.
    """

    def __init__(self, families: dict[str, tuple[str, list[str]]]):
        self.families = families
        self.counts: dict[tuple, int] = {}

    def bump(self, key: tuple) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def _made(self) -> dict:
        from prometheus_client.core import CounterMetricFamily

        return {name: CounterMetricFamily(name, doc, labels=labels) for name, (doc, labels) in self.families.items()}

    def describe(self):
        return list(self._made().values())

    def collect(self):
        made = self._made()
        for (name, *labels), count in sorted(self.counts.items()):
            made[name].add_metric(labels, count)
        return iter(made.values())


def plain_counters(key: str, families: dict[str, tuple[str, list[str]]]) -> PlainCounters:
    """The process's PlainCounters for ``key``, registered as a collector on first use."""
    with _lock:
        counters = _made.get(key)
        if counters is None:
            counters = _made[key] = PlainCounters(families)
            registry.register(counters)
        return counters
