"""Corefile parsing: the CoreDNS (Caddyfile v1) syntax, turned into server blocks.

The result is a list of ``ServerBlock`` (its keys and its directives).  A directive is a
line: a name, its arguments, and an optional nested block of further lines, so that every
plugin parses its own options from the same small tree.  Every token remembers the file and
line it came from, so any error can be reported as ``FILE:LINE: message``.

Supported: several server blocks, several keys per block (space or comma separated), a
single brace-less block, quotes (with ``\\"`` escapes), ``#`` comments, ``{$ENV}`` and
``{%ENV%}`` substitution, ``import`` of files and globs (relative to the importing file),
and snippets ``(name) { ... }`` pasted in with ``import name``.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field


class CorefileError(Exception):
    """A configuration error tied to a place in a Corefile."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class Token(str):
    """A word of the Corefile that knows where it was written."""

    file: str
    line: int
    quoted: bool
    newlines: int  # line breaks inside a quoted token

    def __new__(cls, text: str, file: str, line: int, quoted: bool = False, newlines: int = 0):
        tok = super().__new__(cls, text)
        tok.file, tok.line, tok.quoted, tok.newlines = file, line, quoted, newlines
        return tok

    def error(self, message: str) -> CorefileError:
        return CorefileError(message, self.file, self.line)

    @property
    def end_line(self) -> int:
        return self.line + self.newlines

    def is_brace(self, brace: str) -> bool:
        return not self.quoted and self == brace


@dataclass
class Directive:
    """One Corefile line: ``name arg arg { nested lines }``."""

    name: Token
    args: list[Token] = field(default_factory=list)
    block: list["Directive"] | None = None  # None: no braces were written

    @property
    def file(self) -> str:
        return self.name.file

    @property
    def line(self) -> int:
        return self.name.line

    def error(self, message: str, token: Token | None = None) -> CorefileError:
        where = token if isinstance(token, Token) else self.name
        return CorefileError(message, where.file, where.line)

    @property
    def options(self) -> list["Directive"]:
        return self.block or []


@dataclass
class ServerBlock:
    keys: list[Token]
    directives: list[Directive]

    @property
    def file(self) -> str:
        return self.keys[0].file

    @property
    def line(self) -> int:
        return self.keys[0].line


# ---------------------------------------------------------------- lexing

_ENV = re.compile(r"\{\$([A-Za-z_][A-Za-z0-9_]*)\}|\{%([A-Za-z_][A-Za-z0-9_]*)%\}")


def _substitute_env(text: str, file: str, line: int, warnings: list[str] | None) -> str:
    """Replace ``{$VAR}`` / ``{%VAR%}``; an unset one becomes empty (as in CoreDNS) and is noted."""

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in os.environ:
            return os.environ[name]
        if warnings is not None:
            at = line + text.count("\n", 0, m.start())
            warnings.append(f"{file}:{at}: Corefile variable {m.group(0)} is not set; it is replaced by nothing")
        return ""

    return _ENV.sub(value, text)


def lex(text: str, file: str, warnings: list[str] | None = None) -> list[Token]:
    """Split Corefile text into tokens (whitespace separated, quotes and comments honoured).

    Unset ``{$VAR}`` variables are listed in ``warnings`` when it is given.
    """
    tokens: list[Token] = []
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch in " \t\r":
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch == '"':
            start_line, i, buf, breaks = line, i + 1, [], 0
            while True:
                if i >= n:
                    raise CorefileError("unterminated quoted string", file, start_line)
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] == '"':
                    buf.append('"')
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                if c == "\n":
                    line += 1
                    breaks += 1
                buf.append(c)
                i += 1
            tokens.append(Token(_substitute_env("".join(buf), file, start_line, warnings), file, start_line, True, breaks))
        else:
            start = i
            while i < n and text[i] not in " \t\r\n":  # a quote inside a word is part of it, as in Caddy
                i += 1
            tokens.append(Token(_substitute_env(text[start:i], file, line, warnings), file, line))
    return tokens


# ---------------------------------------------------------------- imports and snippets

_GLOB_CHARS = re.compile(r"[*?\[]")


class _Expander:
    """Pastes ``import`` targets (snippets, files, globs) into the token stream.

    With an ``errors`` list, an import that fails is noted there and skipped, so that every
    broken import is found in one go; otherwise it raises.
    """

    def __init__(self, warnings: list[str] | None = None, errors: list[CorefileError] | None = None) -> None:
        self.snippets: dict[str, list[Token]] = {}
        self.warnings = warnings
        self.errors = errors

    def expand(self, tokens: list[Token], base_dir: str, stack: tuple[str, ...], top: bool) -> list[Token]:
        out: list[Token] = []
        i, depth = 0, 0
        while i < len(tokens):
            tok = tokens[i]
            starts_line = not out or _line_break_between(out[-1], tok) or out[-1].is_brace("{") or out[-1].is_brace("}")
            if top and depth == 0 and starts_line and not tok.quoted and _is_snippet_name(tok):
                i = self._define_snippet(tokens, i)
                continue
            if tok == "import" and not tok.quoted and starts_line:
                if i + 1 >= len(tokens) or _line_break_between(tok, tokens[i + 1]):
                    raise tok.error("import requires a file or snippet name")
                arg = tokens[i + 1]
                if i + 2 < len(tokens) and not _line_break_between(arg, tokens[i + 2]) and not tokens[i + 2].is_brace("}"):
                    raise tokens[i + 2].error(f"import takes one argument, found extra '{tokens[i + 2]}'")
                try:
                    out.extend(self._import(arg, base_dir, stack, top and depth == 0))
                except CorefileError as err:
                    if self.errors is None:
                        raise
                    self.errors.append(err)
                i += 2
                continue
            if tok.is_brace("{"):
                depth += 1
            elif tok.is_brace("}"):
                depth -= 1
            out.append(tok)
            i += 1
        return out

    def _define_snippet(self, tokens: list[Token], i: int) -> int:
        name_tok = tokens[i]
        name = name_tok[1:-1]
        if i + 1 >= len(tokens) or not tokens[i + 1].is_brace("{"):
            raise name_tok.error(f"snippet '{name}' must be followed by '{{'")
        depth, j = 1, i + 2
        while j < len(tokens) and depth:
            if tokens[j].is_brace("{"):
                depth += 1
            elif tokens[j].is_brace("}"):
                depth -= 1
            j += 1
        if depth:
            raise name_tok.error(f"unbalanced braces: snippet '{name}' is never closed")
        if name in self.snippets:
            raise name_tok.error(f"snippet '{name}' is defined twice")
        self.snippets[name] = tokens[i + 2 : j - 1]
        return j

    def _import(self, arg: Token, base_dir: str, stack: tuple[str, ...], top: bool) -> list[Token]:
        if arg in self.snippets:
            if f"snippet:{arg}" in stack:
                raise arg.error(f"import cycle: snippet '{arg}' imports itself")
            return self.expand(self.snippets[arg], base_dir, stack + (f"snippet:{arg}",), top)
        pattern = arg if os.path.isabs(arg) else os.path.join(base_dir, arg)
        if _GLOB_CHARS.search(arg):
            paths = sorted(glob.glob(pattern))  # a glob that matches nothing is fine (k3s relies on it)
        else:
            if not os.path.exists(pattern):
                raise arg.error(f"import: no such file or snippet: {arg}")
            paths = [pattern]
        out: list[Token] = []
        for path in paths:
            real = os.path.realpath(path)
            if real in stack:
                raise arg.error(f"import cycle: {path} imports itself")
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise arg.error(f"import: cannot read {path}: {exc.strerror}") from None
            out.extend(self.expand(lex(text, path, self.warnings), os.path.dirname(path), stack + (real,), top))
        return out


def _is_snippet_name(tok: str) -> bool:
    return len(tok) > 2 and tok.startswith("(") and tok.endswith(")")


def _line_break_between(a: Token, b: Token) -> bool:
    return a.file != b.file or a.end_line != b.line


# ---------------------------------------------------------------- structure


def _parse_lines(tokens: list[Token], i: int, opener: Token | None) -> tuple[list[Directive], int]:
    """Parse directive lines until the '}' matching ``opener`` (or the end when opener is None)."""
    lines: list[Directive] = []
    while i < len(tokens):
        tok = tokens[i]
        if tok.is_brace("}"):
            if opener is None:
                raise tok.error("unexpected '}': no block is open")
            return lines, i + 1
        if tok.is_brace("{"):
            raise tok.error("unexpected '{': a block must follow a directive on its line")
        d = Directive(tok)
        i += 1
        while i < len(tokens) and not _line_break_between(tokens[i - 1], tokens[i]) and not tokens[i].is_brace("}"):
            if tokens[i].is_brace("{"):
                d.block, i = _parse_lines(tokens, i + 1, tokens[i])
                break
            d.args.append(tokens[i])
            i += 1
        lines.append(d)
    if opener is not None:
        raise opener.error("unbalanced braces: '{' is never closed")
    return lines, i


def parse_tokens(tokens: list[Token]) -> list[ServerBlock]:
    blocks: list[ServerBlock] = []
    i = 0
    while i < len(tokens):
        first = tokens[i]
        if first.is_brace("{") or first.is_brace("}"):
            raise first.error(f"unexpected '{first}': expected server block keys")
        keys: list[Token] = []
        expecting_more = True
        while i < len(tokens) and not tokens[i].is_brace("{"):
            tok = tokens[i]
            if keys and not expecting_more and _line_break_between(tokens[i - 1], tok):
                break
            if tok.is_brace("}"):
                raise tok.error("unexpected '}': no block is open")
            expecting_more = tok.endswith(",")
            keys.extend(Token(part, tok.file, tok.line) for part in tok.split(",") if part)
            i += 1
        if i < len(tokens) and tokens[i].is_brace("{"):
            directives, i = _parse_lines(tokens, i + 1, tokens[i])
        elif not blocks:
            # A single server block may leave its braces out: the rest of the file is its body.
            directives, i = _parse_lines(tokens, i, None)
        else:
            raise first.error(f"server block '{first}' must be followed by '{{'")
        blocks.append(ServerBlock(keys, directives))
    return blocks


def parse(text: str, file: str = "Corefile", *, warnings: list[str] | None = None,
          errors: list[CorefileError] | None = None) -> list[ServerBlock]:
    """Parse Corefile text; imports are resolved relative to ``file``'s folder.

    A Corefile must have a server block: one that is empty, or holds only comments or
    snippets, would serve nothing (a reload to it would silently stop every listener).
    ``warnings`` collects unset variables; ``errors``, when given, collects failed imports
    instead of stopping at the first (see ``-validate``).
    """
    base = os.path.dirname(os.path.abspath(file))
    stack = (os.path.realpath(file),) if os.path.exists(file) else ()
    tokens = _Expander(warnings, errors).expand(lex(text, file, warnings), base, stack, True)
    blocks = parse_tokens(tokens)
    if not blocks and not errors:
        raise CorefileError("no server block: the Corefile is empty or holds only comments or snippets", file)
    return blocks


def load(path: str, *, warnings: list[str] | None = None,
         errors: list[CorefileError] | None = None) -> list[ServerBlock]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise CorefileError(f"cannot read Corefile: {exc.strerror}", path) from None
    return parse(text, path, warnings=warnings, errors=errors)


def files_of(path: str) -> list[str]:
    """The Corefile and every file it imports, for change detection (reload)."""
    seen: list[str] = []

    class _Recorder(_Expander):
        def _import(self, arg, base_dir, stack, top):  # type: ignore[override]
            pattern = arg if os.path.isabs(arg) else os.path.join(base_dir, arg)
            if arg not in self.snippets:
                seen.extend(sorted(glob.glob(pattern)) if _GLOB_CHARS.search(arg) else [pattern])
            return super()._import(arg, base_dir, stack, top)

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    _Recorder().expand(lex(text, path), os.path.dirname(os.path.abspath(path)), (os.path.realpath(path),), True)
    return [path] + seen
