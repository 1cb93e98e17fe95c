"""The live status line: redrawn in place on a terminal, a plain line now and
then (and on change) otherwise, and the closing summary."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

BAR = 24
PLAIN_EVERY = 5.0


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def line(counts: dict, total: int, elapsed: float, bar: bool) -> str:
    ended = counts["done"] + counts["failed"] + counts["removed"] + counts["held"]
    rate = ended / elapsed if elapsed > 0 else 0.0
    parts = [f"idle {counts['idle']}", f"running {counts['running']}",
             f"done {counts['done']}", f"failed {counts['failed'] + counts['held']}"]
    if counts["removed"]:
        parts.append(f"removed {counts['removed']}")
    text = " ".join(parts)
    if bar:
        filled = int(BAR * ended / total) if total else BAR
        text = f"[{'#' * filled}{'.' * (BAR - filled)}] {ended}/{total} {text}"
    else:
        text = f"{ended}/{total} {text}"
    text += f" | {rate:.1f} jobs/s"
    if 0 < ended < total and rate > 0:
        text += f" ETA {_duration((total - ended) / rate)}"
    return text


class Progress:
    def __init__(self, enabled: bool, out: Optional[TextIO] = None) -> None:
        self.out = out or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.out.isatty()
        self.start = time.monotonic()
        self._last_text = ""
        self._last_time = 0.0
        self._drawn = False

    def update(self, counts: dict, total: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        text = line(counts, total, now - self.start, self.tty)
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            self._drawn = True
            return
        changed = text.split(" | ")[0] != self._last_text.split(" | ")[0]
        if force or (changed and now - self._last_time >= PLAIN_EVERY):
            self.out.write(text + "\n")
            self.out.flush()
            self._last_text, self._last_time = text, now

    def message(self, text: str) -> None:
        """A line that must not be overwritten by the status line."""
        if self._drawn:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False
