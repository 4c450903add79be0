"""Evaluating a checked expression tree for one query."""

from __future__ import annotations

import math

from pydns.expr.builtins import BUILTINS, numbers
from pydns.expr.parse import COMPARISONS, PREDICATES
from pydns.expr.values import (INT, MAX_ITEMS, STRING, ExprError, equal, go_format, is_number, member, mismatch, regex,
                               type_of, wrap)


class Run:
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
        return member(item, node[1], False)

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
                raise ExprError(f"invalid operation: {op} {type_of(value)}")
            return not value
        if not is_number(value):
            raise ExprError(f"invalid operation: {op} {type_of(value)}")
        return wrap(-value) if op == "-" and isinstance(value, int) else -value if op == "-" else value

    def _member(self, node, scope):
        container = self.eval(node[1], scope)
        if container is None and node[3]:
            return None
        return member(container, self.eval(node[2], scope), node[3])

    def _slice(self, node, scope):
        container = self.eval(node[1], scope)
        if not isinstance(container, (list, str)):
            raise ExprError(f"cannot slice {type_of(container)}")
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
                raise ExprError(f"invalid operation: {op} on {type_of(left)}")
            if left == (op in ("or", "||")):
                return left
            right = self.eval(node[3], scope)
            if not isinstance(right, bool):
                raise ExprError(f"invalid operation: {op} on {type_of(right)}")
            return right
        if op == "??":
            return left if left is not None else self.eval(node[3], scope)
        right = self.eval(node[3], scope)
        if op == "==":
            return equal(left, right)
        if op == "!=":
            return not equal(left, right)
        if op == "in":
            if isinstance(right, dict):
                return left in right
            if isinstance(right, list):
                return any(equal(left, r) for r in right)
            if right is None:
                return False
            raise ExprError(f"invalid operation: in (mismatched types {type_of(left)} and {type_of(right)})")
        if op in ("matches", "contains", "startsWith", "endsWith"):
            if not (isinstance(left, str) and isinstance(right, str)):
                raise mismatch(op, type_of(left), type_of(right))
            if op == "matches":
                return regex(right).search(left) is not None
            return {"contains": right in left, "startsWith": left.startswith(right),
                    "endsWith": left.endswith(right)}[op]
        nums = is_number(left) and is_number(right)
        if op in COMPARISONS:
            if not (nums or isinstance(left, str) and isinstance(right, str)):
                raise mismatch(op, type_of(left), type_of(right))
            return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
        if op == "+" and isinstance(left, str) and isinstance(right, str):
            return left + right
        if op == ".." and isinstance(left, int) and isinstance(right, int) and nums:
            if right - left >= MAX_ITEMS:
                raise ExprError("memory budget exceeded")
            return list(range(left, right + 1))
        if not nums:
            raise mismatch(op, type_of(left), type_of(right))
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
                raise mismatch(op, type_of(left), type_of(right))
            if right == 0:
                raise ExprError("integer divide by zero")
            return int(math.fmod(left, right))  # Go's remainder takes the dividend's sign
        value = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right}[op]()
        return wrap(value) if both_int else float(value)

    def _call(self, node, scope):
        name, args = node[1], node[2]
        if name in PREDICATES:
            return self._predicate_call(name, args, scope)
        values = [self.eval(a, scope) for a in args]
        if name in self.functions:
            return self.functions[name].impl(self.context, *values)
        if name in BUILTINS:
            params = BUILTINS[name][0] or ()
            for want, value in zip(params, values):
                if want in (STRING, INT) and type_of(value) != want:
                    raise ExprError(f"invalid argument for {name}: {go_format(value)} is not {want}")
            return BUILTINS[name][2](*values)
        raise ExprError(f"{name} is not a function")

    def _predicate_call(self, name, args, scope):
        collection = self.eval(args[0], scope)
        if isinstance(collection, dict):
            collection = list(collection.values())
        if not isinstance(collection, list):
            raise ExprError(f"cannot iterate over {type_of(collection)}")
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
                raise ExprError(f"predicate should return boolean (got {type_of(value)})")
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
            return sum(numbers(values)) if values else 0
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
