"""expr's builtin functions (those a Corefile may use), by name."""

from __future__ import annotations

import base64
import math
import re

from pydns.expr.parse import PREDICATES, WORD_OPS
from pydns.expr.values import (ANY, ARRAY, BOOL, FLOAT, INT, MAP, MAX_ITEMS, STRING, ExprError, equal, go_format,
                               is_number, member, type_of, wrap)


def _len(v):
    if isinstance(v, (str, list, dict)):
        return len(v)
    raise ExprError(f"invalid argument for len (type {type_of(v)})")


def _to_int(v):
    if isinstance(v, bool):
        raise ExprError(f"invalid operation: int({type_of(v)})")
    if isinstance(v, (int, float)):
        return wrap(int(v)) if not isinstance(v, float) or math.isfinite(v) else -1 << 63
    if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v):
        value = int(v)
        if -1 << 63 <= value < 1 << 63:
            return value
    raise ExprError(f"invalid operation: int({go_format(v)})")


_FLOAT_TEXT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.I)


def _to_float(v):
    if is_number(v):
        return float(v)
    if isinstance(v, str) and _FLOAT_TEXT.fullmatch(v):  # what Go's strconv.ParseFloat reads
        return float(v)
    raise ExprError(f"invalid operation: float({go_format(v)})")


def _round(v):
    """Half away from zero, as Go's math.Round."""
    x = float(numbers([v])[0])
    return math.copysign(math.floor(abs(x) + 0.5), x)


def _mean(items):
    return sum(numbers([items])) / len(items) if items else 0.0


def _trim(s, chars=None):
    return s.strip(chars) if chars is not None else s.strip(" \t\n\r\v\f")


def _split(s, sep, n=-1, after=False):
    if n == 0:
        return []
    if sep == "":
        parts = list(s)
        if n > 0 and len(parts) > n:
            parts = parts[:n - 1] + ["".join(parts[n - 1:])]
        return parts
    parts = s.split(sep, n - 1 if n > 0 else -1)
    if after:
        parts = [p + sep for p in parts[:-1]] + parts[-1:]
    return parts


def _replace(s, old, new, n=-1):
    return s.replace(old, new, n if n >= 0 else -1)


def _repeat(s, n):
    if n < 0:
        raise ExprError(f"invalid argument for repeat (expected positive integer, got {n})")
    if n * max(len(s), 1) > MAX_ITEMS:
        raise ExprError("memory budget exceeded")
    return s * n


def _join(items, glue=""):
    if not all(isinstance(i, str) for i in items):
        raise ExprError("invalid argument for join")
    return glue.join(items)


def numbers(args):
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
    if not items or not all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        raise ExprError("invalid argument: expected numbers")
    return items


def _median(items):
    items = sorted(numbers([items]))
    mid = len(items) // 2
    return float(items[mid]) if len(items) % 2 else (items[mid - 1] + items[mid]) / 2


def _flatten(items):
    out = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
        if len(out) > MAX_ITEMS:
            raise ExprError("memory budget exceeded")
    return out


def _concat(parts):
    if not all(isinstance(p, list) for p in parts):
        raise ExprError("concat takes arrays")
    if sum(len(p) for p in parts) > MAX_ITEMS:
        raise ExprError("memory budget exceeded")
    return [item for part in parts for item in part]


def _sort(items, order="asc"):
    if order not in ("asc", "desc"):
        raise ExprError(f"unknown order, use asc or desc: {order}")
    try:
        return sorted(items, reverse=order == "desc")
    except TypeError:
        raise ExprError("sort: items are not of one comparable type") from None


def _uniq(items):
    out = []
    for item in items:
        if not any(equal(item, o) for o in out):
            out.append(item)
    return out


def _take(items, n):
    return items[:max(n, 0)]


def _get(container, key):
    try:
        return member(container, key, True)
    except ExprError:
        return None


def _from_base64(s):
    try:
        return base64.b64decode(s, validate=True).decode("utf-8", "replace")
    except ValueError as exc:
        raise ExprError(f"illegal base64 data: {exc}") from None


def _bits(fn):
    def run(*args):
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ExprError("bitwise operations take integers")
        return wrap(fn(*args))
    return run


def _shift(a, n):
    if n < 0:
        raise ExprError(f"invalid operation: negative shift count {n}")
    return a << min(n, 64)


BUILTINS: dict[str, tuple] = {
    "len": ((ANY,), INT, _len),
    "abs": ((ANY,), ANY, lambda v: abs(numbers([v])[0])),
    "ceil": ((ANY,), FLOAT, lambda v: float(math.ceil(numbers([v])[0]))),
    "floor": ((ANY,), FLOAT, lambda v: float(math.floor(numbers([v])[0]))),
    "round": ((ANY,), FLOAT, _round),
    "int": ((ANY,), INT, _to_int),
    "float": ((ANY,), FLOAT, _to_float),
    "string": ((ANY,), STRING, lambda v: go_format(v)),
    "trim": (None, STRING, _trim),
    "trimPrefix": ((STRING, STRING), STRING, lambda s, p: s[len(p):] if s.startswith(p) else s),
    "trimSuffix": ((STRING, STRING), STRING, lambda s, p: s[:-len(p)] if p and s.endswith(p) else s),
    "upper": ((STRING,), STRING, str.upper),
    "lower": ((STRING,), STRING, str.lower),
    "split": (None, ARRAY, _split),
    "splitAfter": (None, ARRAY, lambda s, sep, n=-1: _split(s, sep, n, after=True)),
    "replace": (None, STRING, _replace),
    "repeat": ((STRING, INT), STRING, _repeat),
    "join": (None, STRING, _join),
    "indexOf": ((STRING, STRING), INT, lambda s, sub: s.find(sub)),
    "lastIndexOf": ((STRING, STRING), INT, lambda s, sub: s.rfind(sub)),
    "hasPrefix": ((STRING, STRING), BOOL, str.startswith),
    "hasSuffix": ((STRING, STRING), BOOL, str.endswith),
    "max": (None, ANY, lambda *a: max(numbers(a))),
    "min": (None, ANY, lambda *a: min(numbers(a))),
    "mean": ((ANY,), FLOAT, _mean),
    "median": ((ANY,), FLOAT, lambda v: _median(v) if v else 0.0),
    "toBase64": ((STRING,), STRING, lambda s: base64.b64encode(s.encode()).decode()),
    "fromBase64": ((STRING,), STRING, _from_base64),
    "first": ((ANY,), ANY, lambda v: v[0] if isinstance(v, list) and v else None),
    "last": ((ANY,), ANY, lambda v: v[-1] if isinstance(v, list) and v else None),
    "get": ((ANY, ANY), ANY, _get),
    "take": ((ARRAY, INT), ARRAY, _take),
    "keys": ((MAP,), ARRAY, lambda m: list(m)),
    "values": ((MAP,), ARRAY, lambda m: list(m.values())),
    "reverse": ((ARRAY,), ARRAY, lambda v: v[::-1]),
    "uniq": ((ARRAY,), ARRAY, _uniq),
    "concat": (None, ARRAY, lambda *a: _concat(a)),
    "flatten": ((ARRAY,), ARRAY, _flatten),
    "sort": (None, ARRAY, _sort),
    "bitand": ((INT, INT), INT, _bits(lambda a, b: a & b)),
    "bitor": ((INT, INT), INT, _bits(lambda a, b: a | b)),
    "bitxor": ((INT, INT), INT, _bits(lambda a, b: a ^ b)),
    "bitnand": ((INT, INT), INT, _bits(lambda a, b: a & ~b)),
    "bitnot": ((INT,), INT, _bits(lambda a: ~a)),
    "bitshl": ((INT, INT), INT, _bits(_shift)),
    "bitshr": ((INT, INT), INT, _bits(lambda a, n: a >> min(n, 64) if n >= 0 else _shift(a, n))),
    "bitushr": ((INT, INT), INT, _bits(lambda a, n: (a & (1 << 64) - 1) >> min(n, 64) if n >= 0
                                       else _shift(a, n))),
}
ARITY = {"trim": (1, 2), "split": (2, 3), "splitAfter": (2, 3), "replace": (3, 4), "join": (1, 2),
         "max": (1, 99), "min": (1, 99), "concat": (1, 99), "sort": (1, 2)}
# expr's other builtins: reserved names, and an error at compile time here
UNAVAILABLE = {"type", "groupBy", "sortBy", "toJSON", "fromJSON", "now", "duration", "date", "timezone",
               "toPairs", "fromPairs"}
RESERVED = set(BUILTINS) | set(PREDICATES) | UNAVAILABLE | WORD_OPS | {"true", "false", "nil", "$env"}
