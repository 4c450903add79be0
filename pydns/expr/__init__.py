"""The expression language of CoreDNS's ``template`` (``var``, ``expr``) and ``view`` plugins.

CoreDNS evaluates these with expr-lang (https://expr-lang.org).  This package reads the part
of that language a Corefile uses, checks it when the configuration is read, and evaluates it
per query, without ever handing text to Python's own ``eval``:

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

The steps are modules: ``parse`` (text to a tree), ``check`` (types), ``run`` (evaluation),
``builtins`` (expr's functions), ``values`` (types, Go's printing and comparing) and
``query`` (CoreDNS's functions on the query: ``name()``, ``client_ip()``, ``incidr()``...).
"""

from __future__ import annotations

from pydns.expr.builtins import RESERVED
from pydns.expr.check import Checker
from pydns.expr.parse import parse
from pydns.expr.query import metadata_value, query_functions
from pydns.expr.run import Run
from pydns.expr.values import (ANY, ARRAY, BOOL, FLOAT, INT, MAP, NIL, STRING, ExprError, Function, go_float,
                               go_format)

__all__ = ["ANY", "ARRAY", "BOOL", "FLOAT", "INT", "MAP", "NIL", "RESERVED", "STRING", "ExprError", "Function",
           "Program", "compile_expr", "go_float", "go_format", "metadata_value", "query_functions"]


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
            return Run(self.functions, context, variables).eval(self.tree, {})
        except ExprError:
            raise
        except RecursionError:
            raise ExprError("expression nests too deep") from None
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, ZeroDivisionError,
                OverflowError) as exc:
            raise ExprError(str(exc) or type(exc).__name__) from None


def compile_expr(source: str, functions: dict[str, Function], variables: dict[str, str]) -> Program:
    """Parse and check ``source``; ``variables`` maps the names in scope to their types."""
    tree = parse(source)
    checker = Checker(functions, variables)
    try:
        result = checker.check(tree, {}, False)
    except RecursionError:
        raise ExprError("expression nests too deep") from None
    return Program(source, tree, result, checker.used, functions)
