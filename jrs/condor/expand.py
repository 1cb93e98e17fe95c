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

import os
import re
from typing import Any, Callable, Iterator, Optional

from .errors import SubmitError
from .job import FIELDS, Job
from .macros import Expander
from .queue import item_rows, parse_queue
from .source import QueueStatement, Reader

PER_JOB = ("process", "procid", "step", "row", "itemindex", "jobid")
_SIMPLE_REF = re.compile(r"\$\(([A-Za-z0-9_./]+)\)")
_CACHE_LIMIT = 4096


def expand_file(path: str, cluster: int = 1, environ: Optional[dict] = None) -> Iterator[Job]:
    """Every job of the submit file at `path`, in process order."""
    return _jobs(Reader(path, environ), cluster, environ)


def expand_text(text: str, directory: str, cluster: int = 1,
                environ: Optional[dict] = None, name: str = "<submit>") -> Iterator[Job]:
    """Like expand_file, for submit text that is not in a file (tests, fuzzing)."""
    path = os.path.join(directory, name)

    class _TextReader(Reader):
        def read_text(self, p: str) -> str:
            return text if p == path else super().read_text(p)

    return _jobs(_TextReader(path, environ), cluster, environ)


def _jobs(reader: Reader, cluster: int, environ: Optional[dict]) -> Iterator[Job]:
    process = 0
    for statement in reader.statements():
        try:
            for job in _expand_statement(statement, reader.submit_dir, cluster, process,
                                         environ):
                process += 1
                yield job
        except SubmitError as exc:
            raise exc.at(statement.path, statement.line)


class _Field:
    """One command compiled for a queue statement."""

    __slots__ = ("attr", "cache", "convert", "partial", "parts")

    def __init__(self, attr: str, convert: Callable[[str], Any], partial: str,
                 parts: Optional[list]) -> None:
        self.attr = attr
        self.convert = convert
        self.partial = partial
        self.parts = parts
        self.cache: dict = {}

    def value(self, per_job: dict, expander: Expander) -> Any:
        if self.parts is not None:
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
        value = cache[text] = self.convert(text)
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


def _raw(macros: dict, keys: tuple) -> Optional[str]:
    for key in keys:
        value = macros.get(key)
        if value is not None:
            return value
    return None


def _expand_statement(st: QueueStatement, submit_dir: str, cluster: int, first: int,
                      environ: Optional[dict]) -> Iterator[Job]:
    spec = parse_queue(st.args)
    names = [v.lower() for v in spec.variables] or (["item"] if spec.mode else [])
    varying = frozenset(PER_JOB + tuple(names))
    macros = dict(st.macros)
    macros["cluster"] = macros["clusterid"] = str(cluster)
    per_job: dict = {}

    def job_lookup(name: str) -> Optional[str]:
        value = per_job.get(name)
        return value if value is not None else macros.get(name)

    static = Expander(macros.get, submit_dir, environ)
    dynamic = Expander(job_lookup, submit_dir, environ)

    if _raw(macros, FIELDS["executable"][0]) is None:
        raise SubmitError("No 'executable' parameter was provided")

    constants: dict = {}
    fields: list[_Field] = []
    sources = [(name, keys, convert, default) for name, (keys, convert, default)
               in FIELDS.items()]
    custom = sorted(k for k in macros if k.startswith("my."))
    for key in custom:
        sources.append(("my:" + key, (key,), str, None))
    for name, keys, convert, default in sources:
        raw = _raw(macros, keys)
        if raw is None:
            constants[name] = default
            continue
        partial = static.expand(raw, defer=varying).strip()
        if "$" not in partial:
            constants[name] = convert(partial)
        else:
            fields.append(_Field(name, convert, partial, _template(partial, varying)))

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

    process = first
    cluster_text = str(cluster)
    for index, values in item_rows(spec, st.items, submit_dir):
        for i, name in enumerate(names):
            per_job[name] = values[i] if i < len(values) else ""
        per_job["row"] = per_job["itemindex"] = str(index)
        for step in range(spec.count):
            per_job["process"] = per_job["procid"] = str(process)
            per_job["step"] = str(step)
            per_job["jobid"] = f"{cluster_text}.{process}"
            computed = dict(constants)
            for field in fields:
                computed[field.attr] = field.value(per_job, dynamic)
            yield _make_job(computed, cluster, process, submit_dir, iwd_of, bool(custom))
            process += 1


def _make_job(values: dict, cluster: int, process: int, submit_dir: str,
              iwd_of: Callable[[str], str], has_custom: bool) -> Job:
    job = Job.__new__(Job)
    job.cluster = cluster
    job.process = process
    exe = values["executable"]
    if not exe:
        raise SubmitError("No 'executable' parameter was provided")
    job.executable = exe if exe.startswith("/") else os.path.normpath(
        os.path.join(submit_dir, exe))
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
    job.max_retries = values["max_retries"]
    job.success_exit_code = values["success_exit_code"]
    job.on_exit_remove = values["on_exit_remove"]
    job.should_transfer_files = values["should_transfer_files"]
    job.when_to_transfer_output = values["when_to_transfer_output"]
    job.transfer_input_files = values["transfer_input_files"]
    job.transfer_output_files = values["transfer_output_files"]
    job.transfer_executable = values["transfer_executable"]
    job.priority = values["priority"]
    job.max_idle = values["max_idle"]
    job.max_materialize = values["max_materialize"]
    job.attributes = ({k[6:]: v for k, v in values.items() if k.startswith("my:")}
                      if has_custom else None)
    return job
