"""The expression language of CoreDNS's ``template`` (``var``, ``expr``) and ``view`` plugins.

CoreDNS evaluates these with expr-lang (https://expr-lang.org).  This module reads the part of
that language a Corefile uses, checks it when the configuration is read, and evaluates it per
query, without ever handing text to Python's own ``eval``:

* literals (numbers, ``'...'``/``"..."``/`````...````` strings, ``true``/``false``/``nil``,
  arrays ``[...]``, maps ``{k: v}``), names, calls, ``a.b``, ``a?.b``, ``a[i]``, ``a[i:j]``;
* ``not``/``!``, unary ``-``/``+``, ``**``/``^``, ``*``, ``/``, ``%``, ``+``, ``-``, ``..``,
  comparisons (chained as ``a < b < c``), ``==``, ``!=``, ``in``, ``matches``, ``contains``,
  ``startsWith``, ``endsWith`` (each also as ``not in`` ...), ``and``/``&&``, ``or``/``||``,
  ``??``, ``c ? a : b``, ``if c {a} else {b}``, ``|`` pipes, ``let x = v; ...``;
* expr's builtins on strings, numbers and lists, the predicate ones (``all``, ``any``,
  ``filter``, ``map``... with ``#``, ``#index``, ``#acc`` and ``.field``), and the
  functions the host plugin gives (``Function``).

``compile_expr`` parses and type-checks as expr does with a typed environment: a syntax
error, an unknown name or function, a wrong number of arguments or operands of mismatched
types raise ``ExprError``, as ``expr.Compile`` fails.  ``Program.run`` raises ``ExprError``
for what fails while running (``int('x')``, an index out of range, a host function's error).
Work is bounded: ranges, ``repeat`` and the like stop at ``MAX_ITEMS``.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Callable

from pydns.wire import class_name, type_name

MAX_ITEMS = 1_000_000  # the most items a range, repeat or flatten may make
MAX_NODES = 10_000  # as expr's default node limit

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


# ---- lexer
_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<num>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
       |(?:\d[\d_]*(?:\.\d[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<pointer>\#[A-Za-z_]\w*|\#)
  | (?P<name>[A-Za-z_$]\w*)
  | (?P<op>\?\.|\?\?|==|!=|<=|>=|&&|\|\||\*\*|\.\.|[-+*/%^<>!?:,.|;()\[\]{}=])
""", re.S | re.X)
_WORD_OPS = {"not", "in", "or", "and", "matches", "contains", "startsWith", "endsWith", "let", "if", "else"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "`": "`"}
_STRING_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[0-7]{3}|.)", re.S)


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]

    def one(m):
        esc = m.group(1)
        if esc[0] in "uUx":
            return chr(int(esc[1:], 16))
        if esc[0].isdigit():
            return chr(int(esc, 8))
        if esc not in _ESCAPES:
            raise ExprError(f"invalid char escape \\{esc}")
        return _ESCAPES[esc]
    return _STRING_ESCAPE.sub(one, text[1:-1])


def _tokens(source: str) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise ExprError(f"unrecognized character: {source[pos]!r} (1:{pos + 1})")
        pos = m.end()
        kind, text = m.lastgroup, m.group()
        if kind == "space":
            continue
        if kind == "num":
            out.append(("lit", _number(text)))
        elif kind == "str":
            out.append(("lit", _unquote(text)))
        elif kind == "name" and text in _WORD_OPS:
            out.append(("op", text))
        else:
            out.append((kind, text))
    out.append(("eof", None))
    return out


def _number(text: str):
    value = text.replace("_", "")
    low = value.lower()
    if low[:2] in ("0x", "0o", "0b"):
        number = int(value, 0)
    elif "." in low or "e" in low:
        return float(value)
    else:
        number = int(value)
    if number >= 1 << 63:
        raise ExprError("integer literal is too large")
    return number


# ---- parser: nodes are tuples whose first item names their kind
_BINARY = {"or": 10, "||": 10, "and": 15, "&&": 15, "==": 20, "!=": 20, "<": 20, ">": 20, "<=": 20, ">=": 20,
           "in": 20, "matches": 20, "contains": 20, "startsWith": 20, "endsWith": 20, "..": 25, "+": 30,
           "-": 30, "*": 60, "/": 60, "%": 60, "**": 100, "^": 100, "??": 500}
_UNARY = {"not": 50, "!": 50, "-": 90, "+": 90}
_COMPARISONS = {"<", ">", "<=", ">="}
_NEGATABLE = {"in", "matches", "contains", "startsWith", "endsWith"}
# the builtins that take a predicate, and their arguments ("?": may be left out)
_PREDICATES = {name: ("expr", "pred") for name in ("all", "none", "any", "one", "filter", "map", "find", "findIndex",
                                                   "findLast", "findLastIndex", "groupBy")}
_PREDICATES.update(count=("expr", "pred?"), sum=("expr", "pred?"), sortBy=("expr", "pred", "expr?"),
                   reduce=("expr", "pred", "expr?"))


class _Parser:
    def __init__(self, source: str):
        self.tokens = _tokens(source)
        self.pos = 0
        self.depth = 0  # inside a predicate, where # and .field mean the current item
        self.nodes = 0

    @property
    def tok(self):
        return self.tokens[self.pos]

    def at(self, *values) -> bool:
        kind, value = self.tok
        return kind == "op" and value in values

    def take(self):
        tok = self.tokens[self.pos]
        if tok[0] != "eof":
            self.pos += 1
        return tok

    def expect(self, value: str) -> None:
        if not self.at(value):
            raise ExprError(f"unexpected token {self._shown()}, expected {value!r}")
        self.take()

    def _shown(self) -> str:
        kind, value = self.tok
        return "end of expression" if kind == "eof" else repr(value)

    def node(self, *parts):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExprError("compilation failed: expression exceeds maximum allowed nodes")
        return parts

    def parse(self):
        node = self.sequence()
        if self.tok[0] != "eof":
            raise ExprError(f"unexpected token {self._shown()}")
        return node

    def sequence(self):
        nodes = [self.expression(0)]
        while self.at(";"):
            self.take()
            if self.tok[0] == "eof" or self.at(")", "}"):
                break
            nodes.append(self.expression(0))
        return nodes[0] if len(nodes) == 1 else self.node("seq", nodes)

    def expression(self, precedence: int):
        if precedence == 0 and self.at("let"):
            self.take()
            kind, name = self.take()
            if kind != "name":
                raise ExprError("expected a variable name after let")
            self.expect("=")
            value = self.expression(0)
            self.expect(";")
            return self.node("let", name, value, self.sequence())
        if precedence == 0 and self.at("if"):
            return self.conditional_if()
        left = self.primary()
        previous = ""
        while self.tok[0] == "op":
            op, negate = self.tok[1], False
            if op == "not":
                following = self.tokens[self.pos + 1]
                if following[0] != "op" or following[1] not in _NEGATABLE:
                    raise ExprError(f"unexpected token {following[1]!r} after not")
                if _BINARY[following[1]] < precedence:
                    break
                self.take()
                op, negate = following[1], True
            if op not in _BINARY and op != "|" or _BINARY.get(op, 0) < precedence:
                break
            self.take()
            if op == "|":
                kind, name = self.take()
                if kind != "name":
                    raise ExprError("expected a function name after |")
                left = self.call(name, [left])
            elif previous == "??" and op != "??":
                raise ExprError(f"Operator ({op}) and coalesce expressions (??) cannot be mixed. "
                                "Wrap either by parentheses.")
            elif op in _COMPARISONS:
                left = self.comparison(left, op)
            else:
                right_assoc = op in ("**", "^")
                right = self.expression(_BINARY[op] + (0 if right_assoc else 1))
                left = self.node("binary", op, left, right)
                if negate:
                    left = self.node("unary", "not", left)
            previous = op
        if precedence == 0:
            while self.at("?"):
                self.take()
                if self.at(":"):
                    self.take()
                    left = self.node("cond", left, left, self.expression(0))
                else:
                    yes = self.expression(0)
                    self.expect(":")
                    left = self.node("cond", left, yes, self.expression(0))
        return left

    def comparison(self, left, op):
        root = None
        while True:
            right = self.expression(_BINARY[op] + 1)
            node = self.node("binary", op, left, right)
            root = node if root is None else self.node("binary", "&&", root, node)
            if not (self.tok[0] == "op" and self.tok[1] in _COMPARISONS):
                return root
            left, op = right, self.take()[1]

    def conditional_if(self):
        self.take()
        cond = self.expression(0)
        self.expect("{")
        yes = self.sequence()
        self.expect("}")
        self.expect("else")
        if self.at("if"):
            return self.node("cond", cond, yes, self.conditional_if())
        self.expect("{")
        no = self.sequence()
        self.expect("}")
        return self.node("cond", cond, yes, no)

    def primary(self):
        kind, value = self.tok
        if kind == "op" and value in _UNARY:
            self.take()
            return self.postfix(self.node("unary", value, self.expression(_UNARY[value])))
        if kind == "op" and value == "(":
            self.take()
            inner = self.sequence()
            self.expect(")")
            return self.postfix(inner)
        if self.depth and (kind == "pointer" or (kind == "op" and value == ".")):
            if kind == "pointer":
                self.take()
                return self.postfix(self.node("pointer", value[1:]))
            return self.postfix(self.node("pointer", ""))  # .field: the item's field
        self.take()
        if kind == "lit":
            return self.postfix(self.node("lit", value))
        if kind == "name":
            if value in ("true", "false"):
                return self.node("lit", value == "true")
            if value == "nil":
                return self.node("lit", None)
            if self.at("("):
                return self.postfix(self.call(value, []))
            return self.postfix(self.node("name", value))
        if kind == "op" and value == "[":
            items = []
            while not self.at("]"):
                if items:
                    self.expect(",")
                    if self.at("]"):
                        break
                items.append(self.expression(0))
            self.expect("]")
            return self.postfix(self.node("array", items))
        if kind == "op" and value == "{":
            pairs = []
            while not self.at("}"):
                if pairs:
                    self.expect(",")
                    if self.at("}"):
                        break
                key_kind, key = self.tok
                if key_kind in ("lit", "name"):
                    self.take()
                    key_node = self.node("lit", str(key) if key_kind == "name" else key)
                elif self.at("("):
                    key_node = self.expression(0)
                else:
                    raise ExprError(f"a map key must be a quoted string, a number, a identifier, or an "
                                    f"expression enclosed in parentheses (unexpected token {self._shown()})")
                self.expect(":")
                pairs.append((key_node, self.expression(0)))
            self.expect("}")
            return self.postfix(self.node("map", pairs))
        raise ExprError(f"unexpected token {value!r}" if kind != "eof" else "unexpected end of expression")

    def call(self, name: str, args: list):
        """Arguments of ``name(...)``; ``args`` holds the left side of a ``|`` pipe."""
        self.expect("(")
        offset = len(args)
        if name in _PREDICATES:
            for i, part in enumerate(_PREDICATES[name][offset:]):
                if self.at(")"):
                    if part.endswith("?"):
                        break
                    raise ExprError(f"expected at least {len(_PREDICATES[name]) - offset} arguments")
                if i > 0:
                    self.expect(",")
                args.append(self.predicate() if part.startswith("pred") else self.expression(0))
            if self.at(","):
                self.take()
        else:
            while not self.at(")"):
                if len(args) > offset:
                    self.expect(",")
                    if self.at(")"):
                        break
                args.append(self.expression(0))
        self.expect(")")
        return self.node("call", name, args)

    def predicate(self):
        braces = self.at("{")
        if braces:
            self.take()
        self.depth += 1
        body = self.sequence() if braces else self.expression(0)
        self.depth -= 1
        if braces:
            self.expect("}")
        return self.node("predicate", body)

    def postfix(self, node):
        while self.tok[0] == "op" and self.tok[1] in (".", "?.", "["):
            op = self.take()[1]
            optional = op == "?."
            if optional and self.at("["):
                op = self.take()[1]
            if op == "[":
                if self.at(":"):
                    self.take()
                    upper = None if self.at("]") else self.expression(0)
                    node = self.node("slice", node, None, upper)
                else:
                    index = self.expression(0)
                    if self.at(":"):
                        self.take()
                        upper = None if self.at("]") else self.expression(0)
                        node = self.node("slice", node, index, upper)
                    else:
                        node = self.node("member", node, index, optional)
                self.expect("]")
                continue
            kind, prop = self.take()
            if kind not in ("name", "op") or not re.fullmatch(r"[A-Za-z_]\w*", str(prop)):
                raise ExprError("expected name")
            if self.at("("):
                raise ExprError(f"method {prop} is not available")
            node = self.node("member", node, self.node("lit", prop), optional)
        return node


# ---- builtins: (parameter types or None for several forms, result type, implementation)
def _len(v):
    if isinstance(v, (str, list, dict)):
        return len(v)
    raise ExprError(f"invalid argument for len (type {_type_of(v)})")


def _to_int(v):
    if isinstance(v, bool):
        raise ExprError(f"invalid operation: int({_type_of(v)})")
    if isinstance(v, (int, float)):
        return _wrap(int(v)) if not isinstance(v, float) or math.isfinite(v) else -1 << 63
    if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v):
        value = int(v)
        if -1 << 63 <= value < 1 << 63:
            return value
    raise ExprError(f"invalid operation: int({go_format(v)})")


_FLOAT_TEXT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.I)


def _to_float(v):
    if _is_number(v):
        return float(v)
    if isinstance(v, str) and _FLOAT_TEXT.fullmatch(v):  # what Go's strconv.ParseFloat reads
        return float(v)
    raise ExprError(f"invalid operation: float({go_format(v)})")


def _round(v):
    """Half away from zero, as Go's math.Round."""
    x = float(_numbers([v])[0])
    return math.copysign(math.floor(abs(x) + 0.5), x)


def _mean(items):
    return sum(_numbers([items])) / len(items) if items else 0.0


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


def _numbers(args):
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
    if not items or not all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        raise ExprError("invalid argument: expected numbers")
    return items


def _median(items):
    items = sorted(_numbers([items]))
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
        if not any(_equal(item, o) for o in out):
            out.append(item)
    return out


def _take(items, n):
    return items[:max(n, 0)]


def _get(container, key):
    try:
        return _member(container, key, True)
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
        return _wrap(fn(*args))
    return run


def _shift(a, n):
    if n < 0:
        raise ExprError(f"invalid operation: negative shift count {n}")
    return a << min(n, 64)


BUILTINS: dict[str, tuple] = {
    "len": ((ANY,), INT, _len),
    "abs": ((ANY,), ANY, lambda v: abs(_numbers([v])[0])),
    "ceil": ((ANY,), FLOAT, lambda v: float(math.ceil(_numbers([v])[0]))),
    "floor": ((ANY,), FLOAT, lambda v: float(math.floor(_numbers([v])[0]))),
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
    "max": (None, ANY, lambda *a: max(_numbers(a))),
    "min": (None, ANY, lambda *a: min(_numbers(a))),
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
_ARITY = {"trim": (1, 2), "split": (2, 3), "splitAfter": (2, 3), "replace": (3, 4), "join": (1, 2),
          "max": (1, 99), "min": (1, 99), "concat": (1, 99), "sort": (1, 2)}
# expr's other builtins: reserved names, and an error at compile time here
UNAVAILABLE = {"type", "groupBy", "sortBy", "toJSON", "fromJSON", "now", "duration", "date", "timezone",
               "toPairs", "fromPairs"}
RESERVED = set(BUILTINS) | set(_PREDICATES) | UNAVAILABLE | _WORD_OPS | {"true", "false", "nil", "$env"}


# ---- values as Go prints and compares them
def _type_of(v) -> str:
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
    if isinstance(v, list):
        return "[" + " ".join(go_format(i) for i in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_format(k)}:{go_format(v[k])}" for k in sorted(v, key=str)) + "]"
    return str(v)


def _wrap(n: int) -> int:
    """Go's int: 64 bits, wrapping."""
    return ((n + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63) if not -1 << 63 <= n < 1 << 63 else n


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a, b) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b
    if type(a) is not type(b):
        return False
    return a == b


def truthy(v) -> bool:
    return v is True


# ---- type checking
def _mismatch(op, left, right):
    return ExprError(f"invalid operation: {op} (mismatched types {left} and {right})")


def _binary_type(op: str, left: str, right: str, node) -> str:
    unknown = ANY in (left, right)
    nums = left in NUMBERS and right in NUMBERS
    if op in ("==", "!="):
        if left == right or nums or unknown or NIL in (left, right):
            return BOOL
    elif op in ("or", "||", "and", "&&"):
        if left in (BOOL, ANY) and right in (BOOL, ANY):
            return BOOL
    elif op in _COMPARISONS:
        if nums or (left == right == STRING) or (unknown and {left, right} <= {ANY, INT, FLOAT, STRING}):
            return BOOL
    elif op in ("-", "*", "+"):
        if nums:
            return INT if left == right == INT else FLOAT
        if op == "+" and left == right == STRING:
            return STRING
        if unknown and {left, right} <= ({ANY, INT, FLOAT, STRING} if op == "+" else {ANY, INT, FLOAT}):
            return ANY
    elif op in ("/", "**", "^"):
        if nums or (unknown and {left, right} <= {ANY, INT, FLOAT}):
            return FLOAT
    elif op == "%":
        if {left, right} <= {INT, ANY}:
            return INT
    elif op == "in":
        if right in (MAP, ARRAY, ANY) or (right == STRING and left == ANY):
            return BOOL
    elif op in ("matches", "contains", "startsWith", "endsWith"):
        if op == "matches" and node[3][0] == "lit" and isinstance(node[3][1], str):
            _regex(node[3][1])
        if {left, right} <= {STRING, ANY}:
            return BOOL
    elif op == "..":
        if {left, right} <= {INT, ANY}:
            return ARRAY
    elif op == "??":
        return right if left == NIL else left if right == NIL or left == right else ANY
    raise _mismatch(op, left, right)


_REGEX_CACHE: dict[str, re.Pattern] = {}
_GO_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")


def _regex(pattern: str) -> re.Pattern:
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


class _Checker:
    def __init__(self, functions: dict[str, Function], variables: dict[str, str]):
        self.functions, self.variables = functions, variables
        self.used: set[str] = set()

    def check(self, node, scope: dict, item: bool) -> str:
        kind = node[0]
        if kind == "lit":
            return _type_of(node[1])
        if kind == "name":
            name = node[1]
            if name in scope:
                return scope[name]
            if name in self.variables:
                self.used.add(name)
                return self.variables[name]
            if name in self.functions or name in BUILTINS:
                return ANY  # a function as a value: only good for calling, as expr says at runtime
            raise ExprError(f"unknown name {name}")
        if kind == "pointer":
            return ANY
        if kind == "array":
            for element in node[1]:
                self.check(element, scope, item)
            return ARRAY
        if kind == "map":
            for key, value in node[1]:
                self.check(key, scope, item)
                self.check(value, scope, item)
            return MAP
        if kind == "unary":
            operand = self.check(node[2], scope, item)
            if node[1] in ("not", "!"):
                if operand not in (BOOL, ANY):
                    raise ExprError(f"invalid operation: {node[1]} (mismatched type {operand})")
                return BOOL
            if operand not in (INT, FLOAT, ANY):
                raise ExprError(f"invalid operation: {node[1]} (mismatched type {operand})")
            return operand
        if kind == "binary":
            return _binary_type(node[1], self.check(node[2], scope, item), self.check(node[3], scope, item), node)
        if kind == "cond":
            cond = self.check(node[1], scope, item)
            if cond not in (BOOL, ANY):
                raise ExprError(f"non-bool expression (type {cond}) used as condition")
            yes, no = self.check(node[2], scope, item), self.check(node[3], scope, item)
            return yes if yes == no else ANY
        if kind == "member":
            container, key = self.check(node[1], scope, item), self.check(node[2], scope, item)
            if container in (ARRAY, MAP, ANY, NIL) or (container == STRING and key in (INT, ANY)):
                return ANY
            raise ExprError(f"type {container} has no field {go_format(node[2][1])}" if node[2][0] == "lit"
                            else f"type {container} does not support indexing")
        if kind == "slice":
            container = self.check(node[1], scope, item)
            for bound in node[2:]:
                if bound is not None and self.check(bound, scope, item) not in (INT, ANY):
                    raise ExprError("non-integer slice index")
            if container not in (ARRAY, STRING, ANY):
                raise ExprError(f"cannot slice {container}")
            return container
        if kind == "seq":
            return [self.check(n, scope, item) for n in node[1]][-1]
        if kind == "let":
            if node[1] in scope or node[1] in self.variables or node[1] in self.functions or node[1] in RESERVED:
                raise ExprError(f"cannot redeclare {node[1]}")
            inner = dict(scope)
            inner[node[1]] = self.check(node[2], scope, item)
            return self.check(node[3], inner, item)
        if kind == "predicate":
            return self.check(node[1], scope, True)
        if kind == "call":
            return self.call(node, scope, item)
        raise ExprError(f"unknown node {kind}")

    def call(self, node, scope: dict, item: bool) -> str:
        name, args = node[1], node[2]
        types = [self.check(a, scope, item) for a in args]
        if name in self.functions and name not in _PREDICATES:
            fn = self.functions[name]
            self.used.add(name)
            if fn.params is not None:
                if len(args) != len(fn.params):
                    raise ExprError(f"invalid number of arguments for {name} (expected {len(fn.params)}, "
                                    f"got {len(args)})")
                for want, got in zip(fn.params, types):
                    if want != ANY and got not in (want, ANY):
                        raise ExprError(f"cannot use {got} as argument (type {want}) to call {name}")
            return fn.result
        if name in UNAVAILABLE:
            raise ExprError(f"function {name} is not available in pydns's expressions")
        if name in _PREDICATES:
            if types[0] not in (ARRAY, MAP, ANY):
                raise ExprError(f"builtin {name} takes only array (got {types[0]})")
            if name in ("all", "none", "any", "one", "filter") and len(types) > 1 and types[1] not in (BOOL, ANY):
                raise ExprError(f"predicate should return boolean (got {types[1]})")
            return {"all": BOOL, "none": BOOL, "any": BOOL, "one": BOOL, "filter": ARRAY, "map": ARRAY,
                    "count": INT, "findIndex": INT, "findLastIndex": INT}.get(name, ANY)
        if name in BUILTINS:
            params, result, _ = BUILTINS[name]
            low, high = _ARITY.get(name, (len(params or ()), len(params or ())))
            if not low <= len(args) <= high:
                raise ExprError(f"invalid number of arguments for {name} (expected {low}, got {len(args)})")
            for want, got in zip(params or (), types):
                if want != ANY and got not in (want, ANY):
                    raise ExprError(f"cannot use {got} as argument (type {want}) to call {name}")
            if name == "len" and types[0] not in (STRING, ARRAY, MAP, ANY):
                raise ExprError(f"invalid argument for len (type {types[0]})")
            return result
        if name in scope or name in self.variables:
            return ANY
        raise ExprError(f"unknown func {name}" if name not in self.functions else f"{name} is not callable")


# ---- evaluation
class Program:
    """A compiled expression: ``run(context, variables)`` evaluates it."""

    def __init__(self, source: str, tree, result: str, used: set[str], functions: dict[str, Function]):
        self.source, self.tree, self.result = source, tree, result
        self.functions = functions
        # reads the request beyond its question (the client, its metadata...)
        self.per_query = any(functions[n].per_query for n in used if n in functions)
        self.variables = {n for n in used if n not in functions}
        self.where = ""  # FILE:LINE of the configuration it came from, for the host's messages

    def run(self, context, variables: dict):
        try:
            return _Run(self.functions, context, variables).eval(self.tree, {})
        except ExprError:
            raise
        except RecursionError:
            raise ExprError("expression nests too deep") from None
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, ZeroDivisionError,
                OverflowError) as exc:
            raise ExprError(str(exc) or type(exc).__name__) from None


def compile_expr(source: str, functions: dict[str, Function], variables: dict[str, str]) -> Program:
    """Parse and check ``source``; ``variables`` maps the names in scope to their types."""
    tree = _Parser(source).parse()
    checker = _Checker(functions, variables)
    try:
        result = checker.check(tree, {}, False)
    except RecursionError:
        raise ExprError("expression nests too deep") from None
    return Program(source, tree, result, checker.used, functions)


def _member(container, key, optional: bool):
    if container is None:
        if optional:
            return None
        raise ExprError(f"cannot fetch {go_format(key)} from nil")
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, (list, str)):
        if not _is_number(key) or int(key) != key:
            raise ExprError(f"cannot use {_type_of(key)} as index to {_type_of(container)}")
        index = int(key)
        size = len(container)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise ExprError(f"index out of range: {int(key)} (array length is {size})")
        return container[index] if isinstance(container, list) else ord(container[index])
    raise ExprError(f"cannot fetch {go_format(key)} from {_type_of(container)}")


class _Run:
    def __init__(self, functions, context, variables):
        self.functions, self.context, self.variables = functions, context, variables
        self.items: list[tuple] = []  # (item, index, accumulator) of the predicates being run

    def eval(self, node, scope):
        return getattr(self, "_" + node[0])(node, scope)

    def _lit(self, node, scope):
        return node[1]

    def _name(self, node, scope):
        name = node[1]
        if name in scope:
            return scope[name]
        if name in self.variables:
            return self.variables[name]
        raise ExprError(f"{name} is a function: call it")

    def _pointer(self, node, scope):
        item, index, acc = self.items[-1]
        if node[1] in ("", "index", "acc"):
            return {"": item, "index": index, "acc": acc}[node[1]]
        return _member(item, node[1], False)

    def _array(self, node, scope):
        return [self.eval(n, scope) for n in node[1]]

    def _map(self, node, scope):
        return {self.eval(k, scope): self.eval(v, scope) for k, v in node[1]}

    def _seq(self, node, scope):
        value = None
        for n in node[1]:
            value = self.eval(n, scope)
        return value

    def _let(self, node, scope):
        inner = dict(scope)
        inner[node[1]] = self.eval(node[2], scope)
        return self.eval(node[3], inner)

    def _cond(self, node, scope):
        cond = self.eval(node[1], scope)
        if not isinstance(cond, bool):
            raise ExprError(f"non-bool value used in condition: {go_format(cond)}")
        return self.eval(node[2] if cond else node[3], scope)

    def _unary(self, node, scope):
        value = self.eval(node[2], scope)
        op = node[1]
        if op in ("not", "!"):
            if not isinstance(value, bool):
                raise ExprError(f"invalid operation: {op} {_type_of(value)}")
            return not value
        if not _is_number(value):
            raise ExprError(f"invalid operation: {op} {_type_of(value)}")
        return _wrap(-value) if op == "-" and isinstance(value, int) else -value if op == "-" else value

    def _member(self, node, scope):
        container = self.eval(node[1], scope)
        if container is None and node[3]:
            return None
        return _member(container, self.eval(node[2], scope), node[3])

    def _slice(self, node, scope):
        container = self.eval(node[1], scope)
        if not isinstance(container, (list, str)):
            raise ExprError(f"cannot slice {_type_of(container)}")
        size = len(container)
        low = 0 if node[2] is None else self.eval(node[2], scope)
        high = size if node[3] is None else self.eval(node[3], scope)
        if not (isinstance(low, int) and isinstance(high, int)):
            raise ExprError("non-integer slice index")
        low, high = (low + size if low < 0 else low), (high + size if high < 0 else high)
        low, high = min(max(low, 0), size), min(max(high, 0), size)
        return container[low:max(low, high)]

    def _binary(self, node, scope):
        op = node[1]
        left = self.eval(node[2], scope)
        if op in ("or", "||", "and", "&&"):
            if not isinstance(left, bool):
                raise ExprError(f"invalid operation: {op} on {_type_of(left)}")
            if left == (op in ("or", "||")):
                return left
            right = self.eval(node[3], scope)
            if not isinstance(right, bool):
                raise ExprError(f"invalid operation: {op} on {_type_of(right)}")
            return right
        if op == "??":
            return left if left is not None else self.eval(node[3], scope)
        right = self.eval(node[3], scope)
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        if op == "in":
            if isinstance(right, dict):
                return left in right
            if isinstance(right, list):
                return any(_equal(left, r) for r in right)
            if right is None:
                return False
            raise ExprError(f"invalid operation: in (mismatched types {_type_of(left)} and {_type_of(right)})")
        if op in ("matches", "contains", "startsWith", "endsWith"):
            if not (isinstance(left, str) and isinstance(right, str)):
                raise _mismatch(op, _type_of(left), _type_of(right))
            if op == "matches":
                return _regex(right).search(left) is not None
            return {"contains": right in left, "startsWith": left.startswith(right),
                    "endsWith": left.endswith(right)}[op]
        nums = _is_number(left) and _is_number(right)
        if op in _COMPARISONS:
            if not (nums or isinstance(left, str) and isinstance(right, str)):
                raise _mismatch(op, _type_of(left), _type_of(right))
            return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
        if op == "+" and isinstance(left, str) and isinstance(right, str):
            return left + right
        if op == ".." and isinstance(left, int) and isinstance(right, int) and nums:
            if right - left >= MAX_ITEMS:
                raise ExprError("memory budget exceeded")
            return list(range(left, right + 1))
        if not nums:
            raise _mismatch(op, _type_of(left), _type_of(right))
        both_int = isinstance(left, int) and isinstance(right, int)
        if op in ("/", "**", "^"):
            if op == "/":
                if right == 0:
                    return math.copysign(math.inf, left) if left else math.nan
                return left / right
            try:
                return math.pow(left, right)
            except (OverflowError, ValueError):
                return math.inf if left > 0 else math.nan
        if op == "%":
            if not both_int:
                raise _mismatch(op, _type_of(left), _type_of(right))
            if right == 0:
                raise ExprError("integer divide by zero")
            return int(math.fmod(left, right))  # Go's remainder takes the dividend's sign
        value = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right}[op]()
        return _wrap(value) if both_int else float(value)

    def _call(self, node, scope):
        name, args = node[1], node[2]
        if name in _PREDICATES:
            return self._predicate_call(name, args, scope)
        values = [self.eval(a, scope) for a in args]
        if name in self.functions:
            return self.functions[name].impl(self.context, *values)
        if name in BUILTINS:
            params = BUILTINS[name][0] or ()
            for want, value in zip(params, values):
                if want in (STRING, INT) and _type_of(value) != want:
                    raise ExprError(f"invalid argument for {name}: {go_format(value)} is not {want}")
            return BUILTINS[name][2](*values)
        raise ExprError(f"{name} is not a function")

    def _predicate_call(self, name, args, scope):
        collection = self.eval(args[0], scope)
        if isinstance(collection, dict):
            collection = list(collection.values())
        if not isinstance(collection, list):
            raise ExprError(f"cannot iterate over {_type_of(collection)}")
        body = args[1] if len(args) > 1 else None

        def run(item, index, acc=None):
            self.items.append((item, index, acc))
            try:
                return self.eval(body[1], scope) if body is not None else item
            finally:
                self.items.pop()

        def test(item, index) -> bool:
            value = run(item, index)
            if not isinstance(value, bool):
                raise ExprError(f"predicate should return boolean (got {_type_of(value)})")
            return value

        pairs = list(enumerate(collection))
        if name == "all":
            return all(test(v, i) for i, v in pairs)
        if name == "none":
            return not any(test(v, i) for i, v in pairs)
        if name == "any":
            return any(test(v, i) for i, v in pairs)
        if name == "one":
            return sum(1 for i, v in pairs if test(v, i)) == 1
        if name == "filter":
            return [v for i, v in pairs if test(v, i)]
        if name == "map":
            return [run(v, i) for i, v in pairs]
        if name == "count":
            return sum(1 for i, v in pairs if test(v, i))
        if name == "sum":
            values = [run(v, i) for i, v in pairs]
            return sum(_numbers(values)) if values else 0
        if name in ("find", "findIndex"):
            for i, v in pairs:
                if test(v, i):
                    return v if name == "find" else i
            return None if name == "find" else -1
        if name in ("findLast", "findLastIndex"):
            for i, v in reversed(pairs):
                if test(v, i):
                    return v if name == "findLast" else i
            return None if name == "findLast" else -1
        if name == "reduce":
            if len(args) > 2:
                acc, start = self.eval(args[2], scope), 0
            elif collection:
                acc, start = collection[0], 1
            else:
                raise ExprError("reduce of empty array with no initial value")
            for i, v in pairs[start:]:
                acc = run(v, i, acc)
            return acc
        raise ExprError(f"function {name} is not available in pydns's expressions")


# ---- CoreDNS's functions on the query (its plugin/pkg/expression), for template and view.
# Each takes a context whose ``req`` is the pydns.wire.Request being answered.
def _incidr(ctx, ip: str, cidr: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ExprError("first argument is not an IP address") from None
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ExprError(f"invalid CIDR address: {cidr}") from None
    if address.version == 6 and address.ipv4_mapped is not None and network.version == 4:
        address = address.ipv4_mapped  # as Go's net.IP.To4 reads it
    return address.version == network.version and address in network


def metadata_value(req, label: str) -> str:
    """The *metadata* plugin's value for ``label`` on this query, or ""."""
    values = getattr(req, "metadata", None) or {}
    value = values.get(str(label), "")
    return str(value() if callable(value) else value)


def _listener(req) -> tuple[str, str]:
    """(address, port) of the listener the query came in on, from its ``dns://host:port`` label."""
    local = str(req.local or "")
    host, _, port = local.removeprefix("dns://").rpartition(":")
    return host.strip("[]"), port


def query_functions() -> dict[str, Function]:
    """name(), type(), client_ip(), incidr(), metadata()... as CoreDNS's expressions have them."""
    def remote(ctx) -> tuple:
        return ctx.req.remote or ("", "")

    return {
        "name": Function(lambda ctx: ctx.req.lname, (), STRING),
        "type": Function(lambda ctx: type_name(ctx.req.qtype), (), STRING),
        "class": Function(lambda ctx: class_name(ctx.req.qclass), (), STRING),
        "proto": Function(lambda ctx: ctx.req.proto, (), STRING, per_query=True),
        "size": Function(lambda ctx: len(ctx.req.data), (), INT, per_query=True),
        "client_ip": Function(lambda ctx: str(remote(ctx)[0]), (), STRING, per_query=True),
        "port": Function(lambda ctx: str(remote(ctx)[1]), (), STRING, per_query=True),
        "id": Function(lambda ctx: ctx.req.id, (), INT, per_query=True),
        "opcode": Function(lambda ctx: ctx.req.opcode, (), INT, per_query=True),
        "do": Function(lambda ctx: bool(ctx.req.do), (), BOOL, per_query=True),
        "bufsize": Function(lambda ctx: 65535 if ctx.req.proto == "tcp" else max(ctx.req.edns_size, 512),
                            (), INT, per_query=True),
        "server_ip": Function(lambda ctx: _listener(ctx.req)[0], (), STRING, per_query=True),
        "server_port": Function(lambda ctx: _listener(ctx.req)[1], (), STRING, per_query=True),
        "incidr": Function(_incidr, (STRING, STRING), BOOL),
        "metadata": Function(lambda ctx, label: metadata_value(ctx.req, label), (STRING,), STRING, per_query=True),
    }
