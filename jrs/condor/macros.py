"""Macro expansion exactly as HTCondor's submit language does it.

HTCondor's algorithm (config.cpp `expand_macro`) is: find the leftmost valid
reference, replace it by the *raw* value it names, and rescan the whole string
from the start; finally turn `$(DOLLAR)` into `$`. `$$(...)` is left for the
execute side. What counts as a reference matters as much as what it expands
to, so the scanner mirrors HTCondor's rules:

* `$(NAME)` / `$(NAME:default)`: NAME is made of letters, digits and `_./`;
  after the colon also `$`, space, `,`, `\\` and a parenthesised run. The
  default is used when NAME is undefined *or empty*.
* `$FUNC(body)`: the body ends at the first `)`. Functions: ENV, INT, REAL,
  CHOICE, SUBSTR, RANDOM_CHOICE, RANDOM_INTEGER, BASENAME, DIRNAME and
  `$F[pdnxqbafw](name)` for parts of a path.
"""

from __future__ import annotations

import os
import random
import re
from typing import Callable, Mapping, Optional

from .errors import SubmitError
from .expr import NotConstant, to_int, to_real

IDCHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./")
AFTER_COLON = IDCHARS | frozenset("$ ,\\:")
FUNCTIONS = frozenset(("ENV", "RANDOM_CHOICE", "RANDOM_INTEGER", "CHOICE", "SUBSTR", "INT",
                       "REAL", "BASENAME", "DIRNAME"))
F_FLAGS = frozenset("pdnxqbafw")
MAX_SUBSTITUTIONS = 100_000
MAX_LENGTH = 1 << 22

Lookup = Callable[[str], Optional[str]]


def _prefix_kind(name: str) -> Optional[str]:
    """The kind of reference `$name(` is: '' normal, a function name, or None."""
    if name == "":
        return ""
    if name[0] == "F" and all((c.lower() in F_FLAGS) for c in name[1:]):
        return name
    if name in FUNCTIONS:
        return name
    return None


def find_reference(text: str, start: int = 0, skip: Optional[Callable[[str, str], bool]] = None):
    """Locate the leftmost reference at or after `start`.

    Returns (begin, end, kind, body) where text[begin:end] is the whole
    reference, or None. `skip(kind, body)` may veto a reference, which is then
    stepped over as HTCondor's ConfigMacroBodyCheck does.
    """
    pos = start
    n = len(text)
    while True:
        dollar = text.find("$", pos)
        if dollar < 0:
            return None
        p = dollar + 1
        double = p < n and text[p] == "$"
        if double:
            p += 1
        q = p
        while q < n and (text[q].isalnum() or text[q] == "_"):
            q += 1
        if q >= n or text[q] != "(":
            pos = q if q > dollar + 1 else dollar + 1
            continue
        kind = None if double else _prefix_kind(text[p:q])
        if kind is None:
            pos = q
            continue
        body_start = q + 1
        i = body_start
        if kind in ("", "ENV"):
            colon = False
            ok = True
            while i < n and text[i] != ")":
                c = text[i]
                i += 1
                if c == ":" and not colon:
                    colon = True
                elif colon:
                    if c == "(":
                        close = text.find(")", i)
                        if close >= 0:
                            i = close + 1
                    elif c not in AFTER_COLON:
                        ok = False
                        break
                elif c not in IDCHARS:
                    ok = False
                    break
            if not ok:
                pos = body_start
                continue
        else:
            close = text.find(")", i)
            i = close if close >= 0 else n
        if i >= n:
            pos = body_start
            continue
        body = text[body_start:i]
        if skip is not None and skip(kind, body):
            pos = i
            continue
        return dollar, i + 1, kind, body


def _is_dollar(kind: str, body: str) -> bool:
    return kind == "" and body.upper() == "DOLLAR"


class Expander:
    """Expands text against a lookup of raw macro values (case-insensitive names)."""

    def __init__(self, lookup: Lookup, cwd: str, environ: Optional[Mapping[str, str]] = None):
        self.lookup = lookup
        self.cwd = cwd
        self.environ = os.environ if environ is None else environ

    def expand(self, text: str, defer: Optional[frozenset] = None,
               deep: Optional[frozenset] = None) -> str:
        """Full expansion; references to names in `defer` (lower case) are left
        untouched, and so are functions ($INT, $CHOICE...) whose arguments name
        a macro of `deep` (the macros whose values depend on a deferred name):
        `$INT(seed)` with `seed = $(Process) * 7` must wait for the job."""
        if "$" not in text:
            return text
        if defer:
            deep = deep or defer

            def skip(kind: str, body: str) -> bool:
                return _is_dollar(kind, body) or _mentions(kind, body, defer, deep)
        else:
            skip = _is_dollar
        count = 0
        while True:
            ref = find_reference(text, 0, skip)
            if ref is None:
                break
            begin, end, kind, body = ref
            value = self.evaluate(kind, body)
            text = text[:begin] + value + text[end:]
            count += 1
            if count > MAX_SUBSTITUTIONS or len(text) > MAX_LENGTH:
                raise SubmitError("macro expansion does not end (a macro that refers to "
                                  "itself through others?)")
        # a deferred (partial) expansion keeps $(DOLLAR) for the final pass
        return text if defer else _replace_dollar(text)

    def value_of(self, name: str) -> Optional[str]:
        return self.lookup(name.lower())

    def evaluate(self, kind: str, body: str) -> str:
        if kind == "":
            name, colon, default = body.partition(":")
            value = self.value_of(name)
            if colon and not value:
                return default
            return value or ""
        if kind == "ENV":
            name, colon, default = body.partition(":")
            value = self.environ.get(name)
            if value is None:
                return default if colon else "UNDEFINED"
            return value
        if kind[0] == "F":
            return path_parts(self.value_of(body.strip()), kind[1:], self.cwd)
        return self.evaluate_func(kind, body)

    def _arg_value(self, arg: str) -> str:
        """A function argument: a macro name's expanded value, else the text itself."""
        value = self.value_of(arg.strip()) if arg.strip() else None
        if value is None:
            value = arg
        return self.expand(value) if "$" in value else value

    def evaluate_func(self, kind: str, body: str) -> str:
        try:
            return _FUNCS[kind](self, body)
        except NotConstant as exc:
            raise SubmitError(f"${kind}({body}): {exc}")


def _mentions(kind: str, body: str, names: frozenset, deep: frozenset) -> bool:
    """Whether a reference depends on one of `names` (so it must wait for a job)."""
    if kind == "":
        return body.partition(":")[0].lower() in names
    if kind == "ENV":
        return False
    return any(word.lower() in deep for word in _WORD_SPLIT.split(body) if word)


_WORD_SPLIT = re.compile(r"[^A-Za-z0-9_.]+")
_BODIES = re.compile(r"\$[A-Za-z]*\(([^)]*)\)")


def dependents(table: dict, names: frozenset) -> frozenset:
    """`names` plus every macro of `table` whose raw value refers, directly or
    through other macros, to one of them."""
    refs: dict = {}
    for key, raw in table.items():
        if "$" in raw:
            words = {w.lower() for body in _BODIES.findall(raw)
                     for w in _WORD_SPLIT.split(body) if w}
            if words:
                refs[key] = words
    found = set(names)
    changed = True
    while changed:
        changed = False
        for key, words in refs.items():
            if key not in found and not words.isdisjoint(found):
                found.add(key)
                changed = True
    return frozenset(found)


_DOLLAR = re.compile(r"\$\(DOLLAR\)", re.I)


def _replace_dollar(text: str) -> str:
    if "$(" not in text:
        return text
    return _DOLLAR.sub("$", text)


# ----------------------------------------------------------------- functions


def _int(ex: Expander, body: str) -> str:
    name, comma, fmt = body.partition(",")
    value = ex._arg_value(name)
    try:
        number = to_int(value)
    except NotConstant:
        raise SubmitError(f"$INT() macro: {value} does not evaluate to an integer")
    return _format(fmt if comma else "", "d", number, "$INT")


def _real(ex: Expander, body: str) -> str:
    name, comma, fmt = body.partition(",")
    value = ex._arg_value(name)
    try:
        number = to_real(value)
    except NotConstant:
        raise SubmitError(f"$REAL() macro: {value} does not evaluate to a real")
    if not comma:
        return _format_g16(number)
    text = _format(fmt, "f", number, "$REAL")
    return text if "." in text else text + ".0"


_FMT = re.compile(r"^%([-+ #0]*)(\d*)(?:\.(\d+))?(l{0,2}|h{0,2}|j|z|t|L)?([diouxXeEfFgGaAc])$")


def _format(fmt: str, default: str, number, func: str) -> str:
    if not fmt:
        return str(int(number)) if default == "d" else _format_g16(number)
    m = _FMT.match(fmt.strip())
    ints, reals = "diouxXc", "eEfFgGaA"
    if not m or (func == "$INT" and m.group(5) not in ints) or \
            (func == "$REAL" and m.group(5) not in reals):
        raise SubmitError(f"{func}() macro: '{fmt}' is not a valid format specifier")
    flags, width, prec, _, conv = m.groups()
    spec = "%" + flags + width + ("." + prec if prec is not None else "")
    if conv in "di":
        return (spec + "d") % int(number)
    if conv == "u":
        return (spec + "d") % (int(number) % (1 << 64))
    if conv in "oxX":
        value = int(number) if int(number) >= 0 else int(number) % (1 << 64)
        return (spec + conv) % value
    if conv == "c":
        return chr(int(number) & 0xFF)
    if conv in "aA":
        return float(number).hex()
    return (spec + conv) % float(number)


def _format_g16(number: float) -> str:
    """C's %.16G."""
    return ("%.16G" % number)


def _split_list(text: str) -> list[str]:
    """HTCondor's StringList on commas (and blanks around them), empties dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _choice(ex: Expander, body: str) -> str:
    entries = body.split(",")
    index_text = ex._arg_value(entries[0].strip())
    try:
        index = to_int(index_text)
    except NotConstant:
        index = -1
    if index < 0:
        raise SubmitError(f"$CHOICE() macro: {index_text} is invalid index")
    if len(entries) == 2:
        list_name = entries[1].strip()
        raw = ex.value_of(list_name)
        if raw is None:
            raise SubmitError(f"$CHOICE() macro: no list named {list_name}")
        items = _split_list(ex.expand(raw))
    else:
        items = [e.strip() for e in entries[1:]]
    if index >= len(items):
        raise SubmitError(f"$CHOICE() macro: index {index} is out of range")
    return items[index]


def _substr(ex: Expander, body: str) -> str:
    parts = body.split(",")
    if len(parts) < 2:
        raise SubmitError("$SUBSTR() macro: no length specified")
    try:
        start = to_int(ex._arg_value(parts[1].strip()))
        length = to_int(ex._arg_value(parts[2].strip())) if len(parts) > 2 else None
    except NotConstant as exc:
        raise SubmitError(f"$SUBSTR() macro: {exc}")
    raw = ex.value_of(parts[0].strip())
    if raw is None:
        return ""
    value = ex.expand(raw)
    n = len(value)
    if start < 0:
        start = max(n + start, 0)
    start = min(start, n)
    rest = n - start
    if length is None:
        length = rest
    elif length < 0:
        length = max(rest + length, 0)
    return value[start:start + min(length, rest)]


def _random_choice(ex: Expander, body: str) -> str:
    items = _split_list(body)
    if len(items) == 1:
        raw = ex.value_of(items[0])
        if raw is not None:
            items = _split_list(ex.expand(raw))
    if not items:
        raise SubmitError("$RANDOM_CHOICE() macro: empty list")
    return random.choice(items)


def _random_integer(ex: Expander, body: str) -> str:
    parts = _split_list(body)
    try:
        low, high = int(parts[0]), int(parts[1])
        step = int(parts[2]) if len(parts) > 2 else 1
    except (ValueError, IndexError):
        raise SubmitError(f"$RANDOM_INTEGER({body}): want min, max[, step]")
    if step < 1 or low > high:
        raise SubmitError(f"$RANDOM_INTEGER({body}): invalid range or step")
    return str(low + random.randrange((high - low) // step + 1) * step)


def _basename(ex: Expander, body: str) -> str:
    return path_parts(ex.value_of(body.strip()), "nx", ex.cwd)


def _dirname(ex: Expander, body: str) -> str:
    return path_parts(ex.value_of(body.strip()), "p", ex.cwd)


_FUNCS: dict = {
    "INT": _int, "REAL": _real, "CHOICE": _choice, "SUBSTR": _substr,
    "RANDOM_CHOICE": _random_choice, "RANDOM_INTEGER": _random_integer,
    "BASENAME": _basename, "DIRNAME": _dirname,
}


def path_parts(value: Optional[str], flags: str, cwd: str) -> str:
    """`$F<flags>(name)`: the parts of a path HTCondor's filename macro keeps.

    p directory, d last directory (dd: last two...), n name without
    extension, x extension, q quote, b bare (no trailing `/`, no leading `.`),
    f full path, a forward slashes, w backslashes.
    """
    if value is None:
        return ""
    flags = flags.lower()
    quoted = "q" in flags
    if value.startswith('"'):
        value = value[1:]
    if value.endswith('"'):
        value = value[:-1]
    if "f" in flags and not value.startswith("/"):
        value = cwd.rstrip("/") + "/" + value
    if "a" in flags:
        value = value.replace("\\", "/")
    ixn = value.rfind("/") + 1
    dot = value.rfind(".", ixn)
    ixx = dot if dot > ixn else len(value)
    x, nm, p = "x" in flags, "n" in flags, "p" in flags
    dcount = flags.count("d")
    if ixn == 0 and (x or nm):
        p, dcount = False, 0
    if dcount:
        if ixn == 0:
            result = ""
        else:
            dirs = value[:ixn - 1]
            start = len(dirs)
            for _ in range(dcount):
                cut = dirs.rfind("/", 0, start)
                start = cut if cut >= 0 else -1
                if cut < 0:
                    break
            begin = start + 1 if start >= 0 else 0
            if begin == len(dirs) and dirs == "":
                begin = 0
            end = ixx if (nm and not x) else (ixn if not (nm or x) else len(value))
            result = value[begin:end]
            if dirs == "" and not (nm or x):
                result = "/"
    elif x and not nm and not p:
        result = value[ixx:]
    elif x and nm and not p:
        result = value[ixn:]
    elif nm and not x and not p:
        result = value[ixn:ixx]
    elif p and not nm and not x:
        result = value[:ixn]
    elif p and nm and not x:
        result = value[:ixx]
    else:
        result = value
    if "b" in flags:
        if (p or dcount) and result.endswith("/"):
            result = result[:-1]
        elif x and not nm and result.startswith("."):
            result = result[1:]
    if "w" in flags:
        result = result.replace("/", "\\")
    return f'"{result}"' if quoted else result


def expand_self(text: str, name: str, old: Optional[str]) -> str:
    """Expand only references to `name` (HTCondor does this on `X = $(X) more`)."""
    low = name.lower()

    def skip(kind: str, body: str) -> bool:
        return not (kind == "" and body.partition(":")[0].lower() == low)

    while True:
        ref = find_reference(text, 0, skip)
        if ref is None:
            return text
        begin, end, _, body = ref
        _, colon, default = body.partition(":")
        value = old or (default if colon else "")
        text = text[:begin] + value + text[end:]
