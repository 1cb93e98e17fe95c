"""The `queue` statement: count, variables, and where the items come from.

    queue [N]
    queue [N] [VARS] in      [slice] (item, item ...)   or on one line
    queue [N] [VARS] from    [slice] FILE | ( lines )
    queue [N] [VARS] matching [slice] [files|dirs] GLOB ...

Items are produced lazily where they can be, so a million-line item file is
never held in memory. Each item row is a tuple of values, one per variable.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Optional

from .errors import SubmitError
from .expr import NotConstant, to_int

_KEYWORDS = re.compile(r"(?:^|(?<=[\s,]))(in|from|matching)(?=\s|\(|\[|$)", re.I)
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SLICE = re.compile(r"^\[\s*(-?\d*)\s*(?::\s*(-?\d*)\s*)?(?::\s*(-?\d*)\s*)?\]")
_FIELD_SEP = re.compile(r"\s*,\s*|\s+")


@dataclass
class QueueSpec:
    """A parsed queue statement."""

    count: int = 1
    variables: list = field(default_factory=list)
    mode: Optional[str] = None  # None, "in", "from", "matching"
    slice: Optional[tuple] = None
    source: str = ""  # file name, glob patterns, or the one-line item list
    match_kind: Optional[str] = None  # "files", "dirs" or None (both)


def parse_queue(args: str) -> QueueSpec:
    """Parse the text after `queue` (macros already expanded)."""
    spec = QueueSpec()
    m = _KEYWORDS.search(args)
    head = args[: m.start()] if m else args
    if m:
        spec.mode = m.group(1).lower()
        rest = args[m.end():].strip()
        sm = _SLICE.match(rest)
        if sm:
            spec.slice = tuple(int(g) if g not in (None, "") else None for g in sm.groups())
            if spec.slice[2] == 0:
                raise SubmitError("slice step cannot be zero")
            rest = rest[sm.end():].strip()
        if spec.mode == "matching":
            km = re.match(r"^(files|dirs)\b\s*", rest, re.I)
            if km:
                spec.match_kind = km.group(1).lower()
                rest = rest[km.end():]
        spec.source = rest
        spec.variables, count_text = _split_head(head)
    else:
        count_text = head.strip()
    if count_text:
        try:
            spec.count = to_int(count_text)
        except NotConstant:
            raise SubmitError("Invalid Queue count expression")
        if spec.count < 0:
            raise SubmitError("Queue count out of range")
    return spec


def _split_head(head: str) -> tuple[list, str]:
    """`[N] [var[, var ...]]` before the keyword -> (variables, count text)."""
    words = head.strip()
    if not words:
        return [], ""
    count = ""
    first = words.split(None, 1)
    if not _VAR.match(first[0].split(",")[0]):
        count = first[0]
        words = first[1] if len(first) > 1 else ""
    names = [w for w in re.split(r"[\s,]+", words) if w]
    for name in names:
        if not _VAR.match(name):
            raise SubmitError(f"invalid queue variable name {name!r}")
    return names, count


def _strip_parens(text: str) -> tuple[bool, str]:
    text = text.strip()
    if text.startswith("("):
        if not text.endswith(")"):
            raise SubmitError("unbalanced '(' in queue item list")
        return True, text[1:-1]
    return False, text


def _split_row(line: str, nvars: int) -> tuple:
    """One `from` line into values: each variable takes a field, the last the rest."""
    if nvars <= 1:
        return (line.strip(),)
    values = []
    rest = line.strip()
    for _ in range(nvars - 1):
        m = _FIELD_SEP.search(rest)
        if not m:
            values.append(rest)
            rest = ""
            continue
        values.append(rest[: m.start()])
        rest = rest[m.end():]
    values.append(rest.strip())
    return tuple(values)


def _in_items(text: str, lines: Optional[list]) -> Iterator[str]:
    if lines is not None:
        chunks = lines
    else:
        _, inner = _strip_parens(text)
        chunks = [inner]
    for chunk in chunks:
        for word in re.split(r"[\s,]+", chunk):
            if word:
                yield word


def _from_lines(spec: QueueSpec, lines: Optional[list], submit_dir: str) -> Iterator[str]:
    if lines is not None:
        yield from (line for line in lines if line.strip())
        return
    inline, text = _strip_parens(spec.source)
    if inline:
        yield from (ln.strip() for ln in text.splitlines() if ln.strip())
        return
    if not text:
        raise SubmitError("queue ... from needs a file name or a ( list )")
    path = os.path.join(submit_dir, text)
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SubmitError(f"cannot read queue item file {text}: {exc.strerror}")
    with f:
        for raw in f:
            line = raw.strip()
            if line and not line.startswith("#"):
                yield line


def _matching(spec: QueueSpec, lines: Optional[list], submit_dir: str) -> Iterator[str]:
    if lines is not None:
        patterns = [p for line in lines for p in line.split()]
    else:
        _, text = _strip_parens(spec.source)
        patterns = [p for p in re.split(r"[\s,]+", text) if p]
    prefix = os.path.join(glob.escape(submit_dir), "")
    for pattern in patterns:
        found = []
        full = pattern if os.path.isabs(pattern) else prefix + pattern
        for hit in sorted(glob.glob(full)):
            rel = hit if os.path.isabs(pattern) else hit[len(os.path.join(submit_dir, "")):]
            is_dir = os.path.isdir(hit)
            if spec.match_kind == "files" and is_dir:
                continue
            if spec.match_kind == "dirs" and not is_dir:
                continue
            found.append(rel + "/" if is_dir else rel)
        yield from found


def item_rows(spec: QueueSpec, lines: Optional[list], submit_dir: str) -> Iterator[tuple]:
    """(row index, values) for each item, slice applied; indices count unsliced rows."""
    if spec.mode is None:
        return iter([(0, ())])
    nvars = max(len(spec.variables), 1)
    if spec.mode == "in":
        rows: Iterator = ((w,) for w in _in_items(spec.source, lines))
    elif spec.mode == "from":
        rows = (_split_row(line, nvars) for line in _from_lines(spec, lines, submit_dir))
    else:
        rows = ((w,) for w in _matching(spec, lines, submit_dir))
    indexed: Iterator = enumerate(rows)
    if spec.slice is not None:
        start, stop, step = spec.slice
        if any(v is not None and v < 0 for v in spec.slice):
            listed = list(indexed)
            indexed = iter(listed[slice(start, stop, step)])
        else:
            indexed = itertools.islice(indexed, start, stop, step)
    return indexed
