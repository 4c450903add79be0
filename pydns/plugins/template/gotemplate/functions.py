"""The values and functions of record templates, as Go's text/template prints, tests and compares them."""

from __future__ import annotations

import html
import re
import urllib.parse

from pydns.expr import go_format


class TemplateError(ValueError):
    """A record template that cannot be compiled or executed."""


def go_string(value) -> str:
    """How text/template prints a value."""
    if value is None:
        return "<no value>"
    return go_format(value)


def truth(value) -> bool:
    """text/template's truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def _index(container, *keys):
    for key in keys:
        if isinstance(container, dict):
            container = container.get(key, getattr(container, "zero", ""))
            continue
        try:
            container = container[key]
        except (IndexError, TypeError):
            raise TemplateError(f"error calling index: index {key} out of range") from None
    return container


def _parse_int(text, base, bits):
    try:
        value = int(str(text), int(base))
    except ValueError:
        raise TemplateError(f'error calling parseInt: parsing "{text}": invalid syntax') from None
    if value < 0 or value >= 1 << int(bits):
        raise TemplateError(f'error calling parseInt: parsing "{text}": value out of range')
    return value


def _printf(fmt, *args):
    # Go's verbs for strings and numbers map onto Python's; %v prints like print.
    fmt = re.sub(r"%v", "%s", str(fmt))
    try:
        return fmt % tuple(go_format(a) if not isinstance(a, (int, float)) or isinstance(a, bool) else a
                           for a in args)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"error calling printf: {exc}") from None


def _slice(value, *bounds):
    if len(bounds) > 2:
        raise TemplateError("error calling slice: too many indexes")
    return value[slice(*bounds)]


def _print(*args):
    # Go's fmt.Sprint puts a space between two operands when neither is a string
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_format(arg))
    return "".join(out)


_KINDS = ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"))


def _kind(value) -> str | None:
    for cls, name in _KINDS:
        if isinstance(value, cls):
            return name
    return None


def _eq(first, *others):
    if not others:
        raise TemplateError("error calling eq: missing argument for comparison")
    for other in others:
        k1, k2 = _kind(first), _kind(other)
        if k1 != k2:
            if first is not None and other is not None:
                raise TemplateError("error calling eq: incompatible types for comparison")
        elif k1 is None and first is not None:
            if isinstance(first, (list, dict)) or isinstance(other, (list, dict)):
                raise TemplateError("error calling eq: non-comparable type")
            if first is other:
                return True
        elif first == other:
            return True
    return False


def _less(a, b) -> bool:
    k1, k2 = _kind(a), _kind(b)
    if k1 is None or k2 is None or k1 == "bool" or k2 == "bool":
        raise TemplateError("invalid type for comparison")
    if k1 != k2:
        raise TemplateError("incompatible types for comparison")
    return a < b


def _compare(name, test):
    def run(a, b):
        try:
            return test(a, b)
        except TemplateError as exc:
            raise TemplateError(f"error calling {name}: {exc}") from None
    return run


FUNCTIONS = {
    "index": _index,
    "len": lambda v: len(v),
    "print": _print,
    "println": lambda *a: " ".join(go_format(v) for v in a) + "\n",
    "printf": _printf,
    "slice": _slice,
    "parseInt": _parse_int,
    "not": lambda v: not truth(v),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare("lt", _less),
    "le": _compare("le", lambda a, b: _less(a, b) or _eq(a, b)),
    "gt": _compare("gt", lambda a, b: not (_less(a, b) or _eq(a, b))),
    "ge": _compare("ge", lambda a, b: not _less(a, b)),
    "html": lambda *a: html.escape(_print(*a)).replace("&#x27;", "&#39;").replace("&quot;", "&#34;"),
    "urlquery": lambda *a: urllib.parse.quote_plus(_print(*a), safe=""),
    "and": None,  # and/or stop at the first argument that decides: evaluated by _command
    "or": None,
}
