"""ClassAd expressions with attribute references, for `requirements` and `on_exit_remove`.

`parse(text)` gives a tree (nested tuples) once; `evaluate(tree, my, target)`
runs it against two ads (dicts with lower-case keys). The semantics are the
ClassAd ones: an unknown attribute is UNDEFINED, which spreads through
arithmetic and comparisons, while `&&`/`||` only need one decisive side
(`false && UNDEFINED` is false); `=?=`/`=!=` never yield UNDEFINED; `==` on
strings ignores case; a type clash is ERROR. A bare name is looked up in MY
first, then TARGET.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional

from .expr import tokens

# regexp()'s bounded engine is imported when an expression first uses it: most submit
# files have none, and its import is a part of every `jrs submit`'s start
STEP_BUDGET = 2_000_000  # work per evaluation, in regexp steps (regex_bounded.STEP_BUDGET)


def _rb() -> Any:
    from . import regex_bounded

    return regex_bounded


class _Special:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name  # pickled and deep-copied as the one module-level instance


UNDEFINED = _Special("UNDEFINED")
ERROR = _Special("ERROR")


class ClassAdError(ValueError):
    """The text is not a ClassAd expression."""


# What a peer's expression may cost (the master evaluates requirements against every
# node): parentheses, unary operators, `?:` and call arguments nested at most
# MAX_NESTING deep (the parser recurses on them), and a tree at most MAX_DEPTH deep
# (evaluation recurses on it; a chain of `&&` or of `||` is built balanced, so 10,000
# alternatives are 14 levels, not 10,000). Both keep evaluation far from Python's
# recursion limit; an expression past them is refused, naming the bound.
MAX_NESTING = 32
MAX_DEPTH = 128


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
    | (?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||<<|>>|[-+*/%()<>!?:,|&^~])
    )""", re.X)

_BINARY = [  # lowest precedence first
    ("||",), ("&&",), ("|",), ("^",), ("&",),
    ("==", "!=", "=?=", "=!=", "is", "isnt"),
    ("<", "<=", ">", ">="), ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
]
_KEYWORD_OPS = {"is": "=?=", "isnt": "=!="}


def _tokenize(text: str) -> list:
    return [("op", value.lower()) if kind == "name" and value.lower() in _KEYWORD_OPS
            else (kind, value)
            for kind, value in tokens(_TOKEN, text, ClassAdError, f" in {text.rstrip()!r}")]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.nesting = 0

    def nest(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ClassAdError(f"the expression nests more than {MAX_NESTING} deep "
                               f"in {self.text[:200]!r}")

    def peek(self) -> str:
        return self.toks[self.i][1] if self.i < len(self.toks) else ""

    def take(self) -> tuple:
        if self.i >= len(self.toks):
            raise ClassAdError(f"unexpected end of {self.text!r}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        kind, value = self.take()
        if value != op or kind not in ("op",):
            raise ClassAdError(f"expected {op!r}, got {value!r} in {self.text!r}")

    def parse(self) -> tuple:
        tree = self.ternary()
        if self.i != len(self.toks):
            raise ClassAdError(f"unexpected {self.peek()!r} in {self.text!r}")
        return tree

    def ternary(self) -> tuple:
        self.nest()
        cond = self.binary(0)
        if self.peek() == "?" and self.toks[self.i][0] == "op":
            self.take()
            yes = self.ternary()
            self.expect(":")
            cond = ("?:", cond, yes, self.ternary())
        self.nesting -= 1
        return cond

    def binary(self, level: int) -> tuple:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        if level < 2:  # `||`, `&&`: associative (see _balanced)
            operands = [left]
            while self.i < len(self.toks) and self.toks[self.i][0] == "op" \
                    and self.peek() in _BINARY[level]:
                self.take()
                operands.append(self.binary(level + 1))
            return _balanced(_BINARY[level][0], operands)
        while self.i < len(self.toks) and self.toks[self.i][0] == "op" \
                and self.peek() in _BINARY[level]:
            op = self.take()[1]
            left = (_KEYWORD_OPS.get(op, op), left, self.binary(level + 1))
        return left

    def unary(self) -> tuple:
        if self.i < len(self.toks) and self.toks[self.i][0] == "op" \
                and self.peek() in ("-", "+", "!", "~"):
            op = self.take()[1]
            self.nest()
            tree = ("u" + op, self.unary())
            self.nesting -= 1
            return tree
        return self.primary()

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "num":
            is_real = any(c in value for c in ".eE")
            return ("lit", float(value) if is_real else int(value))
        if kind == "str":
            return ("lit", _unescape(value[1:-1]))
        if kind == "name":
            low = value.lower()
            if self.peek() == "(" and "." not in value:
                self.take()
                args = []
                if self.peek() != ")":
                    args.append(self.ternary())
                    while self.peek() == ",":
                        self.take()
                        args.append(self.ternary())
                self.expect(")")
                if low not in FUNCTIONS:
                    raise ClassAdError(f"unknown function {value}() in {self.text!r}")
                if low == "regexp":
                    self._check_regexp(args)
                return ("call", low, args)
            if low in ("true", "false"):
                return ("lit", low == "true")
            if low == "undefined":
                return ("lit", UNDEFINED)
            if low == "error":
                return ("lit", ERROR)
            scope, _, name = low.rpartition(".")
            if scope not in ("", "my", "target"):
                raise ClassAdError(f"unknown scope {scope!r} in {self.text!r}")
            return ("attr", scope, name)
        if value == "(":
            inner = self.ternary()
            self.expect(")")
            return inner
        raise ClassAdError(f"unexpected {value!r} in {self.text!r}")


    def _check_regexp(self, args: list) -> None:
        """A literal pattern the bounded engine refuses is an error now, not at the master
        (checked, not compiled: 100 literal patterns of 20,000 instructions fit 16 KiB,
        seconds of compiling for the price of one parse; compiling is charged where it
        runs, in the evaluation)."""
        if args and args[0][0] == "lit" and isinstance(args[0][1], str):
            options = args[2][1] if len(args) == 3 and args[2][0] == "lit" else ""
            rb = _rb()
            try:
                rb.check(args[0][1], options if isinstance(options, str) else "")
            except rb.RegexError as exc:
                raise ClassAdError(f"regexp({args[0][1]!r}): {exc} in {self.text!r}")


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _balanced(op: str, operands: list) -> tuple:
    """`a op b op c ...` as a balanced tree. For `&&` and `||` the value is that of the
    first operand, left to right, that is ERROR or decisive (True for `||`, False for
    `&&`), else UNDEFINED if one is, else the other truth value: any grouping gives the
    same value and evaluates the same operands in the same order."""
    if len(operands) == 1:
        return operands[0]
    half = len(operands) // 2
    return (op, _balanced(op, operands[:half]), _balanced(op, operands[half:]))


def _depth(tree: tuple) -> int:
    """How deep `tree` is (iterative: a tree too deep to recurse on is what it looks for)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        t, d = stack.pop()
        deepest = max(deepest, d)
        for part in t[1:]:
            if isinstance(part, tuple) and part:
                stack.append((part, d + 1))
            elif isinstance(part, list):
                stack.extend((a, d + 1) for a in part)
    return deepest


def parse(text: str) -> tuple:
    """The tree of expression `text` (ClassAdError if it is not one, or is nested past
    MAX_NESTING / MAX_DEPTH)."""
    try:
        tree = _Parser(text).parse()
    except RecursionError:  # not reached within the bounds; never a traceback for a peer
        raise ClassAdError(f"the expression nests too deep in {text[:200]!r}") from None
    if _depth(tree) > MAX_DEPTH:
        raise ClassAdError(f"the expression is more than {MAX_DEPTH} levels deep "
                           f"in {text[:200]!r}")
    return tree


def literal(text: str) -> Any:
    """A configuration value as a ClassAd value: `4`, `true`, `"x"`; other text stays text."""
    try:
        tree = parse(text)
    except ClassAdError:
        return text
    if tree[0] == "lit":
        return tree[1]
    if tree[0] == "u-" and tree[1][0] == "lit" and isinstance(tree[1][1], (int, float)):
        return -tree[1][1]
    return text


# ----------------------------------------------------------------- evaluation

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _truth(v: Any) -> Any:
    """A value in a boolean context: True, False, UNDEFINED or ERROR."""
    if isinstance(v, bool) or v is UNDEFINED or v is ERROR:
        return v
    if _is_num(v):
        return v != 0
    return ERROR


class _Env:
    __slots__ = ("depth", "my", "steps", "target")

    def __init__(self, my: dict, target: dict) -> None:
        self.my = my
        self.target = target
        self.depth = 0
        # work this evaluation may still do, in regexp steps: every regexp() call's
        # search and pattern compile, and a step per character of each string a function
        # or a string comparison is given (strcat of strcat of 63 4 KiB attributes is a
        # 16 MiB string; stringlistmember splitting it took 10 s). One evaluation costs
        # at most STEP_BUDGET steps, however many calls the expression
        # makes (a call or comparison past the budget is ERROR)
        self.steps = STEP_BUDGET


def _spend(env: _Env, n: int) -> bool:
    """Take `n` steps of work from the evaluation's budget: False (nothing taken, the
    budget spent) if it has fewer left, and the work must not be done."""
    if n > env.steps:
        env.steps = min(env.steps, 0)
        return False
    env.steps -= n
    return True


def evaluate(tree: tuple, my: Optional[dict] = None, target: Optional[dict] = None) -> Any:
    """The value of `tree` with MY = `my` and TARGET = `target` (lower-case keys)."""
    return _eval(tree, _Env(my or {}, target or {}))


def matches(tree: tuple, my: dict, target: dict) -> bool:
    return evaluate(tree, my, target) is True


def matches_counted(tree: tuple, my: dict, target: dict) -> tuple:
    """(`matches(...)`, the regexp steps it took): what the master charges per match."""
    env = _Env(my, target)
    try:
        result = _eval(tree, env) is True
    except RecursionError:  # not reached within MAX_DEPTH; never a stalled master
        result = False
    return result, STEP_BUDGET - env.steps


def _lookup(env: _Env, scope: str, name: str) -> Any:
    for ad in ((env.my,) if scope == "my" else (env.target,) if scope == "target"
               else (env.my, env.target)):
        if name in ad:
            value = ad[name]
            if isinstance(value, tuple):  # an expression attribute: evaluate in its ad
                if env.depth > 50:
                    return ERROR
                env.depth += 1
                try:
                    inner = _Env(ad, env.target if ad is env.my else env.my)
                    inner.depth, inner.steps = env.depth, env.steps
                    try:
                        return _eval(value, inner)
                    finally:
                        env.steps = inner.steps
                finally:
                    env.depth -= 1
            return value
    return UNDEFINED


def _eval(t: tuple, env: _Env) -> Any:
    op = t[0]
    if op == "lit":
        return t[1]
    if op == "attr":
        return _lookup(env, t[1], t[2])
    if op == "call":
        return FUNCTIONS[t[1]](env, t[2])
    if op == "?:":
        cond = _truth(_eval(t[1], env))
        if cond is UNDEFINED or cond is ERROR:
            return cond
        return _eval(t[2] if cond else t[3], env)
    if op == "&&" or op == "||":
        return _logic(op, t, env)
    if op[0] == "u":
        return _unary(op[1], _eval(t[1], env))
    a = _eval(t[1], env)
    b = _eval(t[2], env)
    if op == "=?=":
        return _identical(a, b)
    if op == "=!=":
        return not _identical(a, b)
    if a is ERROR or b is ERROR:
        return ERROR
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    if op in ("==", "!=", "<", "<=", ">", ">="):
        if isinstance(a, str) and isinstance(b, str) and not _spend(env, len(a) + len(b)):
            return ERROR
        return _compare(op, a, b)
    return _arith(op, a, b)


def _logic(op: str, t: tuple, env: _Env) -> Any:
    a = _truth(_eval(t[1], env))
    if a is ERROR:
        return ERROR
    decisive = op == "||"  # True decides ||, False decides &&
    if a is decisive:
        return decisive
    b = _truth(_eval(t[2], env))
    if b is ERROR:
        return ERROR
    if a is UNDEFINED:
        return decisive if b is decisive else UNDEFINED
    return b


def _unary(op: str, v: Any) -> Any:
    if v is ERROR or v is UNDEFINED:
        return v
    if op == "!":
        b = _truth(v)
        return b if b is ERROR else not b
    if not _is_num(v):
        return ERROR
    if op == "-":
        return -v
    if op == "~":
        return ~v if isinstance(v, int) else ERROR
    return v


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, _Special) or isinstance(b, _Special):
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_num(a) and _is_num(b):
        return a == b
    return type(a) is type(b) and a == b


def _compare(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        a, b = a.lower(), b.lower()
    elif isinstance(a, bool) and isinstance(b, bool):
        if op not in ("==", "!="):
            return ERROR
    elif not (_is_num(a) and _is_num(b)):
        return ERROR
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b,
            ">": a > b, ">=": a >= b}[op]


def _arith(op: str, a: Any, b: Any) -> Any:
    if op in ("|", "&", "^") and isinstance(a, bool) and isinstance(b, bool):
        return {"|": a | b, "&": a & b, "^": a ^ b}[op]
    if not (_is_num(a) and _is_num(b)):
        return ERROR
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "%"):
        if b == 0:
            return ERROR
        if isinstance(a, int) and isinstance(b, int):
            q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
            return q if op == "/" else a - q * b
        return a / b if op == "/" else math.fmod(a, b)
    if not (isinstance(a, int) and isinstance(b, int)):
        return ERROR
    if op in ("<<", ">>"):
        return a << b if op == "<<" and 0 <= b < 64 else a >> b if 0 <= b < 64 else ERROR
    return {"|": a | b, "&": a & b, "^": a ^ b}[op]


# ------------------------------------------------------------------ functions

def _args(env: _Env, args: list) -> list:
    return [_eval(a, env) for a in args]


def _strict(fn: Callable, arity: tuple) -> Callable:
    """A function of plain values: UNDEFINED/ERROR arguments propagate. Its string
    arguments are charged to the evaluation (a string a function makes is at most as
    long as those it was given, so what an evaluation builds is bounded too)."""
    def call(env: _Env, args: list) -> Any:
        if len(args) not in arity:
            return ERROR
        values = _args(env, args)
        chars = 0
        for v in values:
            if v is ERROR or v is UNDEFINED:
                return v
            if isinstance(v, str):
                chars += len(v)
        if chars and not _spend(env, chars):
            return ERROR
        try:
            return fn(*values)
        except (TypeError, ValueError, OverflowError, re.error):
            return ERROR
    return call


def _if_then_else(env: _Env, args: list) -> Any:
    if len(args) != 3:
        return ERROR
    cond = _truth(_eval(args[0], env))
    if cond is UNDEFINED or cond is ERROR:
        return cond
    return _eval(args[1] if cond else args[2], env)


def _test(pred: Callable[[Any], bool]) -> Callable:
    def call(env: _Env, args: list) -> Any:
        return pred(_eval(args[0], env)) if len(args) == 1 else ERROR
    return call


def _to_int(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        return int(float(v))
    return int(v) if _is_num(v) else ERROR


def _to_real(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float, str)) else ERROR


def _to_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else repr(v)


def _string_list_member(item: Any, lst: Any, delims: str = " ,") -> Any:
    if not isinstance(item, str) or not isinstance(lst, str):
        return ERROR
    parts = [p for p in re.split("[" + re.escape(delims) + "]+", lst) if p]
    return item in parts


def _regexp(env: _Env, args: list) -> Any:
    """Bounded (regex_bounded: a Pike VM with a step budget), never backtracking: a
    submit file's requirements run at the master against every node. The budget is
    the evaluation's (`_Env.steps`), shared by all its regexp() calls."""
    if len(args) not in (2, 3):
        return ERROR
    values = _args(env, args)
    for v in values:
        if v is ERROR or v is UNDEFINED:
            return v
    pattern, target = values[0], values[1]
    options = values[2] if len(values) == 3 else ""
    if not isinstance(pattern, str) or not isinstance(target, str) \
            or not isinstance(options, str):
        return ERROR
    if env.steps <= 0:
        return ERROR
    rb = _rb()
    if len(pattern) > rb.MAX_PATTERN \
            or not _spend(env, len(target) + len(options)):
        return ERROR
    rx = rb.compiled(pattern, options)  # charged cached or not: same verdicts
    if not _spend(env, rb.cost(pattern, rx)) or isinstance(rx, str) \
            or env.steps <= 0:
        return ERROR
    spent = [0]
    try:
        return rx.search(target, env.steps, spent)
    except rb.RegexError:
        return ERROR
    finally:
        env.steps -= spent[0]


def _strcat(*values: Any) -> str:
    return "".join(_to_string(v) for v in values)


FUNCTIONS: dict = {
    "ifthenelse": _if_then_else,
    "isundefined": _test(lambda v: v is UNDEFINED),
    "iserror": _test(lambda v: v is ERROR),
    "isstring": _test(lambda v: isinstance(v, str)),
    "isinteger": _test(lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "isreal": _test(lambda v: isinstance(v, float)),
    "isboolean": _test(lambda v: isinstance(v, bool)),
    "int": _strict(_to_int, (1,)),
    "real": _strict(_to_real, (1,)),
    "string": _strict(_to_string, (1,)),
    "strcat": _strict(_strcat, tuple(range(0, 64))),
    "tolower": _strict(lambda s: s.lower() if isinstance(s, str) else ERROR, (1,)),
    "toupper": _strict(lambda s: s.upper() if isinstance(s, str) else ERROR, (1,)),
    "size": _strict(lambda s: len(s) if isinstance(s, str) else ERROR, (1,)),
    "floor": _strict(lambda x: math.floor(x) if _is_num(x) else ERROR, (1,)),
    "ceiling": _strict(lambda x: math.ceil(x) if _is_num(x) else ERROR, (1,)),
    "round": _strict(lambda x: math.floor(x + 0.5) if _is_num(x) else ERROR, (1,)),
    "min": _strict(lambda *x: min(x) if all(map(_is_num, x)) else ERROR, tuple(range(1, 64))),
    "max": _strict(lambda *x: max(x) if all(map(_is_num, x)) else ERROR, tuple(range(1, 64))),
    "stringlistmember": _strict(_string_list_member, (2, 3)),
    "regexp": _regexp,
}
