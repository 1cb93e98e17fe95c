"""One expanded job, and the conversions from submit-command text to job fields.

The `FIELDS` table says, for every command that means something to JRS, which
submit keys spell it (HTCondor accepts the job-attribute names too) and how
its expanded text becomes a typed value. Conversions are pure functions of the
text, so the expander can cache them.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Callable, Optional

from .errors import SubmitError
from .expr import NotConstant, evaluate, to_int
from .quoting import parse_arguments, parse_environment

_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])b?)?$", re.I)
_UNIT_POWER = {"k": 1, "m": 2, "g": 3, "t": 4}


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


def _integer(key: str) -> Callable[[str], int]:
    def convert(value: str) -> int:
        try:
            return to_int(value)
        except NotConstant:
            raise SubmitError(f"{key}={value} is invalid, must eval to an integer.")
    return convert


def _request(key: str, default: int) -> Callable[[str], int]:
    """request_cpus / request_gpus: an integer; `undefined` leaves the default."""
    integer = _integer(key)

    def convert(value: str) -> int:
        if value.strip().lower() == "undefined":
            return default
        return integer(value)
    return convert


def boolean_param(value: str) -> Optional[bool]:
    """HTCondor's string_is_boolean_param: true/false, or a constant expression
    whose value is a boolean or a number (non-zero is true); None otherwise.
    `yes`, `t` and `on` are not booleans to HTCondor."""
    low = value.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    try:
        result = evaluate(value.strip())
    except NotConstant:
        return None
    if isinstance(result, str):
        return None
    return bool(result)


def _transfer_executable(value: str) -> tuple:
    """(transfer it?, value as a boolean or None, text).

    HTCondor transfers the executable unless the value starts with f or F
    (`no` and `0` transfer it); the strict boolean reading only matters with
    should_transfer_files = NO, where an explicit true is an error."""
    text = value.strip()
    return (text[:1] not in ("f", "F"), boolean_param(text), text)


# HTCondor's ShouldTransferFilesTranslation and FileTransferOutputTranslation
# (enum_utils.cpp), as the 24.0 bindings accept them.
SHOULD = {"YES": "YES", "TRUE": "YES", "ALWAYS": "YES", "NO": "NO", "FALSE": "NO",
          "NEVER": "NO", "IF_NEEDED": "IF_NEEDED", "AUTO": "IF_NEEDED"}
WHEN = {"ON_EXIT_OR_EVICT": "ON_EXIT_OR_EVICT", "ALWAYS": "ON_EXIT_OR_EVICT",
        "ON_EXIT": "ON_EXIT", "ONEXIT": "ON_EXIT", "NEVER": "ON_EXIT",
        "ON_SUCCESS": "ON_SUCCESS", "ONSUCCESS": "ON_SUCCESS", "NONE": "NONE", "NULL": "NONE"}


def _should(value: str) -> str:
    mode = SHOULD.get(value.strip().upper())
    if mode is None:
        raise SubmitError(f"invalid value ({value}) for ShouldTransferFiles.  Please either "
                          "specify YES, NO, or IF_NEEDED and try again.")
    return mode


def _when(value: str) -> tuple:
    """(mode, text as written): the text is needed for HTCondor's error messages."""
    mode = WHEN.get(value.strip().upper())
    if mode is None:
        raise SubmitError(f"invalid value ({value}) for WhenToTransferOutput.  Please "
                          "either specify ON_EXIT, or ON_EXIT_OR_EVICT and try again.")
    return mode, value.strip()


def _inputs(value: str) -> list:
    """transfer_input_files; a bare `""` is an empty list (HTCondor's special case)."""
    if value == '""':
        return []
    return [p.strip() for p in value.split(",") if p.strip()]


def _outputs(value: str) -> list:
    """transfer_output_files; a bare `""` means "bring nothing back"."""
    if value == '""':
        return []
    return [p.strip() for p in value.split(",") if p.strip()]


def _getenv(value: str) -> tuple:
    """(import everything?, name patterns): a boolean as HTCondor reads one, else a
    list of variable names (HTCondor 24: `yes` is a name, not a boolean)."""
    flag = boolean_param(value)
    if flag is not None:
        return flag, None
    return False, [p for p in re.split(r"[\s,]+", value.strip()) if p]


def _universe(value: str) -> str:
    low = value.strip().lower()
    if low not in ("vanilla", "5"):
        raise SubmitError(f"universe {value.strip()} is not supported by JRS; only "
                          "vanilla jobs run here")
    return "vanilla"


def _text(value: str) -> str:
    return value


def _path(value: str) -> Optional[str]:
    return value or None


def _size(base_power: int, attr: str) -> Callable[[str], Optional[int]]:
    def convert(value: str) -> Optional[int]:
        if value.strip().lower() == "undefined":
            return None
        return size_in(value, base_power, attr)
    return convert


# field -> (lookups, conversion, value when unset).
# The names are HTCondor's: the command, its alternate spellings and the job
# attribute name it also accepts. Each lookup is one submit_param(key, alt) of
# submit_utils.cpp: its first defined name wins, even when it expands to
# nothing (then the lookup gives nothing, as submit_param returns NULL); only
# then is the next lookup tried.
FIELDS: dict[str, tuple[tuple, Callable[[str], Any], Any]] = {
    "universe": ((("universe", "jobuniverse"),), _universe, "vanilla"),
    "executable": ((("executable", "cmd"),), _text, None),
    "arguments": ((("arguments", "args"),), parse_arguments, []),
    "environment": ((("environment", "env"),), parse_environment, {}),
    "getenv": ((("getenv", "get_env"),), _getenv, (False, None)),
    "initialdir": ((("initialdir", "iwd"), ("initial_dir", "job_iwd")), _text, ""),
    "input": ((("input", "stdin"),), _path, None),
    "output": ((("output", "stdout"),), _path, None),
    "error": ((("error", "stderr"),), _path, None),
    "log": ((("log", "userlog"),), _path, None),
    "request_cpus": ((("request_cpus", "requestcpus"),), _request("request_cpus", 1), 1),
    "request_memory": ((("request_memory", "requestmemory"),), _size(2, "RequestMemory"),
                       None),
    "request_disk": ((("request_disk", "requestdisk"),), _size(1, "RequestDisk"), None),
    "request_gpus": ((("request_gpus", "requestgpus"),), _request("request_gpus", 0), 0),
    "requirements": ((("requirements",),), _text, None),
    "max_retries": ((("max_retries", "jobmaxretries"),), _integer("max_retries"), None),
    "success_exit_code": ((("success_exit_code", "jobsuccessexitcode"),),
                          _integer("success_exit_code"), None),
    "on_exit_remove": ((("on_exit_remove", "onexitremove"),), _text, None),
    # None: unset (HTCondor's defaults, IF_NEEDED and ON_EXIT, are settled per job)
    "should_transfer_files": ((("shouldtransferfiles", "should_transfer_files"),), _should,
                              None),
    "when_to_transfer_output": ((("whentotransferoutput", "when_to_transfer_output"),),
                                _when, None),
    "transfer_input_files": ((("transfer_input_files", "transferinputfiles"),), _inputs, []),
    "transfer_output_files": ((("transfer_output_files", "transferoutputfiles"),), _outputs,
                              None),
    "transfer_executable": ((("transfer_executable", "transferexecutable"),),
                            _transfer_executable, (True, False, "")),
    "priority": ((("priority", "jobprio"), ("prio", "jobprio")), _integer("priority"), 0),
    "max_idle": ((("max_idle", "jobmaterializemaxidle"),
                  ("materialize_max_idle", "jobmaterializemaxidle")), _integer("max_idle"), None),
    "max_materialize": ((("max_materialize",),), _integer("max_materialize"), None),
}


def transfer_mode(should: Optional[str], when: Optional[tuple], inputs: bool,
                  outputs: bool, xfer_exe: tuple) -> tuple:
    """(should_transfer_files, when_to_transfer_output) as HTCondor settles them
    (SetTransferFiles in submit_utils.cpp), or SubmitError for a contradiction.

    `should`/`when` are None when unset; `inputs`/`outputs` say whether files
    to transfer were named; `xfer_exe` is the transfer_executable tuple.
    when_to_transfer_output is None when nothing is transferred (NO).
    """
    default_should = should is None
    mode = "IF_NEEDED" if default_should else should
    if mode == "NO" and (inputs or outputs):
        what = ("transfer_input_files\" and \"transfer_output_files" if inputs and outputs
                else "transfer_input_files" if inputs else "transfer_output_files")
        raise SubmitError(f'you specified files you want Condor to transfer via "{what}", '
                          "but you disabled should_transfer_files.")
    if when is None:
        out, written = ("NONE", "NEVER") if (mode == "NO" and not default_should) else (
            "ON_EXIT", "ON_EXIT")
    else:
        out, written = when
    if (mode == "NO") != (out == "NONE"):
        raise SubmitError(f"WhenToTransferOutput specified as {written} yet "
                          f"ShouldTransferFiles defined as {should or mode}.  Please remove "
                          "this contradiction from your submit file and try again.")
    if out == "ON_EXIT_OR_EVICT" and mode == "IF_NEEDED":
        if not default_should:
            raise SubmitError('"when_to_transfer_output = ON_EXIT_OR_EVICT" and '
                              '"should_transfer_files = IF_NEEDED" are incompatible; set '
                              "should_transfer_files = YES or when_to_transfer_output = "
                              "ON_EXIT")
        mode = "YES"
    if mode == "NO":
        _, flag, text = xfer_exe
        if text and flag is None:
            raise SubmitError(f"transfer_executable={text} is invalid, must eval to a "
                              "boolean.")
        if flag:
            raise SubmitError("You explicitly requested that the executable be transfered, "
                              "but for this to work, you must enable file transfer "
                              "(should_transfer_files = NO)")
        return mode, None
    return mode, out


def _absolute(base: str, path: Optional[str]) -> Optional[str]:
    if path is None or path == "/dev/null":
        return None
    if path[:1] not in ("/", ".", "") and "/." not in path and "//" not in path and \
            path[-1] != "/" and base != "/":
        return base + "/" + path  # already normal: what normpath would return (faster)
    return os.path.normpath(os.path.join(base, path))


_LAST: dict = {}  # key -> (the last job's value, its encoding)


def _key(name: str) -> str:
    return json.dumps(name) + ": "


_encode_str = json.encoder.encode_basestring  # the C one when available, as json.dumps uses
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _encode(value: Any) -> str:
    """json.dumps(value, ensure_ascii=False) for the types a job holds, quicker."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is list:
        try:
            return "[" + ", ".join(map(_encode_str, value)) + "]"
        except TypeError:  # not all strings
            return _dumps(value)
    if kind is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
        return "{" + ", ".join([_encode_str(k) + ": " + _encode_str(v)
                                for k, v in value.items()]) + "}"
    return _dumps(value)


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

    def to_json_line(self) -> str:
        """json.dumps(self.to_json(), ensure_ascii=False), quicker: a value that is
        the very object the previous job had (a constant of its queue statement)
        reuses that job's encoding. A --dry-run of a million jobs is mostly this."""
        values = self.to_json()
        last = _LAST
        parts = []
        for key, value in values.items():
            prev = last.get(key)
            if prev is not None and prev[0] is value:
                parts.append(prev[1])
                continue
            text = _key(key) + _encode(value)
            last[key] = (value, text)
            parts.append(text)
        return "{" + ", ".join(parts) + "}"

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



_TRANSFER = ("should_transfer_files", "when_to_transfer_output", "transfer_input_files",
             "transfer_output_files", "transfer_executable")
# --dry-run key -> the FIELDS its value comes from (None: differs for every job)
_KEY_SOURCES: dict = {
    "cluster": (), "process": None, "executable": ("executable", "transfer_executable"),
    "arguments": ("arguments",), "environment": ("environment",), "getenv": ("getenv",),
    "iwd": ("initialdir",), "input": ("input", "initialdir"),
    "output": ("output", "initialdir"), "error": ("error", "initialdir"),
    "log": ("log", "initialdir"), "request_cpus": ("request_cpus",),
    "request_memory": ("request_memory",), "request_disk": ("request_disk",),
    "transfer_input_files": ("transfer_input_files",),
    "transfer_output_files": ("transfer_output_files",),
    "max_retries": ("max_retries", "success_exit_code"), "request_gpus": ("request_gpus",),
    "getenv_match": ("getenv",), "requirements": ("requirements",),
    "success_exit_code": ("success_exit_code",), "on_exit_remove": ("on_exit_remove",),
    "should_transfer_files": _TRANSFER, "when_to_transfer_output": _TRANSFER,
    "transfer_executable": ("transfer_executable",), "priority": ("priority",),
    "max_idle": ("max_idle",), "max_materialize": ("max_materialize",),
    "attributes": ("my:",),
}
_PATHS = ("input", "output", "error", "log")


class JsonLines:
    """The --dry-run lines of one queue statement's jobs, built fast: the keys
    whose commands are the same for every job of the statement are encoded once,
    with the first job; later jobs encode only the keys that vary. Each line is
    exactly json.dumps(job.to_json(), ensure_ascii=False) (tested)."""

    def __init__(self, varying: frozenset) -> None:
        custom = any(v.startswith("my:") for v in varying)

        def varies(key: str) -> bool:
            sources = _KEY_SOURCES[key]
            if sources is None:
                return True
            return any(s in varying or (s == "my:" and custom) for s in sources)
        self.varies = varies
        self.parts: Optional[list] = None
        self.slots: list = []  # (index in parts, key text, getter)

    def line(self, job: Job) -> str:
        parts = self.parts
        if parts is None:
            values = job.to_json()
            first = [_key(k) + _encode(v) for k, v in values.items()]
            # constant runs joined once: the line is `{` + chunks and slots joined by ", "
            parts = self.parts = []
            run: list = []
            for index, key in enumerate(values):
                if self.varies(key):
                    if run:
                        parts.append(", ".join(run))
                        run = []
                    getter = ((lambda j, n=key: j.path(n)) if key in _PATHS
                              else (lambda j, n=key: getattr(j, n)))
                    self.slots.append((len(parts), _key(key), getter))
                    parts.append("")
                else:
                    run.append(first[index])
            if run:
                parts.append(", ".join(run))
            return "{" + ", ".join(first) + "}"
        for index, key_text, getter in self.slots:
            parts[index] = key_text + _encode(getter(job))
        return "{" + ", ".join(parts) + "}"
