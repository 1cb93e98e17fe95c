"""A small evaluator for the ClassAd arithmetic HTCondor uses at submit time.

Used for `$INT()`, `$REAL()`, queue counts, `if` conditions and integer
commands such as `request_cpus`. Integer division truncates toward zero and
`%` follows C, as in ClassAds. Attribute references are not resolved here: an
expression that needs one is "not a constant" and the caller decides.
"""

from __future__ import annotations

import re
from typing import Union

Number = Union[int, float, bool, str]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[-+*/%()<>!?:])
    )""", re.X)


class NotConstant(ValueError):
    """The text is not a constant expression we can evaluate."""


def tokens(pattern: re.Pattern, text: str, error: type, context: str = "") -> list:
    """[(kind, text)] by `pattern`'s named groups (unnamed: "op"); `error` on junk.

    Shared by the submit language's constant expressions and ClassAd expressions.
    """
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = pattern.match(text, pos)
        if not m or m.end() == pos:
            raise error(f"unexpected {text[pos:].strip()[:20]!r}{context}")
        pos = m.end()
        kind = m.lastgroup or "op"
        out.append((kind, m.group(kind)))
    return out


def _tokens(text: str) -> list[tuple[str, str]]:
    return tokens(_TOKEN, text, NotConstant)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i][1] if self.i < len(self.toks) else ""

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise NotConstant("unexpected end of expression")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Number:
        value = self.ternary()
        if self.i != len(self.toks):
            raise NotConstant(f"unexpected {self.peek()!r}")
        return value

    def ternary(self) -> Number:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.ternary()
            if self.take()[1] != ":":
                raise NotConstant("expected ':'")
            b = self.ternary()
            return a if _truth(cond) else b
        return cond

    LEVELS = (("||",), ("&&",), ("==", "!=", "=?=", "=!="), ("<", ">", "<=", ">="),
              ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Number:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self.LEVELS[level] and self.toks[self.i][0] == "op":
            op = self.take()[1]
            right = self.binary(level + 1)
            left = _apply(op, left, right)
        return left

    def unary(self) -> Number:
        tok = self.peek()
        if tok in ("-", "+", "!") and self.toks[self.i][0] == "op":
            self.take()
            value = self.unary()
            if tok == "!":
                return not _truth(value)
            if isinstance(value, str):
                raise NotConstant("sign applied to a string")
            return -value if tok == "-" else value
        return self.atom()

    def atom(self) -> Number:
        kind, text = self.take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return text[1:-1].encode().decode("unicode_escape")
        if kind == "name":
            low = text.lower()
            if low in ("true", "false"):
                return low == "true"
            raise NotConstant(f"attribute {text!r}")
        if text == "(":
            value = self.ternary()
            if self.take()[1] != ")":
                raise NotConstant("expected ')'")
            return value
        raise NotConstant(f"unexpected {text!r}")


def _truth(value: Number) -> bool:
    if isinstance(value, str):
        raise NotConstant("string used as a condition")
    return bool(value)


def _apply(op: str, a: Number, b: Number) -> Number:
    if op == "||":
        return _truth(a) or _truth(b)
    if op == "&&":
        return _truth(a) and _truth(b)
    if op in ("==", "=?="):
        return a == b and (op == "==" or type(a) is type(b))
    if op in ("!=", "=!="):
        return not _apply("==" if op == "!=" else "=?=", a, b)
    if isinstance(a, str) or isinstance(b, str):
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            raise NotConstant("string arithmetic")
        if op in ("<", ">", "<=", ">=") and isinstance(a, str) and isinstance(b, str):
            a, b = a.lower(), b.lower()
        else:
            raise NotConstant("string arithmetic")
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    if op == ">=":
        return a >= b
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "%"):
        if b == 0:
            raise NotConstant("division by zero")
        if isinstance(a, float) or isinstance(b, float):
            return a / b if op == "/" else _cmod(float(a), float(b))
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        return q if op == "/" else a - b * q
    raise NotConstant(f"operator {op}")


def _cmod(a: float, b: float) -> float:
    import math

    return math.fmod(a, b)


def evaluate(text: str) -> Number:
    """Evaluate a constant ClassAd expression; raise NotConstant otherwise."""
    return _Parser(text).parse()


def to_int(text: str) -> int:
    """HTCondor's string_is_long_param: an integer literal or an expression of one."""
    stripped = text.strip()
    try:
        return int(stripped, 10)
    except ValueError:
        pass
    value = evaluate(stripped)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return int(value)
    if isinstance(value, int):
        return value
    raise NotConstant(f"{text!r} is not a number")


def to_real(text: str) -> float:
    """HTCondor's string_is_double_param: a number or an expression of one."""
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    value = evaluate(stripped)
    if isinstance(value, (int, float)):
        return float(value)
    raise NotConstant(f"{text!r} is not a number")
