"""The drift check: the store compared with a fresh list from the API, and repaired.

    check = DriftCheck(index, source, kinds, interval)
    task = asyncio.ensure_future(check.run())   # until cancelled

A watch that silently misses an event (a proxy, an API server bug, a lost packet that TCP
did not see) leaves a name wrong until the next relist, which may be days away.  Every
``interval`` (jittered: each wait is drawn from [0.8, 1.0] x interval, so servers started
together do not list together, and a drift is found within one interval), each kind is
listed at ``resourceVersion=0`` (the API server's watch cache: no etcd read) and compared
object by object with the store.  Each object that differs (missing, extra or changed) is
counted in ``pydns_kubernetes_drift_objects_total{kind}``, logged, and repaired in the store.

The list and the watch race: an event applied while the list was in flight may be newer than
the list, and one the list already holds may still be on its way.  Objects changed by the
watch from the list's start until a moment (``SETTLE``) after its end are therefore left out
of that check (the next one sees them), and a list older than what the watch had already delivered when
the check began is not compared at all: a repair only ever moves the store forwards.
"""

from __future__ import annotations

import asyncio
import logging
import random

from pydns import metrics

from .index import UNCHANGED

log = logging.getLogger("plugin/kubernetes")

JITTER = 0.2
SETTLE = 0.2  # seconds for the watch's events in flight to be applied before comparing
SHOWN = 5  # objects named in a drift's log line

_drifted = metrics.counter("pydns_kubernetes_drift_objects_total",
                           "Objects found different from the API by the drift check (and repaired), by kind.",
                           ("kind",))
_checks = metrics.counter("pydns_kubernetes_drift_checks_total",
                          "Drift checks by result: ok, drift, skipped (list older than the watch), failed.",
                          ("result",))


class DriftCheck:
    def __init__(self, index, source, kinds, interval: float):
        self.index = index
        self.source = source
        self.kinds = tuple(kinds)
        self.interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * (1 - JITTER * random.random()))
            if not self.source.synced():
                continue  # the first sync is still under way: there is nothing to compare yet
            for kind in self.kinds:
                await self.check(kind)

    async def check(self, kind: str) -> int:
        """Compare ``kind`` with the API and repair it; the number of objects that differed."""
        before = self.source.version(kind)
        self.index.watched = watched = set()
        try:
            objects, version = await asyncio.to_thread(self.source.list_once, kind)
            # Events the watch brought before the list's end may still be on their way to the loop.
            await asyncio.sleep(SETTLE)
        except Exception as exc:
            log.warning("drift check of %s: the list failed: %s", kind, exc)
            _checks.labels("failed").inc()
            return 0
        finally:
            self.index.watched = None
        if _older(version, before):
            log.info("drift check of %s skipped: the list (resourceVersion %s) is older than the watch (%s)", kind,
                     version, before)
            _checks.labels("skipped").inc()
            return 0
        drifted = differing(self.index.store, kind, self.index.reduce(kind, objects), watched)
        if not drifted:
            _checks.labels("ok").inc()
            return 0
        _checks.labels("drift").inc()
        _drifted.labels(kind).inc(len(drifted))
        shown = ", ".join(_name(key) + (" (deleted)" if value is None else "") for key, value, _ in drifted[:SHOWN])
        more = f" and {len(drifted) - SHOWN} more" if len(drifted) > SHOWN else ""
        log.warning("drift: %d %s object(s) differed from the API at resourceVersion %s: %s%s; repaired", len(drifted),
                    kind, version, shown, more)
        self.index.amend(kind, drifted)
        return len(drifted)


def differing(store, kind: str, entries: list, skip: set) -> list:
    """The entries (reduced, as ``Index.reduce`` makes them) that the store does not hold as
    they are, and a deletion (value None) for each stored key the list lacks; keys in
    ``skip`` (as (kind, key)) are left out."""
    held = {"Service": store.services, "EndpointSlice": store.slices, "Pod": store.pods}.get(kind)
    out, seen = [], set()
    for key, value, stamp in entries:
        seen.add(key)
        if value is UNCHANGED or (kind, key) in skip:
            continue
        if kind == "Namespace":
            same = bool(value) == (key in store.namespaces)
        else:
            same = held.get(key) == value
        if not same:
            out.append((key, value, stamp))
    out.extend((key, None, None) for key in store.keys_except(kind, seen) if (kind, key) not in skip)
    return out


def _older(version: str, than: str | None) -> bool:
    """Whether resourceVersion ``version`` is older than ``than`` (both as the API hands them out:
    opaque, but decimal numbers in every API server; anything else is not compared)."""
    try:
        return than is not None and int(version) < int(than)
    except ValueError:
        return False


def _name(key) -> str:
    return key if isinstance(key, str) else "/".join(key)
