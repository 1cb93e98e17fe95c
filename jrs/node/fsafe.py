"""Reading a tree the job controls, with root's rights, without being fooled.

Everything goes through directory descriptors, one O_NOFOLLOW component at a
time, starting from the sandbox's own descriptor (its parent, the execute
directory, is root's and 0711: the job cannot replace the sandbox itself). Each
entry is first lstat'ed through its directory fd and must be a directory or a
regular file owned by the job with a single link; a file is opened with
O_NOFOLLOW | O_NONBLOCK | O_NOCTTY (a FIFO swapped in cannot block us, a link
swapped in fails with ELOOP) and the descriptor is checked again (same inode as
the lstat, still regular, still one link). Counts and depth are bounded.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterator, Optional

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_FILES = 100_000
MAX_DEPTH = 64


class Refused(Exception):
    """An entry we will not read; `missing` when it simply is not there."""

    def __init__(self, reason: str, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


class OverLimit(Exception):
    """More files (or deeper trees) than a job may send back."""


class Budget:
    def __init__(self, files: int = MAX_FILES) -> None:
        self.left = files

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise OverLimit(f"more than {MAX_FILES} output files")

    def names(self, it: Iterator) -> list:
        """The sorted names of a directory listing, read no further than what is left
        of the budget (a directory of millions of entries costs the node no more than
        the bound before the job is held)."""
        out = []
        for e in it:
            out.append(e.name)
            if len(out) > self.left:
                raise OverLimit(f"more than {MAX_FILES} output files")
        out.sort()
        return out


class Found:
    """A checked entry: where it is (components from the sandbox) and what it was."""

    __slots__ = ("dev", "ino", "is_dir", "mode", "mtime_ns", "parts", "size")

    def __init__(self, parts: list, st: os.stat_result) -> None:
        self.parts = parts
        self.size = st.st_size
        self.mode = st.st_mode
        self.mtime_ns = st.st_mtime_ns
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.is_dir = stat.S_ISDIR(st.st_mode)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


class Tree:
    """A sandbox opened for reading, owned (all of it) by `owner`."""

    def __init__(self, fd: int, owner: int) -> None:
        self.fd = fd
        self.owner = owner

    @classmethod
    def open(cls, path: str, owner: int) -> Tree:
        parent, name = os.path.split(path.rstrip("/"))
        pfd = os.open(parent or "/", DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
        finally:
            os.close(pfd)
        return cls(fd, owner)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _check(self, st: os.stat_result, what: str) -> None:
        if stat.S_ISDIR(st.st_mode):
            if st.st_uid != self.owner:
                raise Refused(f"{what}: a directory not owned by the job")
            return
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{what}: {_kind(st.st_mode)}")
        if st.st_uid != self.owner:
            raise Refused(f"{what}: not owned by the job")
        if st.st_nlink != 1:
            raise Refused(f"{what}: has {st.st_nlink} hard links")

    def _dir(self, parts: list) -> int:
        """A new fd of the directory `parts` (NOFOLLOW at every component)."""
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise Refused("/".join(parts[:i + 1]) + ": not there", missing=True)
                if not stat.S_ISDIR(st.st_mode):
                    self._check(st, "/".join(parts[:i + 1]))
                    raise Refused("/".join(parts[:i + 1]) + ": not a directory")
                self._check(st, "/".join(parts[:i + 1]))
                try:
                    nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise Refused("/".join(parts[:i + 1]) + f": {exc.strerror}")
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def entry(self, parts: list) -> Found:
        """The checked entry at `parts` (a regular file or a directory)."""
        if len(parts) > MAX_DEPTH:
            raise Refused("/".join(parts) + ": too deep")
        dfd = self._dir(parts[:-1])
        try:
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise Refused("/".join(parts) + ": not there", missing=True)
            self._check(st, "/".join(parts))
            return Found(list(parts), st)
        finally:
            os.close(dfd)

    def file(self, parts: list) -> Found:
        found = self.entry(parts)
        if found.is_dir:
            raise Refused("/".join(parts) + ": a directory")
        return found

    def walk(self, parts: list, budget: Budget) -> Iterator:
        """(components below `parts`, Found) of every regular file under the
        directory `parts`, depth first, sorted; other kinds are refused quietly
        (skipped), nothing is followed."""
        stack = [list(parts)]
        while stack:
            here = stack.pop()
            if len(here) > MAX_DEPTH:
                raise OverLimit(f"{'/'.join(here[:3])}/...: deeper than {MAX_DEPTH}")
            dfd = self._dir(here)
            try:
                with os.scandir(dfd) as it:
                    names = budget.names(it)
                subdirs = []
                for name in names:
                    budget.take()
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        self._check(st, "/".join([*here, name]))
                    except (OSError, Refused):
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append([*here, name])
                    else:
                        yield [*here, name][len(parts):], Found([*here, name], st)
            finally:
                os.close(dfd)
            stack.extend(reversed(subdirs))

    def top_files(self, budget: Budget) -> Iterator:
        """(name, Found) of the top-level regular files (others skipped)."""
        with os.scandir(self.fd) as it:
            names = budget.names(it)
        for name in names:
            budget.take()
            try:
                st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
                self._check(st, name)
            except (OSError, Refused):
                continue
            if stat.S_ISREG(st.st_mode):
                yield name, Found([name], st)

    def open_file(self, found: Found) -> int:
        """An fd of the very file `found` saw (checked again on the fd itself)."""
        dfd = self._dir(found.parts[:-1])
        try:
            try:
                fd = os.open(found.parts[-1], FILE_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise Refused("/".join(found.parts) + ": a symbolic link")
                raise Refused("/".join(found.parts) + f": {exc.strerror}")
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            self._check(st, "/".join(found.parts))
            if (st.st_dev, st.st_ino) != (found.dev, found.ino):
                raise Refused("/".join(found.parts) + ": replaced while being collected")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def opener(self, found: Found):
        """A callable for wire.files.send: the checked fd, or None when refused now."""
        def open_it() -> Optional[int]:
            try:
                return self.open_file(found)
            except (Refused, OSError):
                return None
        return open_it
