"""Kubernetes label selectors (``app=web,tier in (a, b),!canary``), parsed and matched.

The grammar is the API server's: requirements separated by commas, each one of ``key``,
``!key``, ``key=value``, ``key==value``, ``key!=value``, ``key in (v1, v2)`` and
``key notin (v1, v2)``.  ``>`` and ``<`` are refused, as CoreDNS refuses them (they cannot
be expressed as a LabelSelector).  The same text is sent to the API server as-is; the
index applies the parsed form itself so that every source filters the same way.
"""

from __future__ import annotations

import re

_SPECIAL = "!=(),<>"
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """The selector text cannot be parsed."""


def _lex(text: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _SPECIAL:
            two = text[i : i + 2]
            if two in ("!=", "=="):
                tokens.append(two)
                i += 2
            else:
                tokens.append(ch)
                i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        raise SelectorError(f"invalid label key {key!r}: bad prefix")
    if not name or len(name) > 63 or not _NAME.match(name):
        raise SelectorError(f"invalid label key {key!r}")


def _check_value(value: str) -> None:
    if value and (len(value) > 63 or not _NAME.match(value)):
        raise SelectorError(f"invalid label value {value!r}")


class Selector:
    """A parsed selector: ``matches(labels)`` tells whether an object's labels satisfy it."""

    def __init__(self, text: str):
        self.text = text
        # (key, op, values): op is "exists", "!exists", "in" or "notin"
        self.requirements: list[tuple[str, str, frozenset]] = self._parse(_lex(text))

    def __repr__(self) -> str:
        return f"Selector({self.text!r})"

    @staticmethod
    def _parse(tokens: list[str]) -> list[tuple[str, str, frozenset]]:
        reqs: list[tuple[str, str, frozenset]] = []
        pos = 0

        def take() -> str:
            nonlocal pos
            if pos >= len(tokens):
                raise SelectorError("unexpected end of selector")
            tok = tokens[pos]
            pos += 1
            return tok

        def ident(what: str) -> str:
            tok = take()
            if tok in _SPECIAL or tok in ("!=", "=="):
                raise SelectorError(f"expected {what}, found {tok!r}")
            return tok

        while pos < len(tokens):
            if tokens[pos] == "!":
                pos += 1
                key = ident("a label key")
                _check_key(key)
                reqs.append((key, "!exists", frozenset()))
            else:
                key = ident("a label key")
                _check_key(key)
                op = tokens[pos] if pos < len(tokens) else ","
                if op == ",":
                    reqs.append((key, "exists", frozenset()))
                elif op in ("=", "==", "!="):
                    pos += 1
                    value = ""
                    if pos < len(tokens) and tokens[pos] != ",":
                        value = ident("a label value")
                    _check_value(value)
                    reqs.append((key, "notin" if op == "!=" else "in", frozenset((value,))))
                elif op in ("in", "notin"):
                    pos += 1
                    if take() != "(":
                        raise SelectorError(f"expected '(' after {op!r}")
                    values: list[str] = []
                    while True:
                        tok = take()
                        if tok == ")" and not values:
                            break
                        if tok in (",", ")"):
                            values.append("")
                        else:
                            _check_value(tok)
                            values.append(tok)
                            tok = take()
                        if tok == ")":
                            break
                        if tok != ",":
                            raise SelectorError(f"expected ',' or ')' in the value list, found {tok!r}")
                    reqs.append((key, op, frozenset(values)))
                elif op in (">", "<"):
                    raise SelectorError(f"{op!r} isn't a valid label selector operator")
                else:
                    raise SelectorError(f"unexpected {op!r} after label key {key!r}")
            if pos < len(tokens):
                if tokens[pos] != ",":
                    raise SelectorError(f"expected ',' between requirements, found {tokens[pos]!r}")
                pos += 1
                if pos >= len(tokens):
                    raise SelectorError("selector ends with ','")
        return reqs

    def matches(self, labels: dict | None) -> bool:
        labels = labels or {}
        for key, op, values in self.requirements:
            if op == "exists":
                if key not in labels:
                    return False
            elif op == "!exists":
                if key in labels:
                    return False
            elif op == "in":
                if key not in labels or str(labels[key]) not in values:
                    return False
            elif key in labels and str(labels[key]) in values:  # notin
                return False
        return True


def parse(text: str) -> Selector:
    return Selector(text)
