"""The cache's Corefile options, with CoreDNS's defaults, limits and error texts."""

from __future__ import annotations

from pydns.corefile import Directive
from pydns.plugin import expect_args, is_int, parse_duration, parse_int, unknown_option
from pydns.plugins.cache.metrics import DENIAL, KINDS, SUCCESS
from pydns.plugins.cache.response import MIN_TTL
from pydns.zones import fqdn, normalize_zones, to_wire

MAX_TTL, MAX_NTTL = 3600, 1800
DEFAULT_CAPACITY = 10000  # 256 shards of 39: 9984 entries
MAX_SERVFAIL = 300.0
MAX_RECHECK = 300.0


class Options:
    """Everything ``cache`` can be told; the attributes hold CoreDNS's defaults."""

    def __init__(self) -> None:
        self.zones: list[str] = []
        self.pttl, self.nttl = MAX_TTL, MAX_NTTL
        self.minpttl, self.minnttl = MIN_TTL, MIN_TTL
        self.pcap, self.ncap = DEFAULT_CAPACITY, DEFAULT_CAPACITY
        self.failttl = float(MIN_TTL)
        self.prefetch = 0  # AMOUNT; 0: no prefetching
        self.prefetch_window = 60.0
        self.percentage = 10
        self.stale_up_to = 0  # whole seconds, as CoreDNS compares them; 0: no stale answers
        self.verify = False
        self.verify_timeout = 0.0
        self.stale_ttl = 0
        self.recheck = 0.0
        self.pexcept: frozenset = frozenset()  # zones (wire form) where answers are not kept
        self.nexcept: frozenset = frozenset()  # zones (wire form) where denials are not kept
        self.keepttl = False


def parse(d: Directive, block_zones: list[str]) -> Options:
    o = Options()
    args = list(d.args)
    if args and is_int(args[0]):
        ttl = int(args.pop(0))
        if ttl <= 0:
            raise d.error(f"plugin/cache: cache TTL can not be zero or negative: {ttl}", d.args[0])
        o.pttl = o.nttl = ttl
    o.zones = normalize_zones(args, block_zones)
    for opt in d.options:
        name = str(opt.name)
        if name in KINDS:
            _kind(o, opt, SUCCESS if name == "success" else DENIAL)
        elif name == "prefetch":
            _prefetch(o, opt)
        elif name == "serve_stale":
            _serve_stale(o, opt)
        elif name == "serve_stale_policy":
            raise opt.error("plugin/cache: serve_stale_policy is not supported")
        elif name == "servfail":
            expect_args(opt, 1, 1, plugin="cache")
            o.failttl = parse_duration(opt.args[0], "cache", "invalid negative ttl for servfail")
            if o.failttl > MAX_SERVFAIL:
                raise opt.error("plugin/cache: caching SERVFAIL responses over 5 minutes is not permitted",
                                opt.args[0])
        elif name == "disable":
            _disable(o, opt)
        elif name == "keepttl":
            expect_args(opt, 0, 0, plugin="cache")
            o.keepttl = True
        else:
            raise unknown_option(d, opt)
    return o


def _kind(o: Options, opt: Directive, kind: int) -> None:
    """success|denial CAPACITY [TTL [MINTTL]]"""
    args = expect_args(opt, 1, 3, plugin="cache")
    cap = parse_int(args[0], "cache", "capacity")
    if cap < 0:
        raise opt.error(f"plugin/cache: capacity can not be negative: {cap}", args[0])
    ttl = minttl = None
    if len(args) > 1:
        ttl = parse_int(args[1], "cache", "TTL")
        if ttl <= 0:
            raise opt.error(f"plugin/cache: cache TTL can not be zero or negative: {ttl}", args[1])
    if len(args) > 2:
        minttl = parse_int(args[2], "cache", "min TTL")
        if minttl < 0:
            raise opt.error(f"plugin/cache: cache min TTL can not be negative: {minttl}", args[2])
    if kind == SUCCESS:
        o.pcap = cap
        o.pttl = o.pttl if ttl is None else ttl
        o.minpttl = o.minpttl if minttl is None else minttl
    else:
        o.ncap = cap
        o.nttl = o.nttl if ttl is None else ttl
        o.minnttl = o.minnttl if minttl is None else minttl


def _prefetch(o: Options, opt: Directive) -> None:
    """prefetch AMOUNT [[DURATION] [PERCENTAGE%]]"""
    args = expect_args(opt, 1, 3, plugin="cache")
    amount = parse_int(args[0], "cache", "prefetch amount")
    if amount < 0:
        raise opt.error(f"plugin/cache: prefetch amount should be positive: {amount}", args[0])
    o.prefetch = amount
    if len(args) > 1:
        o.prefetch_window = parse_duration(args[1], "cache", "invalid negative duration for prefetch")
    if len(args) > 2:
        pct = str(args[2])
        if not pct.endswith("%"):
            raise opt.error(f"plugin/cache: last character of percentage should be `%`, but is: '{pct[-1:]}'",
                            args[2])
        if not is_int(pct[:-1]):
            raise opt.error(f"plugin/cache: percentage must be an integer, got '{pct}'", args[2])
        num = int(pct[:-1])
        if num < 10 or num > 90:
            raise opt.error(f"plugin/cache: percentage should fall in range [10, 90]: {num}", args[2])
        o.percentage = num


def _serve_stale(o: Options, opt: Directive) -> None:
    """serve_stale [DURATION] [immediate [RESPONSE_TTL [RECHECK]] | verify [TIMEOUT [RESPONSE_TTL [RECHECK]]]]"""
    args = expect_args(opt, 0, 5, plugin="cache")
    o.stale_up_to, o.stale_ttl, o.recheck = 3600, 0, 0.0
    o.verify, o.verify_timeout = False, 0.0
    if args:
        o.stale_up_to = int(parse_duration(args[0], "cache", "invalid negative duration for serve_stale"))
    if len(args) > 1:
        mode = str(args[1]).lower()
        if mode not in ("immediate", "verify"):
            raise opt.error(f"plugin/cache: invalid value for serve_stale refresh mode: {mode}", args[1])
        o.verify = mode == "verify"
    rest = list(args[2:])
    if o.verify and rest:
        o.verify_timeout = parse_duration(rest.pop(0), "cache", "invalid negative timeout for serve_stale verify")
    elif len(rest) > 2:
        raise rest[2].error(f"plugin/cache: serve_stale {args[1]} takes at most 2 more values, found '{rest[2]}'")
    if rest:
        tok = rest.pop(0)
        ttl = parse_duration(tok, "cache", "invalid negative response TTL for serve_stale")
        if ttl != int(ttl):
            raise tok.error("plugin/cache: serve_stale response TTL must be a whole number of seconds")
        if ttl > 0xFFFFFFFF:
            raise tok.error("plugin/cache: serve_stale response TTL exceeds the DNS TTL range")
        o.stale_ttl = int(ttl)
    if rest:
        tok = rest.pop(0)
        o.recheck = parse_duration(tok, "cache", "invalid negative failure recheck for serve_stale")
        if o.recheck > MAX_RECHECK:
            raise tok.error("plugin/cache: serve_stale failure recheck cannot exceed 5 minutes")


def _disable(o: Options, opt: Directive) -> None:
    """disable success|denial [ZONES...]"""
    args = expect_args(opt, 1, plugin="cache")
    which = str(args[0])
    if which not in KINDS:
        raise opt.error('plugin/cache: cache type for disable must be "success" or "denial"', args[0])
    keys = frozenset(to_wire(fqdn(str(z))) for z in args[1:]) or frozenset([b"\x00"])
    if which == "success":
        o.pexcept = keys
    else:
        o.nexcept = keys
