#!/bin/sh
# R13 reproductions (in-process real sockets / real Master objects; each < 2 s):
# F1 PARTIAL_TOTAL victim, F2 tool cost from other hosts' gone submitters.
cd "$(dirname "$0")/.." && PYTHONPATH=$PWD nice -n 10 .venv/bin/python -m pytest -q \
  tests/test_r13_findings.py -p no:cacheprovider --runxfail "$@"
