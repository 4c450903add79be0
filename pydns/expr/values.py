"""Values as expr and Go see them: their types, how Go prints them, and how they compare."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

MAX_ITEMS = 1_000_000  # the most items a range, repeat or flatten may make

INT, FLOAT, STRING, BOOL, NIL, ARRAY, MAP, ANY = "int", "float", "string", "bool", "nil", "array", "map", "any"
NUMBERS = (INT, FLOAT)


class ExprError(ValueError):
    """An expression that does not compile, or failed while running."""


@dataclass
class Function:
    """A function the host offers: ``impl(context, *args)``; ``params`` are argument types
    (None: any number of any type); ``per_query`` says that it reads more of the request than
    its question."""

    impl: Callable
    params: tuple | None
    result: str
    per_query: bool = False


def mismatch(op, left, right):
    return ExprError(f"invalid operation: {op} (mismatched types {left} and {right})")


def type_of(v) -> str:
    if v is None:
        return NIL
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    return {float: FLOAT, str: STRING, list: ARRAY, dict: MAP}.get(type(v), ANY)


def go_float(f: float) -> str:
    """A float as Go's %v prints it: the shortest digits, an exponent from 1e21 and below 1e-4."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1, f) < 0 else ""
    if f == 0:
        return sign + "0"
    text = repr(abs(f))  # Python's repr is the shortest form too: only the layout differs
    if "e" in text:
        mantissa, exponent = text.split("e")
        digits, exp = mantissa.replace(".", ""), int(exponent)
    else:
        whole, frac = text.split(".")
        digits = (whole + frac).lstrip("0")
        exp = len(whole) - 1 if whole != "0" else len(frac.lstrip("0")) - len(frac) - 1
    digits = digits.rstrip("0") or "0"
    if exp < -4 or exp >= 21:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp >= len(digits) - 1:
        return sign + digits + "0" * (exp - len(digits) + 1)
    if exp >= 0:
        return f"{sign}{digits[:exp + 1]}.{digits[exp + 1:]}"
    return f"{sign}0.{'0' * (-exp - 1)}{digits}"


def go_format(v) -> str:
    """A value as Go's fmt %v prints it (expr's ``string()``)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_format(i) for i in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_format(k)}:{go_format(v[k])}" for k in sorted(v, key=str)) + "]"
    return str(v)


def wrap(n: int) -> int:
    """Go's int: 64 bits, wrapping."""
    return ((n + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63) if not -1 << 63 <= n < 1 << 63 else n


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def equal(a, b) -> bool:
    if is_number(a) and is_number(b):
        return a == b
    if type(a) is not type(b):
        return False
    return a == b


def member(container, key, optional: bool):
    if container is None:
        if optional:
            return None
        raise ExprError(f"cannot fetch {go_format(key)} from nil")
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, (list, str)):
        if not is_number(key) or int(key) != key:
            raise ExprError(f"cannot use {type_of(key)} as index to {type_of(container)}")
        index = int(key)
        size = len(container)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise ExprError(f"index out of range: {int(key)} (array length is {size})")
        return container[index] if isinstance(container, list) else ord(container[index])
    raise ExprError(f"cannot fetch {go_format(key)} from {type_of(container)}")


_REGEX_CACHE: dict[str, re.Pattern] = {}
_GO_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")


def regex(pattern: str) -> re.Pattern:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        try:
            compiled = re.compile(_GO_NAMED_GROUP.sub("(?P<", pattern))
        except re.error as exc:
            raise ExprError(f"error parsing regexp: {exc}: `{pattern}`") from None
        if len(_REGEX_CACHE) >= 1000:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = compiled
    return compiled
