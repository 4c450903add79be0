"""Rendered names, kept until what they were made from changes.

``table`` is what the plugin's hot path reads: (lower-cased wire name, qtype) -> a ready
``Answer``, one dict lookup.  A name gets there on its first query: the renderer makes a
``Name`` (all its answers at once), and the name is filed under the dependency keys it was
made from (``store.py``).  A change to the store invalidates those keys, which drops every
name filed under them; the next query renders it again.

Rendered names are bounded (``limit``, oldest out first), so a client asking for every
name of a large cluster cannot grow the table without bound.  Pinned names (the zone apex,
``dns-version``, ``ns.dns``) are few, never evicted, and replaced whole by whoever pins them.
"""

from __future__ import annotations

from collections import OrderedDict

from pydns.wire import Answer

from .packing import TYPE_SOA, TYPE_TXT


class Name:
    """What a name holds: its answers by type, and how a missing type is answered.

    ``external`` is an ExternalName service's target (A/AAAA follow the CNAME); ``empty``
    names (the apex, namespaces) answer TXT with NXDOMAIN as CoreDNS does; ``strict`` names
    (PTR names, ``dns-version``) answer any type they lack with NXDOMAIN, SOA excepted.
    """

    __slots__ = ("answers", "external", "empty", "strict")

    def __init__(self, answers: dict[int, Answer] | None = None, *, external: str | None = None,
                 empty: bool = False, strict: bool = False):
        self.answers = answers or {}
        self.external = external
        self.empty = empty
        self.strict = strict

    def lacks_name(self, qtype: int) -> bool:
        """Whether a type this name has no answer for is a name error (else it is NODATA)."""
        if self.strict:
            return qtype != TYPE_SOA
        return self.empty and qtype == TYPE_TXT


class Memo:
    def __init__(self, limit: int):
        self.limit = limit
        self.table: dict[tuple[bytes, int], Answer] = {}
        self._rendered: OrderedDict[bytes, tuple[Name, tuple]] = OrderedDict()  # oldest first
        self._pinned: dict[bytes, Name] = {}
        self._by_dep: dict[tuple, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._rendered)

    def get(self, key: bytes) -> Name | None:
        pinned = self._pinned.get(key)
        if pinned is not None:
            return pinned
        held = self._rendered.get(key)
        return held[0] if held is not None else None

    def put(self, key: bytes, name: Name, deps: tuple) -> None:
        """Keep a rendered name until one of ``deps`` is invalidated (or it is the oldest when full)."""
        self._drop(key)
        self._fill(key, name)
        self._rendered[key] = (name, deps)
        by_dep = self._by_dep
        for dep in deps:
            held = by_dep.get(dep)
            if held is None:
                by_dep[dep] = {key}
            else:
                held.add(key)
        if len(self._rendered) > self.limit:
            self._drop(next(iter(self._rendered)))

    def pin(self, key: bytes, name: Name | None) -> None:
        """Set (or with None, remove) a pinned name."""
        old = self._pinned.pop(key, None)
        if old is not None:
            self._unfill(key, old)
        if name is not None:
            self._pinned[key] = name
            self._fill(key, name)

    def invalidate(self, deps) -> None:
        by_dep = self._by_dep
        for dep in deps:
            keys = by_dep.pop(dep, None)
            if keys:
                for key in keys:
                    self._drop(key)

    # ---------------------------------------------------------------- inside
    def _fill(self, key: bytes, name: Name) -> None:
        table = self.table
        for rtype, answer in name.answers.items():
            table[(key, rtype)] = answer

    def _unfill(self, key: bytes, name: Name) -> None:
        table = self.table
        for rtype in name.answers:
            table.pop((key, rtype), None)

    def _drop(self, key: bytes) -> None:
        held = self._rendered.pop(key, None)
        if held is None:
            return
        name, deps = held
        self._unfill(key, name)
        by_dep = self._by_dep
        for dep in deps:
            keys = by_dep.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del by_dep[dep]
