"""The part of Go's text/template that the template plugin's records are written in.

The template plugin compiles each record with ``compile_template`` at setup
(where a construct outside this subset is an error) and renders it per query.

Supported: literal text; actions ``{{ ... }}`` with ``{{-``/``-}}`` trimming; field chains
(``.Name``, ``.Group.a``, ``.Question.Name``, ``.``); string (``"..."``, `````...`````) and
number literals; commands with arguments and ``|`` pipelines; the functions ``index``,
``len``, ``print``, ``printf``, ``println``, ``slice`` and ``parseInt``; method calls on the
data (``.Meta "kubernetes/client-namespace"``).  Control structures (``if``, ``range``,
``with``, ``define``...) and ``$variables`` are not supported.
"""

from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+)|(?P<pipe>\|)"""
                    r"""|(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"""
                    r"""|(?P<bad>\S+))""")
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue", "nil"}
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}


class TemplateError(ValueError):
    """A record template that cannot be compiled or executed."""


def go_string(value) -> str:
    """How text/template prints a value."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _index(container, *keys):
    for key in keys:
        try:
            container = container[key]
        except (IndexError, TypeError):
            raise TemplateError(f"error calling index: index {key} out of range") from None
        except KeyError:
            container = ""  # a missing map key gives the zero value
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
        return fmt % tuple(go_string(a) if not isinstance(a, int) else a for a in args)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"error calling printf: {exc}") from None


def _slice(value, *bounds):
    if len(bounds) > 2:
        raise TemplateError("error calling slice: too many indexes")
    return value[slice(*bounds)]


FUNCTIONS = {
    "index": _index,
    "len": lambda v: len(v),
    "print": lambda *a: "".join(go_string(v) for v in a),
    "println": lambda *a: " ".join(go_string(v) for v in a) + "\n",
    "printf": _printf,
    "slice": _slice,
    "parseInt": _parse_int,
}


class Template:
    """A compiled record template: literal text and pipelines, and the data fields it uses."""

    def __init__(self, source: str, parts: list, fields: set[str]):
        self.source, self.parts, self.fields = source, parts, fields

    def render(self, data) -> str:
        out = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else go_string(_run(part, data)))
        return "".join(out)


def compile_template(text: str) -> Template:
    """Compile ``text``; TemplateError names what is wrong (unknown function, unsupported construct)."""
    parts: list = []
    fields: set[str] = set()
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos:m.start()]
        if m.group(1):
            literal = literal.rstrip()
        if literal:
            parts.append(literal)
        pipeline = _parse_pipeline(m.group(2), fields)
        parts.append(pipeline)
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    tail = text[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action")
    if tail:
        parts.append(tail)
    return Template(text, parts, fields)


def _parse_pipeline(source: str, used: set[str]) -> list:
    commands: list[list] = [[]]
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "pipe":
            commands.append([])
        elif kind == "str":
            commands[-1].append(("lit", _unquote(value)))
        elif kind == "raw":
            commands[-1].append(("lit", value[1:-1]))
        elif kind == "num":
            commands[-1].append(("lit", int(value)))
        elif kind == "field":
            chain = [f for f in value.split(".") if f]
            if chain:
                used.add(chain[0])  # an unknown field fails when executed, as in Go
            commands[-1].append(("field", chain))
        elif kind == "ident":
            if value in _KEYWORDS:
                raise TemplateError(f"'{value}' is not supported in record templates")
            if value not in FUNCTIONS:
                raise TemplateError(f'function "{value}" not defined')
            commands[-1].append(("func", value))
        else:
            if value.startswith("$"):
                raise TemplateError("template variables are not supported in record templates")
            raise TemplateError(f"unexpected {value!r} in action")
    if any(not c for c in commands):
        raise TemplateError("missing value for command")
    return commands


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])


def _run(commands: list, data):
    value = _NOTHING
    for command in commands:
        value = _command(command, data, value)
    return value


_NOTHING = object()


def _command(command: list, data, piped):
    head, *rest = command
    args = [_operand(op, data) for op in rest]
    if piped is not _NOTHING:
        args.append(piped)
    if head[0] == "func":
        try:
            return FUNCTIONS[head[1]](*args)
        except TemplateError:
            raise
        except Exception as exc:
            raise TemplateError(f"error calling {head[1]}: {exc}") from None
    value = _operand(head, data)
    if args:
        if not callable(value):
            raise TemplateError(f"{'.'.join(head[1]) if head[0] == 'field' else value} is not a method "
                                f"but has arguments")
        return value(*args)
    return value


def _operand(op, data):
    kind, value = op
    if kind == "lit":
        return value
    if kind == "func":
        return _command([op], data, _NOTHING)
    current = data
    for name in value:
        if isinstance(current, dict):
            current = current.get(name, "")
        elif not name.startswith("_") and hasattr(current, name):
            current = getattr(current, name)
        else:
            raise TemplateError(f"can't evaluate field {name}")
    return current
