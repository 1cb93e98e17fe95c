"""The HTCondor submit language, expanded exactly as HTCondor expands it.

`expand_file(path)` yields `Job` objects in process order, streaming: a
million-job cluster is never held in memory. Every problem is a
`SubmitError` whose message reads `file:line: reason`.
"""

from .errors import SubmitError
from .expand import expand_file, expand_lines, expand_text
from .job import Job

__all__ = ["Job", "SubmitError", "expand_file", "expand_lines", "expand_text"]
