"""Submit commands people use that JRS does not implement, and what happens instead.

A user who sees no complaint believes a command took effect, so `jrs submit`
names each of these once, at its first line. A command leaves this table
when it is implemented. Commands that mean nothing on a JRS pool
(`notification`, `notify_user`, `+JobFlavour`...) are not listed: they stay
silent, and `+Attr` ones are kept as job attributes.
"""

from __future__ import annotations

from typing import Optional

_CONTAINER = "the job runs directly on the node, in no container"
_POLICY = "it is never evaluated"
_GPUS = "any node with enough GPUs is used"

# lower-case command (`+Attr` as `my.attr`) -> what happens instead
UNSUPPORTED = {
    "transfer_output_remaps": "outputs land under their own names in iwd",
    "container_image": _CONTAINER,
    "docker_image": _CONTAINER,
    "my.singularityimage": _CONTAINER,
    "my.wantdocker": _CONTAINER,
    "hold": "jobs are never submitted on hold",
    "periodic_remove": _POLICY,
    "periodic_hold": _POLICY,
    "periodic_release": _POLICY,
    "on_exit_hold": _POLICY,
    "allowed_execute_duration": "jobs run without a time limit",
    "allowed_job_duration": "jobs run without a time limit",
    "transfer_checkpoint_files": "no checkpoint is kept: a restarted job starts over",
    "checkpoint_exit_code": "that exit code is an ordinary exit; the job is not restarted",
    "require_gpus": _GPUS,
    "gpus_minimum_capability": _GPUS,
    "gpus_maximum_capability": _GPUS,
    "gpus_minimum_memory": _GPUS,
    "gpus_minimum_runtime": _GPUS,
    "x509userproxy": "no proxy travels with the job",
    "use_x509userproxy": "no proxy travels with the job",
    "stream_output": "stdout arrives when the job ends",
    "stream_error": "stderr arrives when the job ends",
    "transfer_input": "the input file is always sent",
    "transfer_output": "stdout is always brought back",
    "transfer_error": "stderr is always brought back",
    "rank": "nodes are chosen without preference",
    "accounting_group": "slots are shared by user name",
    "accounting_group_user": "slots are shared by user name",
    "concurrency_limits": "no limit is applied",
    "concurrency_limits_expr": "no limit is applied",
    "remote_initialdir": "the job runs in its sandbox",
    "retry_request_memory": "a job that runs out of memory is not rerun with more",
    "retry_request_memory_increase": "a job that runs out of memory is not rerun with more",
    "retry_request_memory_max": "a job that runs out of memory is not rerun with more",
}


def warning(name: str, path: str, line: Optional[int]) -> Optional[str]:
    """The warning line for command `name` (as written), or None if it is supported."""
    key = name.lower()
    if key.startswith("+"):
        key = "my." + key[1:]
    instead = UNSUPPORTED.get(key)
    if instead is None:
        return None
    where = f"{path}:{line}" if line else path
    return f"{where}: warning: {name} is not supported; {instead}"
