"""Record templates from text to nodes: the actions, their pipelines and the control structures."""

from __future__ import annotations

import re

from pydns.plugins.template.gotemplate.functions import FUNCTIONS, TemplateError

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
UNSUPPORTED = {"define", "template", "block", "call", "js"}
_TRIM = " \t\r\n"

# A template is a list of nodes:
#   str                                   literal text
#   ("action", pipe)                      {{ pipeline }}
#   ("if"|"with"|"range", pipe, body, else_body)
#   ("break",), ("continue",)
# pipe: (declared names, "decl"|"assign"|None, commands); a command is a list of operands:
#   ("lit", v), ("dot",), ("var", name), ("func", name), ("pipe", pipe), ("chain", operand, [fields])


class Parser:
    """Parses one template; ``fields`` collects the names of the data it reads."""

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
            elif word in UNSUPPORTED:
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
            elif value in UNSUPPORTED:
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
