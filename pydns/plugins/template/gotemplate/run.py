"""Rendering a parsed record template for one query, within its bounds."""

from __future__ import annotations

from pydns.expr import go_format
from pydns.plugins.template.gotemplate.functions import FUNCTIONS, TemplateError, go_string, truth

MAX_OUTPUT = 65535  # characters one record may render to: more than any record can hold
MAX_STEPS = 10000  # range iterations in one rendering
NOTHING = object()  # no value piped into a command


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Run:
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
        value = NOTHING
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
            if piped is not NOTHING:
                args.append(piped)
            try:
                return FUNCTIONS[name](*args)
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"error calling {name}: {exc}") from None
        if head[0] == "chain" and (rest or piped is not NOTHING):
            method = self.operand(head, dot)
            if callable(method):
                args = [self.operand(op, dot) for op in rest] + ([] if piped is NOTHING else [piped])
                return _call(method, head, args)
        if rest or piped is not NOTHING:
            raise TemplateError(f"can't give argument to non-function {_shown(head)}")
        value = self.operand(head, dot)
        return _call(value, head, []) if callable(value) else value

    def _and_or(self, name: str, operands: list, dot, piped):
        if not operands and piped is NOTHING:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        value = None
        thunks = [lambda op=op: self.operand(op, dot) for op in operands]
        if piped is not NOTHING:
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
            return self.command([op], dot, NOTHING)
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
