"""The part of Go's text/template that the template plugin's records are written in.

The template plugin compiles each record with ``compile_template`` at setup (where a
construct outside this subset is an error) and renders it per query.

Supported, as text/template defines them: literal text; actions ``{{ ... }}`` with
``{{-``/``-}}`` trimming and ``{{/* comments */}}``; field chains (``.Name``, ``.Group.a``,
``$.Zone``, ``$x.Field``, ``(pipeline).Field``); string, raw string, character, number,
``true``/``false``/``nil`` literals; commands with arguments and ``|`` pipelines; method
calls on the data (``.Meta "kubernetes/client-namespace"``); ``$variables`` (``$x := ...``,
``$x = ...``, ``$`` the data); ``if``/``else if``/``else``, ``with``/``else with``,
``range`` (over lists, maps in key order and integers, with ``$i, $v :=``, ``break``,
``continue``) and ``end``; the functions ``and``, ``or``, ``not``, ``eq``, ``ne``, ``lt``,
``le``, ``gt``, ``ge``, ``index``, ``len``, ``slice``, ``print``, ``printf``, ``println``,
``html``, ``urlquery`` and ``parseInt``.  Not supported (an error at setup): ``define``,
``template``, ``block``, ``call`` and ``js``.

A rendering stops with TemplateError once it has written ``MAX_OUTPUT`` characters or run
``MAX_STEPS`` loop iterations, so no template can make a query expensive.
"""

from __future__ import annotations

import html
import re
import urllib.parse

from pydns.expr import go_format

MAX_OUTPUT = 65535  # characters one record may render to: more than any record can hold
MAX_STEPS = 10000  # range iterations in one rendering

_DELIM = re.compile(r"\{\{(-[ \t\r\n])?")
_ACTION_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n]+)
  | (?P<close>-?\}\})
  | (?P<comment>/\*.*?\*/)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F_]+|0[oObB][0-9_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|(),])
""", re.S | re.X)
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "'": "'", "\\": "\\", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
            "v": "\v", "0": "\0"}
_UNSUPPORTED = {"define", "template", "block", "call", "js"}
_TRIM = " \t\r\n"


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


# ---- functions
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


# ---- parsing: a template is a list of nodes
#   str                                   literal text
#   ("action", pipe)                      {{ pipeline }}
#   ("if"|"with"|"range", pipe, body, else_body)
#   ("break",), ("continue",)
# pipe: (declared names, "decl"|"assign"|None, commands); a command is a list of operands:
#   ("lit", v), ("dot",), ("var", name), ("func", name), ("pipe", pipe), ("chain", operand, [fields])
class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = self._lex()
        self.pos = 0
        self.fields: set[str] = set()
        self.scopes: list[list[str]] = [["$"]]
        self.root_dot = [True]  # is the dot the data here (outside range/with bodies)?
        self.loops = 0

    def _lex(self) -> list:
        """Text and actions: literal strings and, per action, (its tokens) with trimming applied."""
        out: list = []
        pos = 0
        trim_next = False
        while True:
            m = _DELIM.search(self.text, pos)
            literal = self.text[pos:m.start() if m else len(self.text)]
            if trim_next:
                literal = literal.lstrip(_TRIM)
            if m and m.group(1):
                literal = literal.rstrip(_TRIM)
            if literal:
                out.append(literal)
            if not m:
                return out
            tokens, pos, trim_next = self._action(m.end())
            if tokens is not None:  # None: a comment
                out.append(tokens)

    def _action(self, pos: int) -> tuple[list | None, int, bool]:
        tokens: list | None = []
        spaced = True
        while True:
            m = _ACTION_TOKEN.match(self.text, pos)
            if m is None:
                if pos >= len(self.text):
                    raise TemplateError("unclosed action")
                raise TemplateError(f"unexpected {self.text[pos]!r} in action")
            kind, value = m.lastgroup, m.group()
            pos = m.end()
            if kind == "close":
                if value.startswith("-") and not spaced:
                    raise TemplateError("unexpected '-' in action")
                return tokens, pos, value.startswith("-")
            if kind == "space":
                spaced = True
                continue
            if kind == "comment":
                if tokens:
                    raise TemplateError("comment must be the whole action")
                end = _ACTION_TOKEN.match(self.text, pos)
                if end and end.lastgroup == "space":
                    end = _ACTION_TOKEN.match(self.text, end.end())
                if not end or end.lastgroup != "close":
                    raise TemplateError("comment ends before closing delimiter")
                return None, end.end(), end.group().startswith("-")
            tokens.append((kind, value, spaced))
            spaced = False

    # -- structure
    def parse(self) -> list:
        body, stop = self.list()
        if stop is not None:
            raise TemplateError(f"unexpected {{{{{stop[0][1]}}}}}")
        return body

    def list(self) -> tuple[list, list | None]:
        """Nodes up to an {{else}} or {{end}} (returned as the stop's tokens) or the end."""
        nodes: list = []
        while self.pos < len(self.tokens):
            item = self.tokens[self.pos]
            self.pos += 1
            if isinstance(item, str):
                nodes.append(item)
                continue
            if not item:
                raise TemplateError("missing value for command")
            head = item[0]
            word = head[1] if head[0] == "ident" else None
            if word in ("else", "end"):
                return nodes, item
            if word in ("if", "with", "range"):
                nodes.append(self.control(word, item[1:]))
            elif word in ("break", "continue"):
                if not self.loops:
                    raise TemplateError(f"{{{{{word}}}}} outside {{{{range}}}}")
                if len(item) > 1:
                    raise TemplateError(f"unexpected {item[1][1]!r} in {word}")
                nodes.append((word,))
            elif word in _UNSUPPORTED:
                raise TemplateError(f"'{word}' is not supported in record templates")
            else:
                nodes.append(("action", self.pipe(item)))
        return nodes, None

    def control(self, word: str, tokens: list):
        self.scopes.append([])  # the pipeline's variables reach to this control's {{end}}
        pipe = self.pipe(tokens, in_range=word == "range")
        self.root_dot.append(self.root_dot[-1] if word == "if" else False)
        self.loops += word == "range"
        body, stop = self.list()
        self.loops -= word == "range"
        self.root_dot.pop()
        if stop is None:
            raise TemplateError("unexpected EOF")
        else_body: list = []
        if stop[0][1] == "else":
            rest = stop[1:]
            if rest and rest[0][0] == "ident" and rest[0][1] == word and word in ("if", "with"):
                # {{else if ...}}: an if inside the else, whose {{end}} ends this one too
                else_body = [self.control(word, rest[1:])]
            elif rest:
                raise TemplateError(f"unexpected {rest[0][1]!r} in else")
            else:
                else_body = self.list_to_end()
        elif len(stop) > 1:
            raise TemplateError(f"unexpected {stop[1][1]!r} in end")
        self.scopes.pop()
        return (word, pipe, body, else_body)

    def list_to_end(self) -> list:
        body, stop = self.list()
        if stop is None:
            raise TemplateError("unexpected EOF")
        if stop[0][1] != "end" or len(stop) > 1:
            raise TemplateError(f"expected end; found {' '.join(t[1] for t in stop)}")
        return body

    # -- pipelines
    def pipe(self, tokens: list, in_range: bool = False):
        names: list[str] = []
        mode = None
        rest = tokens
        var_count = 0
        while var_count < len(rest) and rest[var_count][0] == "var":
            var_count += 1
            if var_count < len(rest) and rest[var_count][0] == "punct" and rest[var_count][1] == ",":
                var_count += 1
                continue
            break
        candidates = [t[1] for t in rest[:var_count] if t[0] == "var"]
        if candidates and var_count < len(rest) and rest[var_count][0] in ("decl", "assign"):
            if len(candidates) > (2 if in_range else 1):
                raise TemplateError("too many declarations in command")
            mode = rest[var_count][0]
            names = candidates
            rest = rest[var_count + 1:]
            if mode == "assign":
                for name in names:
                    self._known(name)
        commands = self.commands(rest)
        if mode == "decl":
            self.scopes[-1].extend(names)
        return (names, mode, commands)

    def _known(self, name: str) -> None:
        if not any(name in scope for scope in self.scopes):
            raise TemplateError(f'undefined variable "{name}"')

    def commands(self, tokens: list) -> list:
        commands: list[list] = [[]]
        i = 0
        while i < len(tokens):
            kind, value, spaced = tokens[i]
            if kind == "punct" and value == "|":
                commands.append([])
                i += 1
                continue
            operand, i = self.operand(tokens, i)
            commands[-1].append(operand)
        if any(not c for c in commands):
            raise TemplateError("missing value for command")
        if any(command[0] == ("lit", None) for command in commands):
            raise TemplateError("nil is not a command")
        return commands

    def operand(self, tokens: list, i: int):
        kind, value, _ = tokens[i]
        i += 1
        if kind == "str":
            node = ("lit", _unquote(value))
        elif kind == "raw":
            node = ("lit", value[1:-1])
        elif kind == "char":
            node = ("lit", ord(_unquote(value)))
        elif kind == "num":
            node = ("lit", _number(value))
        elif kind == "dot":
            node = ("dot",)
            if self.root_dot[-1]:
                self.fields.add("*")
        elif kind == "field":
            node = ("chain", ("dot",), [value[1:]])
            if self.root_dot[-1]:
                self.fields.add(value[1:])
        elif kind == "var":
            self._known(value)
            node = ("var", value)
        elif kind == "ident":
            if value in ("true", "false"):
                node = ("lit", value == "true")
            elif value == "nil":
                node = ("lit", None)
            elif value in _UNSUPPORTED:
                raise TemplateError(f"'{value}' is not supported in record templates")
            elif value in ("if", "else", "end", "range", "with", "break", "continue"):
                raise TemplateError(f"unexpected <{value}> in command")
            elif value not in FUNCTIONS:
                raise TemplateError(f'function "{value}" not defined')
            else:
                node = ("func", value)
        elif kind == "punct" and value == "(":
            depth, j = 1, i
            while j < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[j][1], 0) if tokens[j][0] == "punct" else 0
                j += 1
            if depth:
                raise TemplateError("unclosed left paren")
            node = ("pipe", self.pipe(tokens[i:j - 1]))
            i = j
        else:
            raise TemplateError(f"unexpected {value!r} in operand")
        fields = []
        while i < len(tokens) and tokens[i][0] == "field" and not tokens[i][2]:  # .X straight after
            fields.append(tokens[i][1][1:])
            i += 1
        if fields:
            if node[0] == "var" and node[1] == "$":
                self.fields.add(fields[0])
            if node[0] == "chain":
                node = ("chain", node[1], node[2] + fields)
            else:
                node = ("chain", node, fields)
        elif node[0] == "var" and node[1] == "$":
            self.fields.add("*")
        return node, i


def _unquote(text: str) -> str:
    def one(m):
        esc = m.group(1)
        if esc[0] in "xuU":
            return chr(int(esc[1:], 16))
        if esc[0] in "01234567" and len(esc) == 3:
            return chr(int(esc, 8))
        return _ESCAPES.get(esc, esc)
    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", one, text[1:-1])


def _number(text: str):
    clean = text.replace("_", "")
    body = clean.lstrip("+-").lower()
    if body[:2] in ("0x", "0o", "0b"):
        return int(clean, 0)
    if any(c in body for c in ".e"):
        return float(clean)
    return int(clean, 10) if not (len(body) > 1 and body[0] == "0") else int(clean, 8)


# ---- execution
class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Run:
    def __init__(self, data):
        self.data = data
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.vars: list[tuple[str, object]] = [("$", data)]

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise TemplateError(f"output is longer than {MAX_OUTPUT} characters")
        self.out.append(text)

    def walk(self, nodes: list, dot) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.write(node)
                continue
            kind = node[0]
            if kind == "action":
                value = self.pipe(node[1], dot)
                if node[1][1] is None:
                    self.write(go_string(value))
            elif kind == "break":
                raise _Break
            elif kind == "continue":
                raise _Continue
            else:
                mark = len(self.vars)
                try:
                    self.control(node, dot)
                finally:
                    del self.vars[mark:]

    def control(self, node, dot) -> None:
        kind, pipe, body, else_body = node
        if kind == "range":
            self.range(pipe, body, else_body, dot)
            return
        value = self.pipe(pipe, dot)
        if truth(value):
            self.walk(body, value if kind == "with" else dot)
        else:
            self.walk(else_body, dot)

    def range(self, pipe, body, else_body, dot) -> None:
        names, mode, commands = pipe
        value = self.pipe((names, None, commands), dot)
        if isinstance(value, dict):
            pairs = [(k, value[k]) for k in sorted(value, key=str)]
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(max(0, min(value, MAX_STEPS + 1)))]
        elif value is None:
            pairs = []
        else:
            raise TemplateError(f"range can't iterate over {go_format(value)}")
        if not pairs:
            self.walk(else_body, dot)
            return
        mark = len(self.vars)
        for key, item in pairs:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise TemplateError(f"more than {MAX_STEPS} range iterations")
            del self.vars[mark:]
            if len(names) == 1:
                self._set(names[0], item, mode)
            elif len(names) == 2:
                self._set(names[0], key, mode)
                self._set(names[1], item, mode)
            try:
                self.walk(body, item)
            except _Continue:
                continue
            except _Break:
                break

    def _set(self, name: str, value, mode) -> None:
        if mode == "assign":
            for i in range(len(self.vars) - 1, -1, -1):
                if self.vars[i][0] == name:
                    self.vars[i] = (name, value)
                    return
        self.vars.append((name, value))

    def _var(self, name: str):
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                return self.vars[i][1]
        raise TemplateError(f'undefined variable "{name}"')

    def pipe(self, pipe, dot):
        names, mode, commands = pipe
        value = _NOTHING
        for command in commands:
            value = self.command(command, dot, value)
        if names and mode is not None:
            self._set(names[0], value, mode)
        return value

    def command(self, command: list, dot, piped):
        head, *rest = command
        if head[0] == "func":
            name = head[1]
            if name in ("and", "or"):
                return self._and_or(name, rest, dot, piped)
            args = [self.operand(op, dot) for op in rest]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return FUNCTIONS[name](*args)
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"error calling {name}: {exc}") from None
        if head[0] == "chain" and (rest or piped is not _NOTHING):
            method = self.operand(head, dot)
            if callable(method):
                args = [self.operand(op, dot) for op in rest] + ([] if piped is _NOTHING else [piped])
                return _call(method, head, args)
        if rest or piped is not _NOTHING:
            raise TemplateError(f"can't give argument to non-function {_shown(head)}")
        value = self.operand(head, dot)
        return _call(value, head, []) if callable(value) else value

    def _and_or(self, name: str, operands: list, dot, piped):
        if not operands and piped is _NOTHING:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        value = None
        thunks = [lambda op=op: self.operand(op, dot) for op in operands]
        if piped is not _NOTHING:
            thunks.append(lambda: piped)
        for thunk in thunks:
            value = thunk()
            if truth(value) == (name == "or"):
                return value
        return value

    def operand(self, op, dot):
        kind = op[0]
        if kind == "lit":
            return op[1]
        if kind == "dot":
            return dot
        if kind == "var":
            return self._var(op[1])
        if kind == "func":
            return self.command([op], dot, _NOTHING)
        if kind == "pipe":
            mark = len(self.vars)
            try:
                return self.pipe(op[1], dot)
            finally:
                del self.vars[mark:]
        current = self.operand(op[1], dot)
        for name in op[2]:
            if isinstance(current, dict):
                current = current.get(name, getattr(current, "zero", ""))
            elif current is None:
                raise TemplateError(f"nil pointer evaluating {name}")
            elif not name.startswith("_") and not isinstance(current, (str, int, float, list)) \
                    and hasattr(current, name):
                current = getattr(current, name)
            else:
                raise TemplateError(f"can't evaluate field {name}")
        return current


def _call(method, head, args):
    try:
        return method(*args)
    except TypeError as exc:
        raise TemplateError(f"error calling {_shown(head)}: {exc}") from None


def _shown(op) -> str:
    if op[0] == "chain":
        return "." + ".".join(op[2])
    return str(op[1]) if len(op) > 1 else "."


_NOTHING = object()


class Template:
    """A compiled record template; ``fields`` are the names of the data it reads (``*``: all of it)."""

    def __init__(self, source: str, nodes: list, fields: set[str]):
        self.source, self.nodes, self.fields = source, nodes, fields

    def render(self, data) -> str:
        run = _Run(data)
        run.walk(self.nodes, data)
        return "".join(run.out)


def compile_template(text: str) -> Template:
    """Compile ``text``; TemplateError names what is wrong (unknown function, unsupported construct)."""
    parser = _Parser(text)
    nodes = parser.parse()
    return Template(text, nodes, parser.fields)
