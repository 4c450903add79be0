"""expr's lexer and parser: source text to a tree of tuples whose first item names their kind."""

from __future__ import annotations

import re
from typing import Callable

from pydns.expr.values import ExprError

MAX_NODES = 10_000  # as expr's default node limit

_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<num>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
       |(?:\d[\d_]*(?:\.\d[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<pointer>\#[A-Za-z_]\w*|\#)
  | (?P<name>[A-Za-z_$]\w*)
  | (?P<op>\?\.|\?\?|==|!=|<=|>=|&&|\|\||\*\*|\.\.|[-+*/%^<>!?:,.|;()\[\]{}=])
""", re.S | re.X)
WORD_OPS = {"not", "in", "or", "and", "matches", "contains", "startsWith", "endsWith", "let", "if", "else"}
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
        elif kind == "name" and text in WORD_OPS:
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


_BINARY = {"or": 10, "||": 10, "and": 15, "&&": 15, "==": 20, "!=": 20, "<": 20, ">": 20, "<=": 20, ">=": 20,
           "in": 20, "matches": 20, "contains": 20, "startsWith": 20, "endsWith": 20, "..": 25, "+": 30,
           "-": 30, "*": 60, "/": 60, "%": 60, "**": 100, "^": 100, "??": 500}
_UNARY = {"not": 50, "!": 50, "-": 90, "+": 90}
COMPARISONS = {"<", ">", "<=", ">="}
_NEGATABLE = {"in", "matches", "contains", "startsWith", "endsWith"}
# the builtins that take a predicate, and their arguments ("?": may be left out)
PREDICATES = {name: ("expr", "pred") for name in ("all", "none", "any", "one", "filter", "map", "find", "findIndex",
                                                  "findLast", "findLastIndex", "groupBy")}
PREDICATES.update(count=("expr", "pred?"), sum=("expr", "pred?"), sortBy=("expr", "pred", "expr?"),
                  reduce=("expr", "pred", "expr?"))


class Parser:
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
            elif op in COMPARISONS:
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
            if not (self.tok[0] == "op" and self.tok[1] in COMPARISONS):
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
            return self.postfix(self.node("array", self.items("]", lambda: self.expression(0))))
        if kind == "op" and value == "{":
            return self.postfix(self.node("map", self.items("}", self.pair)))
        raise ExprError(f"unexpected token {value!r}" if kind != "eof" else "unexpected end of expression")

    def items(self, closer: str, item: Callable) -> list:
        """``item()``s separated by commas (one may trail) up to ``closer``."""
        found: list = []
        while not self.at(closer):
            if found:
                self.expect(",")
                if self.at(closer):
                    break
            found.append(item())
        self.expect(closer)
        return found

    def pair(self) -> tuple:
        """``key: value`` in a map literal."""
        kind, key = self.tok
        if kind in ("lit", "name"):
            self.take()
            key_node = self.node("lit", str(key) if kind == "name" else key)
        elif self.at("("):
            key_node = self.expression(0)
        else:
            raise ExprError(f"a map key must be a quoted string, a number, a identifier, or an "
                            f"expression enclosed in parentheses (unexpected token {self._shown()})")
        self.expect(":")
        return key_node, self.expression(0)

    def call(self, name: str, args: list):
        """Arguments of ``name(...)``; ``args`` holds the left side of a ``|`` pipe."""
        self.expect("(")
        offset = len(args)
        if name in PREDICATES:
            for i, part in enumerate(PREDICATES[name][offset:]):
                if self.at(")"):
                    if part.endswith("?"):
                        break
                    raise ExprError(f"expected at least {len(PREDICATES[name]) - offset} arguments")
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


def parse(source: str):
    """The tree of ``source``; ExprError if it is not an expression."""
    return Parser(source).parse()
