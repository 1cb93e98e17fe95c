"""Regular expressions for ClassAd `regexp()` that no pattern can make slow.

Python's `re` backtracks: `^(a|a)*$` against "aaa...a!" takes time exponential in
the text, and a submit file's `requirements` run at the master for every node.
This engine compiles a pattern to a Thompson NFA and runs it as a Pike VM (all
threads in lock step, one set of program counters per text position), so a
search costs at most O(len(program) x len(text)) steps, and a step budget caps
even that. What cannot run in that bound (backreferences, lookaround,
possessive or atomic groups, conditionals) is refused when the pattern is
compiled, with a message saying which construct it was, so `jrs submit` can
refuse the file before anything runs.

The syntax is the common subset of PCRE and Python: literals and escapes,
`.`, classes `[a-z]` `[^...]` with `\\d \\w \\s` (and their negations) inside and
out, POSIX classes `[[:alpha:]]`, anchors `^ $ \\A \\z \\Z \\b \\B`, groups `( )`
`(?: )` `(?P<name> )` `(?<name> )`, alternation, and the quantifiers
`* + ? {n} {n,} {n,m}` with their lazy `?` forms (laziness does not change whether
a pattern matches). Options as in HTCondor: `i` ignores case, `m` makes `^`/`$`
match at line ends, `s` lets `.` match a newline, `x` ignores white space and
`#` comments in the pattern, `f` wants the whole target matched.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Union

MAX_PATTERN = 4096
MAX_PROGRAM = 20_000  # instructions, after counted repetitions are expanded
MAX_REPEAT = 1000
STEP_BUDGET = 2_000_000  # thread steps per search
# What compiling costs, in search steps per instruction emitted (~7 us an instruction,
# ~0.3-1 us a step; ClassAd's regexp() charges it to its evaluation's budget, cached or not,
# so what the master charges does not depend on what it compiled before), and how many
# instructions of compiled patterns are kept (a 20,000-instruction program weighs
# ~1.2 MB: 1,024 of them kept were 1.2 GB of one master's memory).
COMPILE_COST = 32
CACHE_PROGRAM = 200_000


class RegexError(ValueError):
    """The pattern is not one this engine can run (bad syntax or not boundable)."""


class BudgetExceeded(RegexError):
    """A search took more steps than its budget."""


# ------------------------------------------------------------------ parsing

_POSIX = {
    "alpha": str.isalpha, "digit": str.isdigit, "alnum": str.isalnum,
    "upper": str.isupper, "lower": str.islower, "space": str.isspace,
    "punct": lambda c: c.isascii() and not c.isalnum() and c.isprintable() and c != " ",
    "xdigit": lambda c: c in "0123456789abcdefABCDEF",
    "print": str.isprintable, "blank": lambda c: c in " \t",
    "cntrl": lambda c: ord(c) < 32 or ord(c) == 127,
    "graph": lambda c: c.isprintable() and not c.isspace(),
    "word": lambda c: c.isalnum() or c == "_",
}
_SETS = {"d": lambda c: c.isdecimal(), "w": lambda c: c.isalnum() or c == "_",
         "s": lambda c: c.isspace()}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b",
            "0": "\0"}


@dataclass(frozen=True)
class _Class:
    ranges: tuple  # (lo, hi) pairs
    sets: tuple  # (predicate, negated) pairs
    negated: bool

    def has(self, c: str, fold: bool) -> bool:
        hit = self._has(c) or (fold and (self._has(c.lower()) or self._has(c.upper())))
        return hit != self.negated

    def _has(self, c: str) -> bool:
        for lo, hi in self.ranges:
            if lo <= c <= hi:
                return True
        return any(pred(c) != neg for pred, neg in self.sets)


class _Parser:
    """Pattern text -> a tree of tuples: ("lit", c) ("any",) ("class", _Class)
    ("cat", [..]) ("alt", [..]) ("rep", node, lo, hi|None) ("assert", kind) ("empty",)."""

    def __init__(self, pattern: str, extended: bool) -> None:
        self.p = pattern
        self.i = 0
        self.x = extended

    def error(self, why: str) -> RegexError:
        return RegexError(f"{why} at offset {self.i}")

    def more(self) -> bool:
        return self.i < len(self.p)

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def take(self) -> str:
        c = self.p[self.i]
        self.i += 1
        return c

    def parse(self) -> tuple:
        tree = self.alternation()
        if self.more():
            raise self.error("unbalanced )")
        return tree

    def alternation(self) -> tuple:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.take()
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self) -> tuple:
        items = []
        while self.more() and self.peek() not in "|)":
            atom = self.atom()
            if atom is None:
                continue
            items.append(self.quantified(atom))
        if not items:
            return ("empty",)
        return items[0] if len(items) == 1 else ("cat", items)

    def quantified(self, atom: tuple) -> tuple:
        self.skip_space()
        c = self.peek()
        if c in ("*", "+", "?"):
            self.take()
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{" and self._counted():
            lo, hi = self._counted_range()
        else:
            return atom
        if atom[0] == "assert":
            raise self.error("a quantifier after an anchor")
        if self.peek() == "?":
            self.take()  # lazy: the same answer to "does it match"
        elif self.peek() == "+":
            raise self.error("possessive quantifiers are not supported")
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._counted()):
            raise self.error("multiple repeat")
        return ("rep", atom, lo, hi)

    def _counted(self) -> bool:
        j = self.i + 1
        while j < len(self.p) and (self.p[j].isdigit() or self.p[j] == ","):
            j += 1
        body = self.p[self.i + 1:j]
        return j < len(self.p) and self.p[j] == "}" and bool(body) and body[0].isdigit()

    def _counted_range(self) -> tuple:
        end = self.p.index("}", self.i)
        body = self.p[self.i + 1:end]
        self.i = end + 1
        lo_text, comma, hi_text = body.partition(",")
        lo = int(lo_text)
        hi = (int(hi_text) if hi_text else None) if comma else lo
        if lo > MAX_REPEAT or (hi is not None and (hi > MAX_REPEAT or hi < lo)):
            raise self.error(f"a counted repetition must be at most {MAX_REPEAT} "
                             "and {min,max} with min <= max")
        return lo, hi

    def skip_space(self) -> None:
        while self.x and self.more():
            if self.peek().isspace():
                self.take()
            elif self.peek() == "#":
                while self.more() and self.peek() != "\n":
                    self.take()
            else:
                return

    def atom(self) -> Optional[tuple]:
        self.skip_space()
        if not self.more() or self.peek() in "|)":
            return None
        c = self.take()
        if c == "(":
            return self.group()
        if c == "[":
            return ("class", self.char_class())
        if c == ".":
            return ("any",)
        if c == "^":
            return ("assert", "^")
        if c == "$":
            return ("assert", "$")
        if c == "\\":
            return self.escape()
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c == "{" and self._counted_at(self.i - 1):
            raise self.error("nothing to repeat before '{'")
        return ("lit", c)

    def _counted_at(self, j: int) -> bool:
        saved, self.i = self.i, j
        try:
            return self._counted()
        finally:
            self.i = saved

    def group(self) -> tuple:
        if self.peek() == "?":
            self.take()
            kind = self.take() if self.more() else ""
            if kind == ":":
                pass
            elif (kind == "P" and self.peek() == "<") or (kind == "<" and self.peek() not in "=!"):
                if kind == "P":
                    self.take()
                end = self.p.find(">", self.i)
                if end < 0:
                    raise self.error("unterminated group name")
                self.i = end + 1
            elif kind == "P" and self.peek() == "=":
                raise self.error("backreferences (?P=name) are not supported")
            elif kind in ("=", "!") or (kind == "<" and self.peek() in "=!"):
                raise self.error("lookahead and lookbehind are not supported")
            elif kind == ">":
                raise self.error("atomic groups are not supported")
            elif kind == "(":
                raise self.error("conditional groups are not supported")
            elif kind == "#":
                end = self.p.find(")", self.i)
                if end < 0:
                    raise self.error("unterminated comment")
                self.i = end + 1
                return None
            else:
                raise self.error(f"the group (?{kind} is not supported (inline flags: "
                                 "use regexp's options argument)")
        inner = self.alternation()
        if self.peek() != ")":
            raise self.error("missing )")
        self.take()
        return inner

    def escape(self) -> tuple:
        if not self.more():
            raise self.error("a trailing backslash")
        c = self.take()
        if c.isdigit() and c != "0":
            raise self.error(f"backreferences (\\{c}) are not supported")
        if c in "kg" and self.peek() in "<{'":
            raise self.error(f"backreferences (\\{c}) are not supported")
        if c.lower() in _SETS:
            return ("class", _Class((), ((_SETS[c.lower()], c.isupper()),), False))
        if c in "AzZbB":
            return ("assert", c)
        if c in "GKRXCpPQEu" or (c == "x" and self.peek() == "{"):
            raise self.error(f"\\{c} is not supported")
        return ("lit", self._escaped_char(c))

    def _escaped_char(self, c: str) -> str:
        if c == "x":
            digits = self.p[self.i:self.i + 2]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error("\\x wants two hex digits")
            self.i += 2
            return chr(int(digits, 16))
        if c.isalnum() and c not in _ESCAPES:
            raise self.error(f"unknown escape \\{c}")
        return _ESCAPES.get(c, c)

    def char_class(self) -> _Class:
        negated = False
        if self.peek() == "^":
            self.take()
            negated = True
        ranges: list = []
        sets: list = []
        first = True
        while True:
            if not self.more():
                raise self.error("missing ]")
            c = self.take()
            if c == "]" and not first:
                break
            first = False
            if c == "[" and self.peek() == ":":
                end = self.p.find(":]", self.i)
                name = self.p[self.i + 1:end] if end > 0 else ""
                neg = name.startswith("^")
                pred = _POSIX.get(name.lstrip("^"))
                if pred is None:
                    raise self.error(f"unknown class [:{name}:]")
                sets.append((pred, neg))
                self.i = end + 2
                continue
            if c == "\\":
                if not self.more():
                    raise self.error("a trailing backslash")
                e = self.take()
                if e.lower() in _SETS:
                    sets.append((_SETS[e.lower()], e.isupper()))
                    continue
                if e.isdigit() and e != "0":
                    raise self.error(f"backreferences (\\{e}) are not supported")
                lo = "\b" if e == "b" else self._escaped_char(e)
            else:
                lo = c
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.take()
                hi = self.take()
                if hi == "\\":
                    if not self.more():
                        raise self.error("a trailing backslash")
                    hi = self._escaped_char(self.take())
                if hi < lo:
                    raise self.error(f"bad range {lo}-{hi}")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        return _Class(tuple(ranges), tuple(sets), negated)


# ------------------------------------------------------------------ compiling

def _lower(c: str) -> str:
    """One character's lower case, or itself where lowering would change the length
    (the text must keep its positions); classes fold at match time instead."""
    low = c.lower()
    return low if len(low) == 1 else c


# instructions: ("char", c) ("any",) ("anynl",) ("class", _Class) ("split", a, b)
# ("jmp", a) ("assert", kind) ("match",)

class _Compiler:
    def __init__(self, fold: bool) -> None:
        self.prog: list = []
        self.fold = fold

    def emit(self, ins: list) -> int:
        if len(self.prog) >= MAX_PROGRAM:
            raise RegexError(_TOO_BIG)
        self.prog.append(ins)
        return len(self.prog) - 1

    def node(self, t: tuple, dotall: bool) -> None:
        kind = t[0]
        if kind == "lit":
            self.emit(["char", _lower(t[1]) if self.fold else t[1]])
        elif kind == "any":
            self.emit(["any" if dotall else "anynl"])
        elif kind == "class":
            self.emit(["class", t[1]])
        elif kind == "assert":
            self.emit(["assert", t[1]])
        elif kind == "empty":
            pass
        elif kind == "cat":
            for part in t[1]:
                self.node(part, dotall)
        elif kind == "alt":
            jumps = []
            for k, branch in enumerate(t[1]):
                if k < len(t[1]) - 1:
                    split = self.emit(["split", 0, 0])
                    self.prog[split][1] = len(self.prog)
                    self.node(branch, dotall)
                    jumps.append(self.emit(["jmp", 0]))
                    self.prog[split][2] = len(self.prog)
                else:
                    self.node(branch, dotall)
            for j in jumps:
                self.prog[j][1] = len(self.prog)
        elif kind == "rep":
            _, inner, lo, hi = t
            for _ in range(lo):
                self.node(inner, dotall)
            if hi is None:
                split = self.emit(["split", 0, 0])
                self.prog[split][1] = len(self.prog)
                self.node(inner, dotall)
                self.emit(["jmp", split])
                self.prog[split][2] = len(self.prog)
            else:
                splits = []
                for _ in range(hi - lo):
                    split = self.emit(["split", 0, 0])
                    self.prog[split][1] = len(self.prog)
                    splits.append(split)
                    self.node(inner, dotall)
                for s in splits:
                    self.prog[s][2] = len(self.prog)


@dataclass(frozen=True)
class Regex:
    """A compiled pattern: `search(text)` says whether it matches anywhere."""

    prog: tuple
    fold: bool
    multiline: bool
    full: bool

    def search(self, text: str, budget: int = STEP_BUDGET,
               spent: Optional[list] = None) -> bool:
        """`spent[0]`, if given, is increased by the steps taken (also when over budget)."""
        if spent is None:
            return self._search(text, budget)[0]
        try:
            matched, steps = self._search(text, budget)
        except BudgetExceeded:
            spent[0] += budget + 1
            raise
        spent[0] += steps
        return matched

    def _search(self, text: str, budget: int) -> tuple:
        prog, fold, multi = self.prog, self.fold, self.multiline
        n = len(text)
        if fold:  # ASCII: str.lower is per character there (the final sigma is not)
            text = text.lower() if text.isascii() else "".join(map(_lower, text))
        steps = 0
        mark = [-1] * len(prog)

        def at(kind: str, i: int) -> bool:
            if kind == "^":
                return i == 0 or (multi and text[i - 1] == "\n")
            if kind == "$":
                return i == n or (text[i] == "\n" and (multi or i == n - 1))
            if kind == "A":
                return i == 0
            if kind == "z":
                return i == n
            if kind == "Z":
                return i == n or (i == n - 1 and text[i] == "\n")
            before = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
            after = i < n and (text[i].isalnum() or text[i] == "_")
            return (before != after) == (kind == "b")

        def add(threads: list, pc: int, i: int) -> bool:
            """Follow jumps from pc at position i; True if a match is reached."""
            nonlocal steps
            stack = [pc]
            while stack:
                pc = stack.pop()
                if mark[pc] == i:
                    continue
                mark[pc] = i
                steps += 1
                ins = prog[pc]
                op = ins[0]
                if op == "jmp":
                    stack.append(ins[1])
                elif op == "split":
                    stack.append(ins[2])
                    stack.append(ins[1])
                elif op == "assert":
                    if at(ins[1], i):
                        stack.append(pc + 1)
                elif op == "match":
                    if not self.full or i == n:
                        return True
                else:
                    threads.append(pc)
            return False

        current: list = []
        for i in range(n + 1):
            if (not self.full or i == 0) and add(current, 0, i):
                return True, steps
            if steps > budget:
                raise BudgetExceeded(f"the search took more than {budget} steps")
            if i == n or not current:
                if i == n or self.full:
                    return False, steps
                continue
            c = text[i]
            nxt: list = []
            for pc in current:
                ins = prog[pc]
                op = ins[0]
                steps += 1
                if op == "char":
                    ok = ins[1] == c
                elif op == "anynl":
                    ok = c != "\n"
                elif op == "any":
                    ok = True
                else:
                    ok = ins[1].has(c, fold)
                if ok and add(nxt, pc + 1, i + 1):
                    return True, steps
            current = nxt
        return False, steps


def _parse(pattern: str, options: str) -> tuple:
    """(tree, lower-cased options) of a pattern, or RegexError."""
    if not isinstance(pattern, str) or not isinstance(options, str):
        raise RegexError("a pattern and its options are strings")
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"the pattern is longer than {MAX_PATTERN} characters")
    opts = options.lower()
    bad = set(opts) - set("imsxf")
    if bad:
        raise RegexError(f"unknown regexp option(s) {''.join(sorted(bad))!r} "
                         "(known: i, m, s, x, f)")
    return _Parser(pattern, "x" in opts).parse(), opts


def _size(t: tuple) -> int:
    """How many instructions _Compiler.node emits for `t` (exact, without emitting)."""
    kind = t[0]
    if kind == "empty":
        return 0
    if kind == "cat":
        return sum(_size(part) for part in t[1])
    if kind == "alt":
        return sum(_size(b) for b in t[1]) + 2 * (len(t[1]) - 1)
    if kind == "rep":
        _, inner, lo, hi = t
        s = _size(inner)
        return lo * s + (s + 2 if hi is None else (hi - lo) * (s + 1))
    return 1


_TOO_BIG = (f"the pattern compiles to more than {MAX_PROGRAM} steps "
            "(fewer or smaller counted repetitions)")


def check(pattern: str, options: str = "") -> int:
    """The size of the program `pattern` compiles to, or RegexError saying why it is
    refused, in O(len(pattern)): what a parse may afford for every literal pattern of
    an expression (compiling, ~4 us an instruction, is charged where it runs)."""
    tree, _ = _parse(pattern, options)
    size = _size(tree) + 1  # and "match"
    if size > MAX_PROGRAM:
        raise RegexError(_TOO_BIG)
    return size


def _build(pattern: str, options: str) -> Regex:
    tree, opts = _parse(pattern, options)
    fold = "i" in opts
    c = _Compiler(fold)
    c.node(tree, "s" in opts)
    c.emit(["match"])
    return Regex(tuple(tuple(i) for i in c.prog), fold, "m" in opts, "f" in opts)


_cache: OrderedDict = OrderedDict()  # (pattern, options) -> Regex or refusal text, LRU
_cached = [0]  # instructions kept in _cache (a refusal counts one)


def compiled(pattern: str, options: str = "") -> Union[Regex, str]:
    """The compiled pattern, or the text of why it is refused; both kept (a refusal is
    as dear to find as a program: up to MAX_PROGRAM instructions emitted), at most
    CACHE_PROGRAM instructions in all."""
    key = (pattern, options)
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    try:
        hit = _build(pattern, options)
    except RegexError as exc:
        hit = str(exc)
    _cache[key] = hit
    _cached[0] += len(hit.prog) if isinstance(hit, Regex) else 1
    while len(_cache) > 1 and _cached[0] > CACHE_PROGRAM:
        _, old = _cache.popitem(last=False)
        _cached[0] -= len(old.prog) if isinstance(old, Regex) else 1
    return hit


def cost(pattern: str, result: Union[Regex, str]) -> int:
    """What compiling `pattern` to `result` costs, in steps (whether cached or not)."""
    return len(pattern) + COMPILE_COST * (len(result.prog) if isinstance(result, Regex)
                                          else MAX_PROGRAM)


def compile(pattern: str, options: str = "") -> Regex:
    """The compiled pattern, or RegexError saying why it is refused."""
    if not isinstance(pattern, str) or not isinstance(options, str):
        raise RegexError("a pattern and its options are strings")
    hit = compiled(pattern, options)
    if isinstance(hit, str):
        raise RegexError(hit)
    return hit


def search(pattern: str, text: str, options: str = "") -> bool:
    return compile(pattern, options).search(text)
