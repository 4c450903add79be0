"""cache — keeps answers of the plugins after it and serves them again until their TTL runs out.

Syntax::

    cache [TTL] [ZONES...] {
        success CAPACITY [TTL] [MINTTL]
        denial CAPACITY [TTL] [MINTTL]
        prefetch AMOUNT [[DURATION] [PERCENTAGE%]]
        serve_stale [DURATION] [immediate [RESPONSE_TTL [FAILURE_RECHECK]]
                               | verify [VERIFY_TIMEOUT [RESPONSE_TTL [FAILURE_RECHECK]]]]
        servfail DURATION
        disable success|denial [ZONES...]
        keepttl
    }

TTL caps how long anything is kept (default 3600s for answers, 1800s for denials); ZONES
limit caching to those zones (default: the server block's).  Answers are kept per question
name, type, class and DO/CD bit, for the smallest TTL of their records, at least MINTTL
(default 5s) and at most TTL.  Every record of a reply from the cache carries the remaining
TTL, or the original one with ``keepttl``; an answer on its way through the cache already
carries the capped TTL.  Replies from the cache have AA set, as CoreDNS's do.

* ``success`` / ``denial``: CAPACITY entries (default 9984; 256 shards of at least 4) of
  positive answers, or of NXDOMAIN, NODATA and SERVFAIL answers; a full shard evicts an
  entry at random.  Denials need an SOA, whose TTL bounds them.
* ``prefetch``: an entry asked AMOUNT times with no gap of DURATION (default 1m) is fetched
  again in the background once its TTL drops below PERCENTAGE (default 10%, 10 to 90).
* ``serve_stale``: an expired entry is still served for DURATION (default 1h) with TTL
  RESPONSE_TTL (default 0).  ``immediate`` (the default) answers at once and refreshes in the
  background; ``verify`` asks first and serves the stale entry only when that fails (or takes
  longer than VERIFY_TIMEOUT, default: no limit).  After a failed refresh, FAILURE_RECHECK
  (default 0, at most 5m) must pass before the next try.
* ``servfail``: how long SERVFAIL answers are kept (default 5s, at most 5m, 0: never).
* ``disable success|denial [ZONES...]``: do not keep that kind of answer for ZONES (default: all).

Truncated answers, answers a plugin could not give (errors) and zone transfers are never kept.
``serve_stale_policy`` is not supported.

Metrics (labels ``server``, ``zones``, ``view`` and, where CoreDNS has it, ``type``):
``coredns_cache_entries``, ``coredns_cache_hits_total``, ``coredns_cache_misses_total``,
``coredns_cache_requests_total``, ``coredns_cache_prefetch_total``,
``coredns_cache_drops_total``, ``coredns_cache_served_stale_total``,
``coredns_cache_evictions_total``.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time

from pydns.corefile import Directive
from pydns.plugin import Plugin, register, resolve
from pydns.parser import WireError
from pydns.plugins.cache import metrics as cache_metrics
from pydns.plugins.cache import options
from pydns.plugins.cache.metrics import DENIAL, SUCCESS
from pydns.plugins.cache.response import (DELEGATION, META, NAME_ERROR, NO_DATA, NO_ERROR, OTHER_ERROR,
                                          SERVER_ERROR, UPDATE, Response, minimal_ttl, read_response)
from pydns.wire import AA, AD, CD, NOERROR, NXDOMAIN, TC, Answer, Request, status
from pydns.zones import in_wire_zones, to_wire

SHARDS = 256
# Answers passed on for names where nothing is kept, remembered per question (see _pass).
PASSED_MAX = 10000

_TTL = struct.Struct("!I")
_RESPONSES_MAX = 1024  # answers whose reading is kept (see Cache._read): emptied when full
_now = time.monotonic


class _Shards:
    """A capacity split over 256 shards, each evicting at random when full (as CoreDNS)."""

    def __init__(self, capacity: int):
        self.size = max(capacity // SHARDS, 4)
        self.shards: list[dict] = [{} for _ in range(SHARDS)]

    def add(self, key, entry) -> object:
        """Store ``entry``; returns the key it evicted, or None."""
        shard = self.shards[hash(key) & (SHARDS - 1)]
        victim = None
        if len(shard) >= self.size and key not in shard:
            victim = random.choice(list(shard))
            del shard[victim]
        shard[key] = entry
        return victim

    def remove(self, key) -> None:
        self.shards[hash(key) & (SHARDS - 1)].pop(key, None)

    def __len__(self) -> int:
        return sum(map(len, self.shards))


class _Entry:
    """A kept answer: the body with every TTL at ``orig``, where its TTL fields are, and the
    answer served for the current whole second (made at most once per second)."""

    __slots__ = ("kind", "source", "template", "offsets", "orig", "stored", "expires", "base", "current",
                 "second", "until", "fast", "ad", "stale", "freq_hits", "freq_last", "refreshing", "retry_after")

    def with_ttl(self, ttl: int) -> Answer:
        body = bytearray(self.template)
        pack = _TTL.pack_into
        for at in self.offsets:
            pack(body, at, ttl)
        answer = self.base.with_body(bytes(body))
        answer.ttl = ttl
        return answer


def _counter(counts: list, index: int):
    def count() -> None:
        counts[index] += 1
    return count


@register("cache")
class Cache(Plugin):
    # A fresh entry's reply holds until its TTLs count down a second (pydns.replies); the hit
    # it counts is run per kept reply sent.  Prefetching entries are not fast (see _keep).
    memoizable = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.opts = options.Options()
        self.table: dict = {}  # key -> _Entry: the one lookup a hit costs
        self.caches: tuple[_Shards, _Shards] = (_Shards(0), _Shards(0))
        self._zone_keys: frozenset = frozenset()
        self._every_zone = True
        self._unkept: frozenset = frozenset()  # zones (wire form) where neither kind is kept
        # cache key -> (answer, opcode, AD asked, what the client got): see _pass
        self._passed: dict[tuple, tuple] = {}
        # (answer id, name, type, opcode, DO) -> (answer, what read_response read in it): see _read
        self._responses: dict[tuple, tuple] = {}
        self.zones_label = ""
        # per-query counts (plain ints, read at scrape time)
        self.hits = [0, 0]
        self._hit_hooks = tuple((_counter(self.hits, kind),) for kind in range(2))  # per kept reply sent
        self.evictions = [0, 0]
        self.misses = 0
        self.prefetches = 0
        self.drops = 0
        self.served_stale = 0
        self._tasks: set[asyncio.Task] = set()  # background refreshes in flight

    def setup(self, d: Directive) -> None:
        o = self.opts = options.parse(d, self.server.zones)
        self.caches = (_Shards(o.pcap), _Shards(o.ncap))
        self._zone_keys = frozenset(to_wire(z) for z in o.zones)
        # With the block's own zones (the usual case) no query needs a zone check.
        self._every_zone = all(in_wire_zones(to_wire(z), self._zone_keys) for z in self.server.zones)
        self._unkept = _both(o.pexcept, o.nexcept)
        self.zones_label = ",".join(o.zones)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        cache_metrics.register()
        cache_metrics.live.add(self)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self in cache_metrics.live:
            cache_metrics.live.discard(self)
            cache_metrics.retire(self)

    def explain(self, req: Request, answer: Answer):
        e = self.table.get((req.key, req.qtype, req.qclass, req.do, req.flags & CD))
        if e is None:
            return None
        left = e.orig - int(_now() - e.stored)
        kind = "success" if e.kind == SUCCESS else "denial"
        fields = {"ttl_left": left, "kept_for": e.orig, "cache": kind, "written_by": e.source or None}
        by = f", written by {e.source}" if e.source else ""
        if left > 0:
            return f"answer from cache, {left} s left (kept for {e.orig} s, {kind} cache{by})", fields
        return f"stale answer from cache (serve_stale): expired {-left} s ago{by}", fields

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        key = (req.key, req.qtype, req.qclass, req.do, req.flags & CD)
        e = self.table.get(key)
        if e is not None and _now() < e.until:
            self.hits[e.kind] += 1
            if self.keeps:
                req.memo_until = e.until
                req.memo_hooks = self._hit_hooks[e.kind]
            return e.current
        return self._lookup(req, key, e)

    def _lookup(self, req: Request, key: tuple, e: _Entry | None):
        if e is not None:
            now = _now()
            age = int(now - e.stored)
            ttl = e.orig - age
            if ttl > 0:
                self.hits[e.kind] += 1
                if self.opts.prefetch and self._should_prefetch(e, now, ttl):
                    self._background_refresh(req, key, e, now, stale=False)
                return self._fresh(req, e, age)
            if self.opts.stale_up_to > 0 and -ttl < self.opts.stale_up_to:
                self.hits[e.kind] += 1
                return self._serve_stale(req, key, e, now)
        if not self._every_zone and not in_wire_zones(req.key, self._zone_keys):
            return self.next.serve(req)
        self.misses += 1
        if req.trace is not None:
            req.trace.note(self.name, "passed on", "not in the cache" + (" (its entry expired)" if e is not None else "")
                           + ": asked the next plugin, and the answer may be kept")
        result = self.next.serve(req)
        req.memo_until = 0.0  # a miss counts: the next identical query must come here again
        if self._unkept:
            p = self._passed.get(key)
            if p is not None and p[0] is result and p[1] == req.opcode and p[2] == req.flags & AD:
                return p[3]  # what this question got last time with this very answer (see _pass)
            # _passed holds only names in _unkept, so a name found there needs no zone walk.
            if p is not None or in_wire_zones(req.key, self._unkept):
                if result.__class__ is Answer:
                    return self._pass(req, key, result)
                return self._pass_later(req, key, result)
        if result.__class__ is Answer:
            return self._store(req, key, result)
        return self._store_later(req, key, result)

    async def _store_later(self, req: Request, key: tuple, result) -> Answer:
        return self._store(req, key, await result)

    def _pass(self, req: Request, key: tuple, answer: Answer) -> Answer:
        """An answer for a name where nothing is kept (``disable success`` and ``denial``).

        It still goes out with its TTLs capped and AD cleared as a kept one would, but that
        depends only on the answer, the question, the opcode and the query's AD bit: it is
        remembered, and a plugin that hands out the same ready Answer again gets the same
        result back (in _lookup) without the response being read again.
        """
        out, dated = self._reply(req, key, answer, False)
        if not dated:
            passed = self._passed
            if len(passed) >= PASSED_MAX:
                passed.clear()
            passed[key] = (answer, req.opcode, req.flags & AD, out)
        return out

    async def _pass_later(self, req: Request, key: tuple, result) -> Answer:
        answer = await result
        p = self._passed.get(key)
        if p is not None and p[0] is answer and p[1] == req.opcode and p[2] == req.flags & AD:
            return p[3]
        return self._pass(req, key, answer)

    def _fresh(self, req: Request, e: _Entry, age: int) -> Answer:
        if not self.opts.keepttl and e.second != age:
            e.current = e.with_ttl(e.orig - age)
            e.second = age
            if e.fast:
                e.until = min(e.stored + age + 1, e.expires)
        answer = e.current
        if e.ad and not (req.do or req.flags & AD):
            answer = _without_ad(answer)
        return answer

    def _should_prefetch(self, e: _Entry, now: float, ttl: int) -> bool:
        if e.freq_last < now - self.opts.prefetch_window:
            e.freq_hits = 1
        else:
            e.freq_hits += 1
        e.freq_last = now
        threshold = math.ceil(self.opts.percentage / 100 * e.orig)
        return e.freq_hits >= self.opts.prefetch and ttl <= threshold

    # ------------------------------------------------------------------ stale entries
    def _stale_answer(self, req: Request, e: _Entry) -> Answer:
        if e.stale is None:
            if self.opts.stale_ttl > 0:
                e.stale = e.with_ttl(self.opts.stale_ttl)
            elif self.opts.keepttl:
                e.stale = e.base
            else:
                e.stale = e.with_ttl(0)
        answer = e.stale
        if e.ad and not (req.do or req.flags & AD):
            answer = _without_ad(answer)
        return answer

    def _serve_stale(self, req: Request, key: tuple, e: _Entry, now: float):
        if self.opts.verify:
            if not self.opts.recheck or self._may_refresh(e, now):
                return self._verify(req, key, e)
        else:
            self._background_refresh(req, key, e, now, stale=True)
        self.served_stale += 1
        return self._stale_answer(req, e)

    def _may_refresh(self, e: _Entry, now: float) -> bool:
        return not e.refreshing and not (self.opts.recheck and e.retry_after > now)

    async def _verify(self, req: Request, key: tuple, e: _Entry) -> Answer:
        track = self.opts.recheck > 0
        if track:
            e.refreshing = True
        if self.opts.verify_timeout > 0:
            task = self._spawn(self._refresh(_copy(req, req.proto), key, e, track))
            done, _pending = await asyncio.wait({task}, timeout=self.opts.verify_timeout)
            fresh = task.result() if task in done else None
        else:
            fresh = await self._refresh(req, key, e, track)
        if fresh is not None:
            return fresh
        self.served_stale += 1
        return self._stale_answer(req, e)

    async def _refresh(self, req: Request, key: tuple, e: _Entry, track: bool) -> Answer | None:
        """Ask again for a stale entry; the new answer if it may replace the entry (RFC 8767)."""
        fresh = None
        try:
            answer = await resolve(self.next.serve(req))
            if self._refreshes(req, answer):
                fresh = self._store(req, key, answer)
        except Exception as exc:
            self.log.debug("refreshing %s failed: %s", req.name, exc)
        if track:
            self._end_refresh(e, fresh is not None)
        return fresh

    def _refreshes(self, req: Request, answer: Answer) -> bool:
        if _not_written(answer) or answer.flags & TC or answer.rcode not in (NOERROR, NXDOMAIN):
            return False
        try:
            kind = read_response(req, answer).kind
        except WireError:
            return False
        return kind not in (OTHER_ERROR, META, UPDATE)

    def _end_refresh(self, e: _Entry, refreshed: bool) -> None:
        if self.opts.recheck and not refreshed:
            e.retry_after = _now() + self.opts.recheck
        else:
            e.retry_after = 0.0
        e.refreshing = False

    def _background_refresh(self, req: Request, key: tuple, e: _Entry, now: float, stale: bool) -> None:
        """At most one refresh per entry at a time; a failed stale one waits FAILURE_RECHECK."""
        if e.refreshing or (stale and self.opts.recheck and e.retry_after > now):
            return
        e.refreshing = True
        # TCP, as CoreDNS does, so that nothing limits the size of the answer.
        self._spawn(self._prefetch(_copy(req, "tcp"), key, e, now, stale))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _prefetch(self, req: Request, key: tuple, e: _Entry, now: float, stale: bool) -> None:
        self.prefetches += 1
        refreshed = False
        try:
            answer = await resolve(self.next.serve(req))
            if not stale or self._refreshes(req, answer):
                self._store(req, key, answer)
                refreshed = not _not_written(answer)
        except Exception as exc:
            self.log.debug("prefetching %s failed: %s", req.name, exc)
        if refreshed:
            # The new entry keeps the popularity the old one gathered.
            new = self.table.get(key)
            if new is not None and new is not e:
                new.freq_hits, new.freq_last = e.freq_hits, now
        self._end_refresh(e, refreshed or not stale)

    # ------------------------------------------------------------------ storing
    def _store(self, req: Request, key: tuple, answer: Answer) -> Answer:
        """Keep ``answer`` if it may be kept; returns what the client gets (TTLs capped)."""
        return self._reply(req, key, answer, True)[0]

    def _reply(self, req: Request, key: tuple, answer: Answer, may_keep: bool) -> tuple[Answer, bool]:
        """What the client gets for ``answer`` (TTLs capped), keeping it if ``may_keep`` and it
        may be kept; and whether that reply depended on the clock (a signature's validity)."""
        if _not_written(answer):
            return answer, False
        resp = self._read(req, answer)
        if resp is None:
            return answer, False
        kind = resp.kind
        keep = may_keep and not (answer.flags & TC or resp.non_answer or kind in (OTHER_ERROR, META, UPDATE)
                                 or (kind == NAME_ERROR and not resp.has_soa))
        duration = self._lifetime(kind, resp.ttls)
        ttl = int(duration)
        body = answer.body
        if resp.offsets and any(t != ttl for t in resp.ttls):
            buf = bytearray(body)
            for at in resp.offsets:
                _TTL.pack_into(buf, at, ttl)
            body = bytes(buf)
        if keep and duration > 0:
            self._keep(req, key, answer, body, resp.offsets, ttl, kind)
        if body is answer.body and not (answer.flags & AD and not (req.do or req.flags & AD)):
            return answer, resp.dated
        out = answer.with_body(body)
        out.ttl = ttl if resp.offsets else answer.ttl
        if not (req.do or req.flags & AD):
            out.flags &= ~AD
        return out, resp.dated

    def _read(self, req: Request, answer: Answer) -> Response | None:
        """``read_response``, kept per ready answer: a plugin hands out the same Answer for
        many questions (the kubernetes plugin's NXDOMAIN for every unknown name of a length),
        and what the cache reads in it depends only on the answer and on the question's name
        (for records that answer it), type, opcode and DO bit.  None: a malformed answer."""
        key = (id(answer), req.key if answer.an else b"", req.qtype, req.opcode, req.do)
        held = self._responses.get(key)
        if held is not None and held[0] is answer:
            return held[1]
        try:
            resp = read_response(req, answer)
        except WireError:
            return None
        if resp.dated:  # a signature checked against the clock: read again next time
            return resp
        if len(self._responses) >= _RESPONSES_MAX:
            self._responses.clear()
        self._responses[key] = (answer, resp)
        return resp

    def _lifetime(self, kind: int, ttls: list) -> float:
        """How long an answer is kept: its smallest TTL, within MINTTL and TTL of its kind."""
        o = self.opts
        if kind == SERVER_ERROR:
            return o.failttl
        if kind in (NAME_ERROR, NO_DATA):
            low, high = o.minnttl, o.nttl
        else:
            low, high = o.minpttl, o.pttl
        return float(min(max(minimal_ttl(kind, ttls, high), low), high))

    def _keep(self, req: Request, key: tuple, answer: Answer, body: bytes, offsets: tuple, ttl: int,
              kind: int) -> None:
        cache = SUCCESS if kind in (NO_ERROR, DELEGATION) else DENIAL
        excluded = self.opts.pexcept if cache == SUCCESS else self.opts.nexcept
        if excluded and in_wire_zones(req.key, excluded):
            return
        now = _now()
        if kind == SERVER_ERROR:
            # A SERVFAIL is passing trouble: it does not push out a positive answer still usable.
            old = self.table.get(key)
            if old is not None and old.kind == SUCCESS:
                left = old.orig - int(now - old.stored)
                if left > 0 or (self.opts.stale_up_to > 0 and -left < self.opts.stale_up_to):
                    return
        e = _Entry()
        e.kind = cache
        e.source = answer.plugin  # who wrote it, for pydns explain
        e.template, e.offsets, e.orig = body, offsets, ttl
        e.stored, e.expires = now, now + ttl
        base = answer.with_body(body)
        base.flags = answer.flags | AA
        base.plugin = self.name
        base.error = None
        base.ttl = ttl if offsets else answer.ttl
        e.base = e.current = base
        e.second = 0
        e.ad = bool(answer.flags & AD)
        e.fast = not self.opts.prefetch and not e.ad
        e.until = (e.expires if self.opts.keepttl else min(now + 1, e.expires)) if e.fast else 0.0
        e.stale = None
        e.freq_hits, e.freq_last = 0, -math.inf
        e.refreshing, e.retry_after = False, 0.0
        self._put(key, e)

    def _put(self, key: tuple, e: _Entry) -> None:
        self.caches[1 - e.kind].remove(key)
        victim = self.caches[e.kind].add(key, e)
        if victim is not None:
            self.evictions[e.kind] += 1
            self.table.pop(victim, None)
        self.table[key] = e


def _both(pexcept: frozenset, nexcept: frozenset) -> frozenset:
    """The zones (wire form) whose names fall in both sets: where nothing at all is kept.

    A name in a zone of each set is in the more specific of the two, which is then in both.
    """
    return frozenset([z for z in pexcept if in_wire_zones(z, nexcept)]
                     + [z for z in nexcept if in_wire_zones(z, pexcept)])


def _not_written(answer: Answer) -> bool:
    """An answer no plugin wrote (an error status): CoreDNS's cache never sees these."""
    return answer.error is not None or answer is status(answer.rcode)


def _without_ad(answer: Answer) -> Answer:
    out = answer.with_body(answer.body)
    out.flags &= ~AD
    return out


def _copy(req: Request, proto: str) -> Request:
    """The same question for a background fetch (the client's request object moves on)."""
    r = Request(req.data, proto, req.remote, req.local)
    r.server, r.zone = req.server, req.zone
    return r
