"""loadbalance — randomizes the order of A, AAAA and MX records, optionally preferring subnets.

Syntax::

    loadbalance [round_robin | weighted WEIGHTFILE] {
        reload DURATION
        prefer CIDR [CIDR...]
    }

``round_robin`` (the default) shuffles the A/AAAA records and the MX records of every section
of a successful answer; CNAMEs come first (glibc insists), then other records, then the
addresses, then MX.  ``prefer CIDR...`` then moves the addresses inside the listed subnets to
the front of the answer and additional sections, in the order the subnets are listed
(``prefer`` goes with ``round_robin``).

``weighted WEIGHTFILE`` picks the first A/AAAA record of A, AAAA and SRV answers at random,
weighted by the file; its block takes ``reload DURATION`` (default 30s, 0 disables)::

    www.example.com
    100.64.1.1 3
    100.64.1.2 1

An address missing from the file weighs 1; weights are 1 to 255.

Records are moved as byte ranges of the ready answer, never re-packed.  Names that point
(DNS compression) into a record that may move are spelled out once per answer, so that
moving records never breaks a name.  An answer too big for the client (thousands of
addresses) is shuffled only as far as the reply can hold: as many addresses as fit are
drawn at random from all of them, with TC set, from a few ready draws that are renewed as
queries come.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import ipaddress
import itertools
import math
import operator
import random

from pydns.corefile import CorefileError, Directive, Token
from pydns.plugin import Plugin, parse_duration, register, unknown_option
from pydns import records
from pydns.parser import WireError
from pydns.records import TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_MX, TYPE_SRV
from pydns.wire import NOERROR, OPT_SIZE, Answer, Request
from pydns.zones import to_wire

_AXFR, _IXFR = 252, 251
_PLANS_MAX = 4096
# Plans hold their answers' records: bounded in records too, since a big answer that the
# cache re-stamps every second gets a new plan each time.
_PLANNED_RECORDS_MAX = 100_000
_ORDERS_MAX = 24  # answers with at most this many possible orders have them all made ahead
_choice = random.choice
# For up to this many records, a new order is one pick among every order of that many
# (made once per count and shared by all answers): a third of what random.shuffle costs,
# and just as uniform.
_PERMUTE_MAX = 6
_PERMUTERS: dict[int, list] = {}
# Truncated orders kept per answer and room (a client size: 512, 1232, 4096, TCP...).
_POOL, _REFRESH, _POOL_ROOMS = 16, 8, 8

_CNAME, _REST, _ADDR, _MX = 0, 1, 2, 3


def _group(rtype: int) -> int:
    if rtype == TYPE_CNAME:
        return _CNAME
    if rtype == TYPE_A or rtype == TYPE_AAAA:
        return _ADDR
    if rtype == TYPE_MX:
        return _MX
    return _REST


class _Section:
    """One section's records as ready byte strings, grouped the way the policy moves them.

    ``rank`` gives each address record its subnet rank (prefer) or its weight (weighted);
    ``section`` is 0, 1 or 2 (answer, authority, additional); ``shortest`` the length of
    the shortest address record.
    """

    __slots__ = ("cname", "rest", "addr", "mx", "rank", "prefer", "section", "shortest")

    def __init__(self, cname: list, rest: list, addr: list, mx: list, rank: dict, prefer: bool, section: int):
        self.cname, self.rest, self.addr, self.mx, self.rank, self.prefer = cname, rest, addr, mx, rank, prefer
        self.section = section
        self.shortest = min(map(len, addr), default=0)


class _Plan:
    """How to reorder one Answer: one ready answer, every possible order made ahead, or
    byte pieces and sections to arrange per query; and for an answer too big for some
    clients, ready truncated orders per room (see ``LoadBalance._pooled``)."""

    __slots__ = ("answer", "fixed", "choices", "pieces", "small", "pools")

    def __init__(self, answer: Answer, fixed: Answer | None = None, pieces: list | None = None,
                 small: bool = False):
        self.answer, self.fixed, self.pieces, self.small = answer, fixed, pieces, small
        self.choices: list | None = None
        self.pools: dict[int, list[Answer]] = {}


@register("loadbalance")
class LoadBalance(Plugin):
    # Replies with one order, or few enough orders to make them all ahead, may be kept
    # (pydns.replies): a kept reply then draws its order per query as loadbalance would.
    memoizable = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.policy = "round_robin"
        self.subnets: list = []
        self.weight_file: Token | None = None
        self.reload = 30.0
        self.weights: dict[bytes, dict] = {}
        self._weights_digest = b""
        self._task: asyncio.Task | None = None
        # Plans per Answer object: ready answers are shared by every query for a name, so
        # reading their records is done once.  A plan holds its Answer, so the id cannot be
        # reused by another object while the plan is kept.
        self._plans: dict[int, _Plan] = {}
        self._planned = 0  # records held by the plans

    # ------------------------------------------------------------------ setup
    def setup(self, d: Directive) -> None:
        args = d.args
        if args:
            policy = str(args[0])
            if policy == "weighted":
                self._setup_weighted(d)
                return
            if policy != "round_robin":
                raise d.error(f"plugin/loadbalance: unknown policy: {policy}", args[0])
            if len(args) > 1:
                raise d.error(f"plugin/loadbalance: unknown property for {policy}", args[1])
        for opt in d.options:
            if opt.name != "prefer":
                raise unknown_option(d, opt)
            for cidr in opt.args:
                if "/" not in cidr:
                    raise opt.error(f'plugin/loadbalance: invalid CIDR "{cidr}": no prefix length', cidr)
                try:
                    self.subnets.append(ipaddress.ip_network(str(cidr), strict=False))
                except ValueError as exc:
                    raise opt.error(f'plugin/loadbalance: invalid CIDR "{cidr}": {exc}', cidr) from None

    def _setup_weighted(self, d: Directive) -> None:
        args = d.args
        if len(args) < 2:
            raise d.error("plugin/loadbalance: missing weight file argument", args[0])
        if len(args) > 2:
            raise d.error("plugin/loadbalance: unexpected argument(s)", args[2])
        self.policy = "weighted"
        self.weight_file = args[1]
        for opt in d.options:
            if opt.name != "reload":
                raise unknown_option(d, opt)
            if not opt.args:
                raise opt.error("plugin/loadbalance: reload duration value is missing")
            if len(opt.args) > 1:
                raise opt.error("plugin/loadbalance: unexpected argument", opt.args[1])
            try:
                self.reload = parse_duration(opt.args[0])
            except CorefileError:
                raise opt.error(f"plugin/loadbalance: invalid reload duration '{opt.args[0]}'", opt.args[0]) from None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.policy != "weighted":
            return
        try:
            self._load_weights()
        except OSError as exc:
            if self.reload == 0:
                raise self.weight_file.error(f"plugin/loadbalance: weight file open error: {exc}") from None
            self.log.warning("Failed to open weight file: %s. Will try again in %gs", exc, self.reload)
        except ValueError as exc:
            raise self.weight_file.error(str(exc)) from None
        if self.reload > 0:
            self._task = asyncio.ensure_future(self._reload_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reload)
            try:
                self._load_weights()
            except Exception as exc:  # a broken or missing file keeps the weights we have
                self.log.error("%s", exc)

    def _load_weights(self) -> None:
        with open(str(self.weight_file), "rb") as fh:
            data = fh.read()
        digest = hashlib.md5(data).digest()
        if digest == self._weights_digest:
            return
        self.weights = parse_weights(data.decode("utf-8", "replace"), str(self.weight_file))
        self._weights_digest = digest
        self._plans = {}
        self._planned = 0
        self.log.info("Successfully reloaded weight file %s", self.weight_file)

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        result = self.next.serve(req)
        if result.__class__ is Answer:
            return self.balance(req, result)
        return self._later(req, result)

    async def _later(self, req: Request, result) -> Answer:
        return self.balance(req, await result)

    def balance(self, req: Request, answer: Answer) -> Answer:
        if answer.rcode != NOERROR or answer.an + answer.ns + answer.ar < 2:
            return answer
        plan = self._plans.get(id(answer))
        if plan is None or plan.answer is not answer:
            plan = self._plan(req, answer)
            if plan.fixed is not None:
                return plan.fixed
            req.memo_until = 0.0  # an order drawn for this query alone
            return self._reorder(answer, plan.pieces, _room(req, answer))
        if plan.choices is not None:
            req.memo_choices = plan.choices  # a kept reply draws from every order alike (pydns.replies)
            return _choice(plan.choices)
        if plan.fixed is not None:
            return plan.fixed
        if plan.small:
            # Seen again, so it is a shared ready answer: make every order once.
            plan.choices = self._every_order(answer, plan.pieces)
            req.memo_choices = plan.choices
            return _choice(plan.choices)
        req.memo_until = 0.0  # an order drawn for this query alone
        room = _room(req, answer)
        if room is not None:
            return self._pooled(plan, room)
        return self._reorder(answer, plan.pieces)

    def _pooled(self, plan: _Plan, room: int) -> Answer:
        """A random truncated order of an answer too big for ``room``, from a pool made ahead.

        Such answers are the big ones (thousands of addresses): drawing a fresh order per
        query costs far more than answering a small name.  The pool holds ``_POOL`` orders,
        each an independent uniform draw; every ``_REFRESH``-th query (on average) replaces
        one with a fresh draw, so over time every address is handed out alike.
        """
        pool = plan.pools.get(room)
        if pool is None:
            if len(plan.pools) >= _POOL_ROOMS:
                plan.pools.clear()
            pool = plan.pools[room] = [self._reorder(plan.answer, plan.pieces, room) for _ in range(_POOL)]
        elif random.random() < 1 / _REFRESH:
            pool[random.randrange(_POOL)] = self._reorder(plan.answer, plan.pieces, room)
        return _choice(pool)

    def _reorder(self, answer: Answer, pieces: list, room: int | None = None) -> Answer:
        """A fresh random order (answers too varied to have every order made ahead).

        ``room``: the bytes the client can take for records, when the answer does not fit in
        them.  Truncation will keep only a first few of the shuffled addresses then, so only
        as many as could fit are drawn: a random sample in random order is the same as the
        start of a full shuffle, and a name with thousands of addresses costs no more per
        query than the size limit allows.
        """
        orders = []
        weighted = self.policy == "weighted"
        for piece in pieces:
            if piece.__class__ is bytes:
                continue
            addr, mx = piece.addr, piece.mx
            if weighted:
                addr = _weighted_top(addr, piece.rank)
            else:
                if len(addr) > 1:
                    fits = None if room is None or piece.prefer else room // piece.shortest + 1
                    addr = _shuffled(addr, fits)
                if len(mx) > 1:
                    mx = _shuffled(mx)
            orders.append((addr, mx))
        return self._assemble(answer, pieces, orders, room)

    def _assemble(self, answer: Answer, pieces: list, orders: list, room: int | None = None) -> Answer:
        """The answer with each section's addresses and MX records in the given orders.

        Where a section's addresses were only sampled (see ``_reorder``), the answer is cut
        right there to the whole records that fit in ``room``, with TC, as truncation would.
        """
        out: list[bytes] = []
        sections = iter(orders)
        for piece in pieces:
            if piece.__class__ is bytes:
                out.append(piece)
                continue
            addr, mx = next(sections)
            first = len(out)
            out += piece.cname
            if piece.prefer:
                out += sorted(addr, key=piece.rank.__getitem__)
                out += mx
                out += piece.rest
            else:
                out += piece.rest
                out += addr
                out += mx
            if len(addr) < len(piece.addr):
                return _cut(answer, out, first, piece.section, room)
        return answer.with_body(b"".join(out))

    def _every_order(self, answer: Answer, pieces: list) -> list[Answer]:
        """All shuffles of a small answer, each made once (picking one is then the only work)."""
        sections = [p for p in pieces if p.__class__ is _Section]
        choices = [[(list(a), list(m)) for a in itertools.permutations(p.addr) for m in itertools.permutations(p.mx)]
                   for p in sections]
        return [self._assemble(answer, pieces, list(combo)) for combo in itertools.product(*choices)]

    # ------------------------------------------------------------------ planning (once per Answer)
    def _plan(self, req: Request, answer: Answer) -> _Plan:
        plan = self._make_plan(req, answer)
        records = answer.an + answer.ns + answer.ar
        if len(self._plans) >= _PLANS_MAX or self._planned + records > _PLANNED_RECORDS_MAX:
            self._plans = {}
            self._planned = 0
        self._plans[id(answer)] = plan
        self._planned += records
        return plan

    def _make_plan(self, req: Request, answer: Answer) -> _Plan:
        if req.qtype in (_AXFR, _IXFR):
            return _Plan(answer, fixed=answer)
        if self.policy == "weighted" and req.qtype not in (TYPE_A, TYPE_AAAA, TYPE_SRV):
            return _Plan(answer, fixed=answer)
        question = req.data[12 : req.qend + 4]
        base = len(question) + 12
        counts = (answer.an, answer.ns, answer.ar)
        try:
            msg = records.message(answer.body, question)
            recs = records.walk(msg, base, counts)
            # From the first record that may change place to the end of its section.
            regions = [(srecs[first].start, srecs[-1].end) for srecs, first in self._moves(recs) if first is not None]
            if not regions:
                return _Plan(answer, fixed=answer)
            if any(_inside(t, regions) for r in recs for t in records.pointer_targets(msg, r)):
                # Spell out names that lead into records that may move, then read again.
                msg = records.message(records.expand(msg, recs, base), question)
                recs = records.walk(msg, base, counts)
        except WireError:
            return _Plan(answer, fixed=answer)
        pieces = self._pieces(msg, recs, base)
        if not any(p.__class__ is _Section and self._random(p) for p in pieces):
            return _Plan(answer, fixed=self._reorder(answer, pieces))
        return _Plan(answer, pieces=pieces, small=self.policy != "weighted" and _orders(pieces) <= _ORDERS_MAX)

    def _random(self, section: _Section) -> bool:
        if self.policy == "weighted":
            return len(section.addr) > 1
        return len(section.addr) > 1 or len(section.mx) > 1

    def _applies(self, section: int) -> bool:
        # weighted works on the answer and additional sections only
        return self.policy != "weighted" or section != 1

    def _prefer(self, section: int) -> bool:
        # prefer reorders the answer and additional sections
        return bool(self.subnets) and section != 1 and self.policy != "weighted"

    def _moves(self, recs: list) -> list[tuple[list, int | None]]:
        """Each section's records, with the index of the first record that may change place."""
        by_section: list[list] = [[], [], []]
        for r in recs:
            by_section[r.section].append(r)
        out = []
        for section, srecs in enumerate(by_section):
            if len(srecs) < 2 or not self._applies(section):
                continue
            groups: list[list[int]] = [[], [], [], []]
            for i, r in enumerate(srecs):
                groups[_group(r.rtype)].append(i)
            if self.policy == "weighted" and not groups[_ADDR]:
                continue
            if self._prefer(section):
                layout = groups[_CNAME] + groups[_ADDR] + groups[_MX] + groups[_REST]
            else:
                layout = groups[_CNAME] + groups[_REST] + groups[_ADDR] + groups[_MX]
            shuffled = {_ADDR} if len(groups[_ADDR]) > 1 else set()
            if len(groups[_MX]) > 1 and self.policy != "weighted":
                shuffled.add(_MX)
            first = None
            for pos, index in enumerate(layout):
                if index != pos or _group(srecs[index].rtype) in shuffled:
                    first = pos
                    break
            out.append((srecs, first))
        return out

    def _pieces(self, msg: bytes, recs: list, base: int) -> list:
        pieces: list = []
        pos = base
        for srecs, first in self._moves(recs):
            if first is None:
                continue
            section = srecs[0].section
            start, end = srecs[0].start, srecs[-1].end
            if start > pos:
                pieces.append(msg[pos:start])
            groups: list[list] = [[], [], [], []]
            rank: dict[bytes, object] = {}
            for r in srecs:
                raw = msg[r.start : r.end]
                g = _group(r.rtype)
                groups[g].append(raw)
                if g == _ADDR and (self.subnets or self.policy == "weighted"):
                    rank[raw] = self._rank(msg, r)
            pieces.append(_Section(groups[_CNAME], groups[_REST], groups[_ADDR], groups[_MX], rank,
                                   self._prefer(section), section))
            pos = end
        if pos < len(msg):
            pieces.append(msg[pos:])
        return pieces

    def _rank(self, msg: bytes, r) -> int:
        """What orders an address record: its subnet's rank (prefer) or its weight (weighted)."""
        try:
            ip = ipaddress.ip_address(msg[r.rdata : r.end])
        except ValueError:
            ip = None
        if self.policy == "weighted":
            table = self.weights.get(records.wire_name(records.read_name(msg, r.start)[0]))
            return table.get(ip, 1) if table and ip is not None else 1
        if ip is not None:
            for rank, net in enumerate(self.subnets):
                if ip.version == net.version and ip in net:
                    return rank
        return len(self.subnets)


def _room(req: Request, answer: Answer) -> int | None:
    """The bytes left for records in the reply to ``req``, if ``answer``'s do not fit in them."""
    room = req.limit - 12 - len(req.question) - (OPT_SIZE if req.edns_size else 0)
    return room if len(answer.body) > room else None


def _cut(answer: Answer, out: list[bytes], first: int, section: int, room: int) -> Answer:
    """``answer`` with the records ``out`` (those of ``section`` from ``first`` on, whole
    sections before), cut to the whole records that fit in ``room`` (miekg/dns's Truncate)."""
    counts = [answer.an, answer.ns, answer.ar]
    counts[section + 1 :] = [0] * (2 - section)
    ends = list(itertools.accumulate(map(len, out)))  # where each record ends
    if first and ends[first - 1] > room:  # a section before this one is too big already: render cuts it
        counts[section] = len(out) - first
        return answer.with_body(b"".join(out), counts)
    kept = bisect.bisect_right(ends, room)
    counts[section] = kept - first
    return answer.with_body(b"".join(out[:kept]), counts, truncated=True)


def _shuffled(items: list, most: int | None = None) -> list | tuple:
    """``items`` (two or more) in a random order, every order equally likely; only the first
    ``most`` of such an order when fewer are wanted."""
    n = len(items)
    if most is not None and most < n:
        return _sample(items, most)
    if n > _PERMUTE_MAX:
        items = items[:]
        random.shuffle(items)
        return items
    permuters = _PERMUTERS.get(n)
    if permuters is None:
        permuters = _PERMUTERS[n] = [operator.itemgetter(*p) for p in itertools.permutations(range(n))]
    return _choice(permuters)(items)


def _sample(items: list, k: int) -> list:
    """``k`` of ``items`` (k < len(items)), every choice and order equally likely.

    A name with thousands of addresses draws a few dozen per query, so the draw is made
    with ``random.choices`` (C-fast, but with replacement) and kept when no record repeats,
    which is likely when k is small next to the count; else ``random.sample`` draws again.
    Either way every ordered choice of k distinct records is equally likely.
    """
    out = random.choices(items, k=k)
    if len(set(out)) == k:
        return out
    return random.sample(items, k)


def _orders(pieces: list) -> int:
    """How many different orders shuffling can give."""
    count = 1
    for p in pieces:
        if p.__class__ is _Section:
            count *= math.factorial(len(p.addr)) * math.factorial(len(p.mx))
    return count


def _inside(offset: int, regions: list[tuple[int, int]]) -> bool:
    for start, end in regions:
        if start <= offset < end:
            return True
    return False


def _weighted_top(addr: list, weight: dict) -> list:
    """The address records with one, picked at random by weight, moved to the front."""
    if len(addr) < 2:
        return addr
    order = sorted(range(len(addr)), key=lambda i: -weight[addr[i]])
    v = random.randrange(sum(weight[a] for a in addr))
    acc = 0
    top = 0
    for i in order:
        acc += weight[addr[i]]
        if v < acc:
            top = i
            break
    if top == 0:
        return addr
    out = addr[:]
    out[0], out[top] = out[top], out[0]
    return out


def parse_weights(text: str, path: str) -> dict[bytes, dict]:
    """Weight file contents -> owner name (wire form, lower case) -> {address: weight}."""
    domains: dict[bytes, dict] = {}
    current: bytes | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1:
            if _is_ip(fields[0]):
                raise ValueError(f'plugin/loadbalance: wrong domain name:"{fields[0]}" in weight file {path}. '
                                 "(Maybe a missing weight value?)")
            current = to_wire(fields[0])
            domains.setdefault(current, {})
        elif len(fields) == 2:
            try:
                ip = ipaddress.ip_address(fields[0])
            except ValueError:
                raise ValueError(f'plugin/loadbalance: wrong IP address:"{fields[0]}" in weight file {path}') from None
            weight = int(fields[1]) if fields[1].isdigit() else 0
            if not 1 <= weight <= 255:
                raise ValueError(f'plugin/loadbalance: wrong weight value:"{fields[1]}" in weight file {path}')
            if current is None:
                raise ValueError(f"plugin/loadbalance: missing domain name in weight file {path}")
            domains[current].setdefault(ip, weight)
        else:
            raise ValueError(f'plugin/loadbalance: could not parse weight line:"{line}" in weight file {path}')
    return domains


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
