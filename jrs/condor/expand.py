"""Turn a submit file into a stream of jobs, fast.

For each queue statement every command is expanded once with the per-job
macros (Process, Step, Item, the queue variables...) held back. What is left
is either constant for the statement, a template of literal text and per-job
names (filled by a join), or, rarely, text still needing the full expander.
Conversions (argument splitting, sizes...) are cached by their input text.
So the cost per job is a few joins and dictionary lookups, and jobs are
yielded one at a time: memory does not grow with the number of jobs.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable, Iterator, Optional

from .errors import SubmitError
from .job import FIELDS, Job, JsonLines, transfer_mode
from .macros import Expander, dependents
from .queue import item_rows, parse_queue
from .source import QueueStatement, Reader

PER_JOB = ("process", "procid", "step", "row", "itemindex", "jobid")
_SIMPLE_REF = re.compile(r"\$\(([A-Za-z0-9_./]+)\)")
_CACHE_LIMIT = 4096
_TRANSFER_INPUTS = frozenset(("should_transfer_files", "when_to_transfer_output",
                              "transfer_input_files", "transfer_output_files",
                              "transfer_executable"))
DEFAULT_JOB_MAX_RETRIES = 2  # HTCondor's DEFAULT_JOB_MAX_RETRIES


Warn = Callable[[str], None]


def expand_file(path: str, cluster: int = 1, environ: Optional[dict] = None,
                warn: Optional[Warn] = None, now: Optional[float] = None) -> Iterator[Job]:
    """Every job of the submit file at `path`, in process order.

    `warn(line)` is called once per command JRS does not support, when the
    reader first meets it (`file:line: warning: ...`); `now` is the submit time
    $(SUBMIT_TIME), $(Year)... expand to (default: the clock at the call).
    """
    return _jobs(Reader(path, environ, warn, now), cluster, environ)


def expand_text(text: str, directory: str, cluster: int = 1,
                environ: Optional[dict] = None, name: str = "<submit>",
                warn: Optional[Warn] = None, now: Optional[float] = None) -> Iterator[Job]:
    """Like expand_file, for submit text that is not in a file (tests, fuzzing)."""
    path = os.path.join(directory, name)

    class _TextReader(Reader):
        def read_text(self, p: str) -> str:
            return text if p == path else super().read_text(p)

    return _jobs(_TextReader(path, environ, warn, now), cluster, environ)


def expand_lines(path: str, cluster: int = 1, environ: Optional[dict] = None,
                 warn: Optional[Warn] = None, now: Optional[float] = None) -> Iterator[str]:
    """The `--dry-run` line (JSON of Job.to_json()) of every job of the file."""
    return _jobs(Reader(path, environ, warn, now), cluster, environ, lines=True)


def _jobs(reader: Reader, cluster: int, environ: Optional[dict],
          lines: bool = False) -> Iterator:
    process = 0
    for statement in reader.statements():
        try:
            for job in _expand_statement(statement, reader.submit_dir, cluster, process,
                                         environ, reader.defaults, lines):
                process += 1
                yield job
        except SubmitError as exc:
            raise exc.at(statement.path, statement.line)


class _Field:
    """One command compiled for a queue statement."""

    __slots__ = ("attr", "cache", "convert", "default", "fill", "partial", "parts")

    def __init__(self, attr: str, convert: Callable[[str], Any], default: Any, partial: str,
                 parts: Optional[list]) -> None:
        self.attr = attr
        self.convert = convert
        self.default = default
        self.partial = partial
        self.parts = parts
        self.cache: dict = {}
        self.fill = None
        if parts is not None and all(type(p) is str or p[0].isidentifier() for p in parts):
            # str.format_map does the join in C: "out_{process}.txt"
            self.fill = "".join(p.replace("{", "{{").replace("}", "}}") if type(p) is str
                                else "{" + p[0] + "}" for p in parts).format_map

    def value(self, per_job: dict, expander: Expander, plain: bool) -> Any:
        """`plain`: no per-job value holds a `$` (else the value is expanded too,
        as HTCondor rescans what it substitutes)."""
        if self.fill is not None and plain:
            text = self.fill(per_job)
        elif self.parts is not None and plain:
            text = "".join([p if type(p) is str else per_job[p[0]] for p in self.parts])
        else:
            text = expander.expand(self.partial)
        cache = self.cache
        try:
            return cache[text]
        except KeyError:
            pass
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        # an expansion to nothing is "unset" (HTCondor's submit_param returns NULL)
        value = cache[text] = self.convert(text) if text else self.default
        return value


def _template(partial: str, varying: frozenset) -> Optional[list]:
    """Literal pieces and ('name',) refs, if `partial` has only plain per-job refs."""
    parts: list = []
    pos = 0
    for m in _SIMPLE_REF.finditer(partial):
        name = m.group(1).lower()
        if name not in varying:
            return None
        literal = partial[pos:m.start()]
        if "$" in literal:
            return None
        if literal:
            parts.append(literal)
        parts.append((name,))
        pos = m.end()
    tail = partial[pos:]
    if "$" in tail:
        return None
    if tail:
        parts.append(tail)
    return parts


def _candidates(macros: dict, lookups: tuple, queue_vars: frozenset) -> list:
    """The raw texts a field may take, in HTCondor's order: one per lookup whose
    names are defined (the first defined name of a lookup wins). A queue
    variable counts as defined: HTCondor puts the row's values in the same
    table, so `queue arguments from ...` sets the arguments, over an earlier
    `arguments = ...`."""
    found = []
    for names in lookups:
        for key in names:
            if key in queue_vars:
                found.append(f"$({key})")
                break
            value = macros.get(key)
            if value is not None:
                found.append(value)
                break
    return found


def _expand_statement(st: QueueStatement, submit_dir: str, cluster: int, first: int,
                      environ: Optional[dict], defaults: dict,
                      lines: bool = False) -> Iterator:
    spec = parse_queue(st.args)
    names = [v.lower() for v in spec.variables] or (["item"] if spec.mode else [])
    queue_vars = frozenset(names)
    varying = frozenset(PER_JOB + tuple(names))
    commands = st.macros  # what the file set: only these spell commands
    macros = dict(defaults)
    macros.update(commands)
    macros["cluster"] = macros["clusterid"] = str(cluster)
    per_job: dict = {}
    deep = dependents(macros, varying)

    def job_lookup(name: str) -> Optional[str]:
        value = per_job.get(name)
        return value if value is not None else macros.get(name)

    static = Expander(macros.get, submit_dir, environ)
    dynamic = Expander(job_lookup, submit_dir, environ)

    if not _candidates(commands, FIELDS["executable"][0], queue_vars):
        raise SubmitError("No 'executable' parameter was provided")

    constants: dict = {}
    fields: list[_Field] = []
    sources = [(name, keys, convert, default) for name, (keys, convert, default)
               in FIELDS.items()]
    custom = sorted(k for k in commands if k.startswith("my."))
    for key in custom:
        sources.append(("my:" + key, ((key,),), str, ""))
    for name, lookups, convert, default in sources:
        partial = ""
        for raw in _candidates(commands, lookups, queue_vars):
            partial = static.expand(raw, defer=varying, deep=deep).strip()
            if partial:  # a lookup that expands to nothing gives way to the next
                break
        if "$" not in partial:
            constants[name] = convert(partial) if partial else default
        else:
            fields.append(_Field(name, convert, default, partial, _template(partial, varying)))

    iwd_cache: dict = {}

    def iwd_of(initialdir: str) -> str:
        iwd = iwd_cache.get(initialdir)
        if iwd is None:
            iwd = os.path.normpath(os.path.join(submit_dir, initialdir))
            if not os.path.isdir(iwd):
                raise SubmitError(f"No such directory: {iwd} (initialdir = {initialdir})")
            if len(iwd_cache) >= _CACHE_LIMIT:
                iwd_cache.clear()
            iwd_cache[initialdir] = iwd
        return iwd

    modes: dict = {}

    def mode_of(values: dict) -> tuple:
        key = (values["should_transfer_files"], values["when_to_transfer_output"],
               bool(values["transfer_input_files"]),
               values["transfer_output_files"] is not None, values["transfer_executable"])
        mode = modes.get(key)
        if mode is None:
            if len(modes) >= _CACHE_LIMIT:
                modes.clear()
            mode = modes[key] = transfer_mode(*key)
        return mode

    if not any(f.attr in _TRANSFER_INPUTS for f in fields):
        settle = mode_of
        fixed: list = []

        def mode_of(values: dict) -> tuple:
            """The same for every job: settled (or refused) at the first one."""
            if not fixed:
                fixed.append(settle(values))
            return fixed[0]

    encoder = JsonLines(frozenset(f.attr for f in fields)).line if lines else None
    computed = dict(constants)
    process = first
    cluster_text = str(cluster)
    for index, values in item_rows(spec, st.items, submit_dir):
        plain = True
        for i, name in enumerate(names):
            value = per_job[name] = values[i] if i < len(values) else ""
            if "$" in value:
                plain = False
        per_job["row"] = per_job["itemindex"] = str(index)
        for step in range(spec.count):
            per_job["process"] = per_job["procid"] = str(process)
            per_job["step"] = str(step)
            per_job["jobid"] = f"{cluster_text}.{process}"
            for field in fields:  # _make_job copies what it needs: one dict serves
                computed[field.attr] = field.value(per_job, dynamic, plain)
            job = _make_job(computed, cluster, process, submit_dir, iwd_of, mode_of,
                            bool(custom))
            yield job if encoder is None else encoder(job)
            process += 1


@functools.lru_cache(maxsize=256)
def _resolve(directory: str, name: str) -> str:
    return os.path.normpath(os.path.join(directory, name))


def _make_job(values: dict, cluster: int, process: int, submit_dir: str,
              iwd_of: Callable[[str], str], mode_of: Callable[[dict], tuple],
              has_custom: bool) -> Job:
    job = Job.__new__(Job)
    job.cluster = cluster
    job.process = process
    exe = values["executable"]
    if not exe:
        raise SubmitError("No 'executable' parameter was provided")
    job.should_transfer_files, job.when_to_transfer_output = mode_of(values)
    transfer_exe = job.transfer_executable = values["transfer_executable"][0]
    # HTCondor resolves the executable against the submit directory only when
    # it is transferred; otherwise it names a program on the execute node
    if exe[0] == "/" or not transfer_exe:
        job.executable = exe
    else:
        job.executable = _resolve(submit_dir, exe)
    job.iwd = iwd_of(values["initialdir"])
    job.getenv, job.getenv_match = values["getenv"]
    # plain assignments: about twice as fast as a setattr loop on this hot path
    job.universe = values["universe"]
    job.arguments = values["arguments"]
    job.environment = values["environment"]
    job.input = values["input"]
    job.output = values["output"]
    job.error = values["error"]
    job.log = values["log"]
    job.request_cpus = values["request_cpus"]
    job.request_memory = values["request_memory"]
    job.request_disk = values["request_disk"]
    job.request_gpus = values["request_gpus"]
    job.requirements = values["requirements"]
    job.success_exit_code = values["success_exit_code"]
    retries = values["max_retries"]
    if retries is None and job.success_exit_code is not None:
        retries = DEFAULT_JOB_MAX_RETRIES  # success_exit_code turns retries on
    job.max_retries = retries
    job.on_exit_remove = values["on_exit_remove"]
    job.transfer_input_files = values["transfer_input_files"]
    job.transfer_output_files = values["transfer_output_files"]
    job.priority = values["priority"]
    job.max_idle = values["max_idle"]
    job.max_materialize = values["max_materialize"]
    job.attributes = ({k[6:]: v for k, v in values.items() if k.startswith("my:")}
                      if has_custom else None)
    return job
