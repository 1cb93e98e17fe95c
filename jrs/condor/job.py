"""One expanded job, and the conversions from submit-command text to job fields.

The `FIELDS` table says, for every command that means something to JRS, which
submit keys spell it (HTCondor accepts the job-attribute names too) and how
its expanded text becomes a typed value. Conversions are pure functions of the
text, so the expander can cache them.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Optional

from .errors import SubmitError
from .expr import NotConstant, to_int
from .quoting import parse_arguments, parse_environment

_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])b?)?$", re.I)
_UNIT_POWER = {"k": 1, "m": 2, "g": 3, "t": 4}
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def size_in(value: str, base_power: int, attr: str) -> int:
    """`1.5G`, `3000KB`, `512` (in the base unit) -> whole base units, rounded up."""
    m = _SIZE.match(value.strip())
    if m:
        number = float(m.group(1))
        unit = m.group(2)
        if unit is None:
            return math.ceil(number)
        exact = number * 1024 ** (_UNIT_POWER[unit.lower()] - base_power)
        return math.ceil(exact - 1e-9)
    try:
        return to_int(value)
    except NotConstant:
        raise SubmitError(f"Parse error in expression: {attr} = {value}")


def _memory(value: str) -> int:
    return size_in(value, 2, "RequestMemory")


def _disk(value: str) -> int:
    return size_in(value, 1, "RequestDisk")


def _integer(key: str) -> Callable[[str], int]:
    def convert(value: str) -> int:
        try:
            return to_int(value)
        except NotConstant:
            raise SubmitError(f"{key}={value} is invalid, must eval to an integer.")
    return convert


def _boolean(key: str) -> Callable[[str], bool]:
    def convert(value: str) -> bool:
        low = value.strip().lower()
        if low in _TRUE or low in ("yes", "t", "y"):
            return True
        if low in _FALSE or low in ("no", "f", "n"):
            return False
        raise SubmitError(f"{key} = {value}: want true or false")
    return convert


def _choice(key: str, allowed: tuple) -> Callable[[str], str]:
    def convert(value: str) -> str:
        up = value.strip().upper()
        if up not in allowed:
            raise SubmitError(f"{key} = {value}: want one of {', '.join(allowed)}")
        return up
    return convert


def _file_list(value: str) -> list:
    return [p.strip() for p in value.split(",") if p.strip()]


def _getenv(value: str) -> tuple:
    """(import everything?, name patterns) — HTCondor 24: only true/1 mean everything."""
    low = value.strip().lower()
    if low in _TRUE:
        return True, None
    if low in _FALSE or not low:
        return False, None
    return False, [p for p in re.split(r"[\s,]+", value.strip()) if p]


def _universe(value: str) -> str:
    low = value.strip().lower()
    if low != "vanilla":
        raise SubmitError(f"universe {value.strip()} is not supported by JRS; only "
                          "vanilla jobs run here")
    return low


def _text(value: str) -> str:
    return value


def _path(value: str) -> Optional[str]:
    return value or None


# field -> (submit keys in lookup order, conversion, value when unset)
FIELDS: dict[str, tuple[tuple, Callable[[str], Any], Any]] = {
    "universe": (("universe",), _universe, "vanilla"),
    "executable": (("executable",), _text, None),
    "arguments": (("arguments", "args"), parse_arguments, []),
    "environment": (("environment", "env"), parse_environment, {}),
    "getenv": (("getenv", "get_env"), _getenv, (False, None)),
    "initialdir": (("initialdir", "initial_dir", "iwd"), _text, ""),
    "input": (("input", "stdin"), _path, None),
    "output": (("output", "stdout"), _path, None),
    "error": (("error", "stderr"), _path, None),
    "log": (("log", "userlog"), _path, None),
    "request_cpus": (("request_cpus", "requestcpus"), _integer("request_cpus"), 1),
    "request_memory": (("request_memory", "requestmemory"), _memory, None),
    "request_disk": (("request_disk", "requestdisk"), _disk, None),
    "request_gpus": (("request_gpus", "requestgpus"), _integer("request_gpus"), 0),
    "requirements": (("requirements",), _text, None),
    "max_retries": (("max_retries",), _integer("max_retries"), None),
    "success_exit_code": (("success_exit_code",), _integer("success_exit_code"), None),
    "on_exit_remove": (("on_exit_remove",), _text, None),
    "should_transfer_files": (("should_transfer_files",),
                              _choice("should_transfer_files", ("YES", "NO", "IF_NEEDED")),
                              "YES"),
    "when_to_transfer_output": (("when_to_transfer_output",),
                                _choice("when_to_transfer_output",
                                        ("ON_EXIT", "ON_EXIT_OR_EVICT", "ON_SUCCESS")),
                                "ON_EXIT"),
    "transfer_input_files": (("transfer_input_files",), _file_list, []),
    "transfer_output_files": (("transfer_output_files",), _file_list, None),
    "transfer_executable": (("transfer_executable",), _boolean("transfer_executable"), True),
    "priority": (("priority",), _integer("priority"), 0),
    "max_idle": (("max_idle",), _integer("max_idle"), None),
    "max_materialize": (("max_materialize",), _integer("max_materialize"), None),
}


def _absolute(base: str, path: Optional[str]) -> Optional[str]:
    if path is None or path == "/dev/null":
        return None
    return os.path.normpath(os.path.join(base, path))


class Job:
    """One job of a cluster, with every field the runtime and `--dry-run` need.

    `input`/`output`/`error`/`log` keep the text as written (relative to `iwd`);
    `path()` makes them absolute when they are used.
    """

    __slots__ = ("arguments", "attributes", "cluster", "environment", "error", "executable",
                 "getenv", "getenv_match", "input", "iwd", "log", "max_idle",
                 "max_materialize", "max_retries", "on_exit_remove", "output", "priority",
                 "process", "request_cpus", "request_disk", "request_gpus", "request_memory",
                 "requirements", "should_transfer_files", "success_exit_code",
                 "transfer_executable", "transfer_input_files", "transfer_output_files",
                 "universe", "when_to_transfer_output")

    def path(self, name: str) -> Optional[str]:
        """Absolute path of input, output, error or log (None when unset)."""
        return _absolute(self.iwd, getattr(self, name))

    @property
    def job_id(self) -> str:
        return f"{self.cluster}.{self.process}"

    def to_json(self) -> dict:
        """The `submit --dry-run` object: the contract keys first, then the rest."""
        return {
            "cluster": self.cluster,
            "process": self.process,
            "executable": self.executable,
            "arguments": self.arguments,
            "environment": self.environment,
            "getenv": self.getenv,
            "iwd": self.iwd,
            "input": self.path("input"),
            "output": self.path("output"),
            "error": self.path("error"),
            "log": self.path("log"),
            "request_cpus": self.request_cpus,
            "request_memory": self.request_memory,
            "request_disk": self.request_disk,
            "transfer_input_files": self.transfer_input_files,
            "transfer_output_files": self.transfer_output_files,
            "max_retries": self.max_retries,
            "request_gpus": self.request_gpus,
            "getenv_match": self.getenv_match,
            "requirements": self.requirements,
            "success_exit_code": self.success_exit_code,
            "on_exit_remove": self.on_exit_remove,
            "should_transfer_files": self.should_transfer_files,
            "when_to_transfer_output": self.when_to_transfer_output,
            "transfer_executable": self.transfer_executable,
            "priority": self.priority,
            "max_idle": self.max_idle,
            "max_materialize": self.max_materialize,
            "attributes": self.attributes,
        }
