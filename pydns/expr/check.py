"""Type checking, as expr.Compile does with a typed environment: names, functions, operand types."""

from __future__ import annotations

from pydns.expr.builtins import ARITY, BUILTINS, RESERVED, UNAVAILABLE
from pydns.expr.parse import COMPARISONS, PREDICATES
from pydns.expr.values import (ANY, ARRAY, BOOL, FLOAT, INT, MAP, NIL, NUMBERS, STRING, ExprError, Function, go_format,
                               mismatch, regex, type_of)


def _binary_type(op: str, left: str, right: str, node) -> str:
    unknown = ANY in (left, right)
    nums = left in NUMBERS and right in NUMBERS
    if op in ("==", "!="):
        if left == right or nums or unknown or NIL in (left, right):
            return BOOL
    elif op in ("or", "||", "and", "&&"):
        if left in (BOOL, ANY) and right in (BOOL, ANY):
            return BOOL
    elif op in COMPARISONS:
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
            regex(node[3][1])
        if {left, right} <= {STRING, ANY}:
            return BOOL
    elif op == "..":
        if {left, right} <= {INT, ANY}:
            return ARRAY
    elif op == "??":
        return right if left == NIL else left if right == NIL or left == right else ANY
    raise mismatch(op, left, right)


class Checker:
    def __init__(self, functions: dict[str, Function], variables: dict[str, str]):
        self.functions, self.variables = functions, variables
        self.used: set[str] = set()

    def check(self, node, scope: dict, item: bool) -> str:
        kind = node[0]
        if kind == "lit":
            return type_of(node[1])
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
        if name in self.functions and name not in PREDICATES:
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
        if name in PREDICATES:
            if types[0] not in (ARRAY, MAP, ANY):
                raise ExprError(f"builtin {name} takes only array (got {types[0]})")
            if name in ("all", "none", "any", "one", "filter") and len(types) > 1 and types[1] not in (BOOL, ANY):
                raise ExprError(f"predicate should return boolean (got {types[1]})")
            return {"all": BOOL, "none": BOOL, "any": BOOL, "one": BOOL, "filter": ARRAY, "map": ARRAY,
                    "count": INT, "findIndex": INT, "findLastIndex": INT}.get(name, ANY)
        if name in BUILTINS:
            params, result, _ = BUILTINS[name]
            low, high = ARITY.get(name, (len(params or ()), len(params or ())))
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
