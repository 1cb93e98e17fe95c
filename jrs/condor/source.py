"""Reading a submit file: lines, continuations, comments, include and if/else.

The reader walks the file once, applying `name = value` lines to a macro
table as it goes (conditions and include names are expanded against the table
as it stands at that line, as HTCondor does) and hands each `queue`
statement, with a snapshot of the table, to the caller.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .errors import SubmitError
from .macros import Expander, expand_self
from .predefined import predefined
from .unsupported import UNSUPPORTED, warning

MAX_INCLUDE_DEPTH = 20
_INCLUDE = re.compile(r"^include\s*(?P<mode>\w+)?\s*:\s*(?P<arg>.*)$", re.I)
_KEYWORD = re.compile(r"^(?P<kw>if|elif|else|endif|queue)(?:\s+(?P<rest>.*))?$", re.I | re.S)
_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_NAME = re.compile(r"^[+]?[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass
class QueueStatement:
    """One `queue` line (plus its item lines) and the macros in force there."""

    args: str
    items: Optional[list]  # lines of an inline `( ... )` list, else None
    macros: dict
    path: str
    line: int


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join `\\` continuations; strip both ends; yield (first line number, text).

    As in HTCondor, a comment line does not continue, and a `#` line inside a
    continuation counts as empty.
    """
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].strip()
        i += 1
        if line.startswith("#"):
            yield number, line
            continue
        while line.endswith("\\"):
            line = line[:-1]
            if i >= len(lines):
                break
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                nxt = ""
            line += nxt
        yield number, line


class Reader:
    """Walks a submit file (and its includes), keeping the macro table current."""

    def __init__(self, path: str, environ: Optional[dict] = None,
                 warn: Optional[Callable[[str], None]] = None,
                 now: Optional[float] = None) -> None:
        self.path = path
        self.submit_dir = os.path.dirname(os.path.abspath(path))
        self.macros: dict = {}
        self.defaults = predefined(path, now)
        self.warn = warn
        self.warned: set = set()
        self.expander = Expander(self.lookup, self.submit_dir, environ)

    def lookup(self, name: str) -> Optional[str]:
        """A macro as the file has set it so far, else HTCondor's predefined value."""
        value = self.macros.get(name)
        return self.defaults.get(name) if value is None else value

    def read_text(self, path: str) -> str:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise SubmitError(f"cannot read: {exc.strerror}", path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")

    def statements(self) -> Iterator[QueueStatement]:
        yield from self._walk(self.path, self.read_text(self.path), 0)

    def _walk(self, path: str, text: str, depth: int) -> Iterator[QueueStatement]:
        # condition stack: (this branch active, some branch already taken, line)
        stack: list[list] = []
        lines = logical_lines(text)
        for number, line in lines:
            try:
                if not line or line.startswith("#"):
                    continue
                active = all(frame[0] for frame in stack)
                kw = _KEYWORD.match(line)
                word = kw.group("kw").lower() if kw else ""
                if word in ("if", "elif", "else", "endif"):
                    self._condition(word, (kw.group("rest") or "").strip(), stack, number,
                                    active_outer=all(f[0] for f in stack[:-1]))
                    continue
                if not active:
                    continue
                if word == "queue":
                    args = self.expander.expand(kw.group("rest") or "").strip()
                    items = None
                    if self._opens_list(args):
                        items = self._collect_items(lines, path, number)
                    snapshot = dict(self.macros)
                    yield QueueStatement(args, items, snapshot, path, number)
                    continue
                inc = _INCLUDE.match(line)
                if inc:
                    yield from self._include(inc.group("mode"), inc.group("arg"), path, depth)
                    continue
                self._assign(line, path, number)
            except SubmitError as exc:
                raise exc.at(path, number)
        if stack:
            raise SubmitError("`if` without `endif`", path, stack[-1][2])

    @staticmethod
    def _opens_list(args: str) -> bool:
        """A queue line ending in an unclosed `(` continues on the lines below."""
        open_at = args.rfind("(")
        return open_at >= 0 and ")" not in args[open_at:]

    @staticmethod
    def _collect_items(lines: Iterator[tuple[int, str]], path: str, start: int) -> list:
        items = []
        for _, line in lines:
            if line.startswith(")"):
                return items
            if line and not line.startswith("#"):
                items.append(line)
        raise SubmitError(f"Reached end of file without finding closing brace ')' for "
                          f"Queue command on line {start}", path, start)

    def _include(self, mode: Optional[str], arg: str, path: str, depth: int):
        if depth >= MAX_INCLUDE_DEPTH:
            raise SubmitError("includes nested too deeply (an include loop?)")
        target = self.expander.expand(arg).strip()
        if not target:
            raise SubmitError("include needs a file name")
        base = os.path.dirname(os.path.abspath(path))
        mode = (mode or "").lower()
        if mode == "command":
            proc = subprocess.run(target, shell=True, cwd=base, stdin=subprocess.DEVNULL,
                                  capture_output=True)
            if proc.returncode != 0:
                raise SubmitError(f"include command failed with status {proc.returncode}: "
                                  f"{target}")
            text = proc.stdout.decode("utf-8", "replace")
            yield from self._walk(f"{path}<{target}>", text, depth + 1)
            return
        if mode not in ("", "ifexist"):
            raise SubmitError(f"unknown include form `include {mode}`")
        full = os.path.join(base, target)
        if mode == "ifexist" and not os.path.exists(full):
            return
        try:
            text = self.read_text(full)
        except SubmitError as exc:
            raise SubmitError(f"include {target}: {exc.reason}")
        yield from self._walk(full, text, depth + 1)

    def _condition(self, word: str, rest: str, stack: list, number: int,
                   active_outer: bool) -> None:
        if word == "if":
            outer = all(frame[0] for frame in stack)
            value = self._truth(rest) if outer else False
            stack.append([value and outer, value, number])
            return
        if not stack:
            raise SubmitError(f"`{word}` without `if`")
        frame = stack[-1]
        if word == "endif":
            stack.pop()
        elif word == "else":
            frame[0] = active_outer and not frame[1]
            frame[1] = True
        else:  # elif
            value = (not frame[1]) and active_outer and self._truth(rest)
            frame[0] = value
            frame[1] = frame[1] or value

    def _truth(self, condition: str) -> bool:
        """HTCondor's `if`: `defined NAME`, `version op x.y`, a boolean (true/yes/t,
        false/no/f) or a number; `!` negates. Anything else, comparisons included,
        is an error in HTCondor 24.0 ("complex conditionals are not supported")."""
        negate = False
        text = condition.strip()
        while text.startswith("!"):
            negate, text = not negate, text[1:].strip()
        m = re.match(r"^defined\s+(.+)$", text, re.I)
        if m:
            name = self.expander.expand(m.group(1)).strip()
            result = bool(self.lookup(name.lower()))
        else:
            expanded = self.expander.expand(text).strip()
            low = expanded.lower()
            if low in ("true", "yes", "t"):
                result = True
            elif low in ("false", "no", "f", "", "defined"):
                result = False
            elif low.startswith("version"):
                result = _version_test(expanded[7:].strip())
            elif _NUMBER.match(expanded):
                result = float(expanded) != 0
            else:
                raise SubmitError(f"{condition} is not a valid if condition because complex "
                                  "conditionals are not supported")
        return result != negate

    def _assign(self, line: str, path: str, number: int) -> None:
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not name:
            raise SubmitError(f"expected `name = value` or a queue statement, got: {line}")
        if not _NAME.match(name):
            raise SubmitError(f"invalid command name {name!r}")
        written = name
        if name.startswith("+"):
            name = "MY." + name[1:]
        key = name.lower()
        if key in UNSUPPORTED and key not in self.warned and self.warn is not None:
            self.warned.add(key)
            self.warn(warning(written, path, number))
        value = value.strip()
        if "$" in value:
            value = expand_self(value, key, self.lookup(key))
        self.macros[key] = value


def _version_test(rest: str) -> bool:
    """`if version >= 8.9`: compare against the HTCondor version we follow (24.0)."""
    m = re.match(r"^(==|!=|>=|<=|>|<)?\s*(\d+\.\d+(?:\.\d+)?)$", rest)
    if not m:
        raise SubmitError(f"bad version test: version {rest}")
    op = m.group(1) or "=="
    want = tuple(int(p) for p in m.group(2).split(".") if p)
    have = (24, 0, 24)[: len(want)]
    return {"==": have == want, "!=": have != want, ">=": have >= want,
            "<=": have <= want, ">": have > want, "<": have < want}[op]
