"""HTCondor's own expansions against `jrs.pyz submit --dry-run`.

Two corpora in the same format: the shared one (../shared/condor-conformance)
and ours (tests/conformance/cases: files as people really write them, issue
14), whose expected outputs condor_oracle.py made with the htcondor 24.0.24
bindings:

    ORACLE_PYTHON=.venv/bin/python python3 ../shared/condor-conformance/condor_oracle.py \
        tests/conformance/cases/NAME
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from .conftest import SHARED

CORPUS = SHARED / "condor-conformance"
CASES = sorted(p.parent.name for p in (CORPUS / "cases").glob("*/job.sub"))
OURS = Path(__file__).resolve().parent / "conformance" / "cases"
OUR_CASES = sorted(p.parent.name for p in OURS.glob("*/job.sub"))


def _compare_module():
    spec = importlib.util.spec_from_file_location("condor_compare", CORPUS / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_present():
    assert len(CASES) >= 40, f"expected the conformance corpus at {CORPUS}"
    assert len(OUR_CASES) >= 20, f"expected our conformance cases at {OURS}"


@pytest.mark.parametrize("case", CASES)
def test_case(pyz, case):
    compare = _compare_module()
    diff = compare.check_case(str(CORPUS / "cases" / case),
                              [sys.executable, str(pyz), "submit", "--dry-run"])
    assert diff is None, diff


@pytest.mark.parametrize("case", OUR_CASES)
def test_our_case(pyz, case):
    compare = _compare_module()
    diff = compare.check_case(str(OURS / case), [sys.executable, str(pyz), "submit",
                                                 "--dry-run"])
    assert diff is None, diff


@pytest.mark.parametrize("case", [c for c in CASES if (CORPUS / "cases" / c /
                                                       "expected.error").exists()])
def test_rejections_name_file_and_line(pyz, case):
    import subprocess
    job = CORPUS / "cases" / case / "job.sub"
    r = subprocess.run([sys.executable, str(pyz), "submit", "--dry-run", str(job)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"jrs submit: {job}:"), line
