"""Whole replies kept by the query that got them: what a UDP listener looks up first.

Clients ask the same questions again and again, and for most of them the chain gives the
same ready ``Answer``, which ``Answer.render`` splices into the same bytes.  So a UDP
listener keeps each reply it sent under the query's bytes after the ID (flags, question,
OPT record: everything the reply depends on besides the plugins' state), and answers the
next identical query with the ID and those bytes: one dict lookup and one splice, no
parsing, no chain.

A reply is kept only when every plugin that saw the query says it may be, by setting
``req.memo_until`` (see ``pydns.plugin.Plugin.memoizable``):

* a plugin whose answer depends only on the query's bytes and on state whose every change
  it reports with ``changed()`` (the *kubernetes* plugin) sets it to ``math.inf``;
* a plugin whose answer holds for a while (the *cache* plugin's TTLs count down by whole
  seconds) sets the time (``time.monotonic``) it stops holding;
* a plugin with an effect per query (a counter) lists it in ``req.memo_hooks``, run for
  every kept reply sent;
* a plugin that draws one of a few ready answers per query (loadbalance's orders) lists
  them all in ``req.memo_choices``: each kept reply sent is drawn from them alike;
* anything else (the client's address, chance, the time, a log line) keeps nothing: only
  the leading plugins of a chain that are all memoizable take part at all, and the
  listener keeps nothing that a plugin did not allow.

``changed()`` empties every listener's table before its next datagram is read: a change
applied on the loop (a watch event, a reload) is seen by the next query, as without this
table.  The table is bounded (``MAX_ENTRIES`` replies, ``MAX_BYTES`` bytes, queries of at
most ``MAX_QUERY`` bytes), and emptied when full: a client asking random names costs a
bounded table and, at worst, misses.
"""

from __future__ import annotations

generation = 0  # bumped by every change: a listener drops its table when this moves

MAX_ENTRIES = 10_000
MAX_BYTES = 4 << 20
MAX_QUERY = 512
_ENTRY_OVERHEAD = 200  # a dict slot, two bytes objects and a tuple, roughly


def changed() -> None:
    """Something a kept reply was made from has changed: drop every kept reply."""
    global generation
    generation += 1


class ReplyMemo:
    """One listener's kept replies: query bytes after the ID -> (reply bytes after the ID,
    time it holds until, hooks to run per reply sent or None, replies to draw one from per
    query or None)."""

    __slots__ = ("table", "size", "generation")

    def __init__(self) -> None:
        self.table: dict[bytes, tuple] = {}
        self.size = 0  # bytes, roughly (MAX_BYTES bounds it)
        self.generation = generation

    def current(self) -> dict[bytes, tuple]:
        """The table, emptied first if anything changed since it was filled."""
        if self.generation != generation:
            self.generation = generation
            self.table = {}
            self.size = 0
        return self.table

    def keep(self, query: bytes, reply: bytes, until: float, hooks: tuple | None,
             choices: tuple[bytes, ...] | None = None) -> None:
        """Keep ``reply`` (after its ID), or ``choices`` to draw from, for ``query`` (after its
        ID) until ``until``."""
        if len(query) > MAX_QUERY - 2:
            return
        cost = len(query) + len(reply) + _ENTRY_OVERHEAD + (sum(map(len, choices)) if choices else 0)
        table = self.current()
        if len(table) >= MAX_ENTRIES or self.size + cost > MAX_BYTES:
            table.clear()
            self.size = 0
        table[query] = (reply, until, hooks, choices)
        self.size += cost
