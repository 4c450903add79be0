"""The cache's metrics, read from the live caches' plain counters at scrape time.

Names, help texts and labels are CoreDNS's (plugin/cache/metrics.go).  A stopped cache
(replaced by a reload) folds its counts into totals kept here, so counters never go down.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pydns import metrics

SUCCESS, DENIAL = 0, 1
KINDS = ("success", "denial")

TYPED = ["server", "type", "zones", "view"]
PLAIN = ["server", "zones", "view"]

live: set = set()  # the caches serving now
_retired: dict[tuple, "_Totals"] = {}


class _Totals:
    __slots__ = ("hits", "evictions", "misses", "prefetch", "drops", "served_stale")

    def __init__(self) -> None:
        self.hits, self.evictions = [0, 0], [0, 0]
        self.misses = self.prefetch = self.drops = self.served_stale = 0

    def add(self, cache) -> None:
        for kind in (SUCCESS, DENIAL):
            self.hits[kind] += cache.hits[kind]
            self.evictions[kind] += cache.evictions[kind]
        self.misses += cache.misses
        self.prefetch += cache.prefetches
        self.drops += cache.drops
        self.served_stale += cache.served_stale

    def copy(self) -> "_Totals":
        out = _Totals()
        out.hits, out.evictions = list(self.hits), list(self.evictions)
        for name in ("misses", "prefetch", "drops", "served_stale"):
            setattr(out, name, getattr(self, name))
        return out


def _label(cache) -> tuple[str, str]:
    return (cache.server.label, cache.zones_label)


def retire(cache) -> None:
    """Fold a stopped cache's counts into the totals of its labels."""
    _retired.setdefault(_label(cache), _Totals()).add(cache)


def _families() -> dict:
    return {
        "entries": GaugeMetricFamily("coredns_cache_entries", "The number of elements in the cache.", labels=TYPED),
        "hits": CounterMetricFamily("coredns_cache_hits", "The count of cache hits.", labels=TYPED),
        "misses": CounterMetricFamily(
            "coredns_cache_misses",
            "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.", labels=PLAIN),
        "requests": CounterMetricFamily("coredns_cache_requests", "The count of cache requests.", labels=PLAIN),
        "prefetch": CounterMetricFamily("coredns_cache_prefetch",
                                        "The number of times the cache has prefetched a cached item.", labels=PLAIN),
        "drops": CounterMetricFamily("coredns_cache_drops",
                                     "The number responses that are not cached, because the reply is malformed.",
                                     labels=PLAIN),
        "served_stale": CounterMetricFamily("coredns_cache_served_stale",
                                            "The number of requests served from stale cache entries.", labels=PLAIN),
        "evictions": CounterMetricFamily("coredns_cache_evictions", "The count of cache evictions.", labels=TYPED),
    }


class _Collector:
    def describe(self):
        return list(_families().values())

    def collect(self):
        families = _families()
        totals = {label: t.copy() for label, t in _retired.items()}
        sizes: dict[tuple, list[int]] = {}
        for cache in list(live):
            label = _label(cache)
            totals.setdefault(label, _Totals()).add(cache)
            size = sizes.setdefault(label, [0, 0])
            for kind in (SUCCESS, DENIAL):
                size[kind] += len(cache.caches[kind])
        for (server, zones), t in sorted(totals.items()):
            for kind in (SUCCESS, DENIAL):
                typed = [server, KINDS[kind], zones, ""]
                families["hits"].add_metric(typed, t.hits[kind])
                families["evictions"].add_metric(typed, t.evictions[kind])
                if (server, zones) in sizes:
                    families["entries"].add_metric(typed, sizes[(server, zones)][kind])
            plain = [server, zones, ""]
            families["requests"].add_metric(plain, sum(t.hits) + t.misses)
            for name in ("misses", "prefetch", "drops", "served_stale"):
                families[name].add_metric(plain, getattr(t, name))
        return iter(families.values())


def register() -> None:
    metrics.register_collector("cache", _Collector())
