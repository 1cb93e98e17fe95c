"""ClassAd regexp() through the bounded engine: same answers as `re` on the common subset,
no pattern can stall the master, and what cannot be bounded is refused when parsed."""

from __future__ import annotations

import random
import re

import pytest

from jrs.cluster.pool import Pool
from jrs.condor import classad, regex_bounded
from jrs.config import Endpoint, NodeEntry

ATOMS = ["a", "b", "c", ".", "[ab]", "[^a]", "\\d", "\\w", "\\s", "[a-c0-9]", "x", "\\.",
         "[[:alpha:]]", "\\W"]
TEXT_CHARS = "abcx0 .\n_A"


def _pattern(rnd: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rnd.randint(1, 4)):
        r = rnd.random()
        if r < 0.15 and depth < 3:
            atom = "(" + "|".join(_pattern(rnd, depth + 1)
                                  for _ in range(rnd.randint(1, 3))) + ")"
        elif r < 0.2 and depth < 3:
            atom = "(?:" + _pattern(rnd, depth + 1) + ")"
        else:
            atom = rnd.choice(ATOMS)
        q = rnd.random()
        if q < 0.4:
            atom += rnd.choice(["*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?"])
        parts.append(atom)
    text = "".join(parts)
    if rnd.random() < 0.3:
        text = "^" + text
    if rnd.random() < 0.3:
        text += "$"
    if rnd.random() < 0.1:
        text = "\\b" + text
    return text


@pytest.mark.parametrize("options", ["", "i", "s", "m", "is"])
def test_the_bounded_engine_agrees_with_re_on_the_common_subset(options):
    rnd = random.Random(hash(options) & 0xFFFF)
    flags = (re.I if "i" in options else 0) | (re.S if "s" in options else 0) \
        | (re.M if "m" in options else 0)
    checked = 0
    for _ in range(400):
        pattern = _pattern(rnd).replace("[[:alpha:]]", "[a-zA-Z]")
        compiled = re.compile(pattern, flags)
        mine = regex_bounded.compile(pattern, options)
        for _ in range(15):
            text = "".join(rnd.choice(TEXT_CHARS) for _ in range(rnd.randint(0, 12)))
            assert mine.search(text) == (compiled.search(text) is not None), \
                (pattern, text, options)
            checked += 1
    assert checked == 6000


@pytest.mark.parametrize("pattern,text", [
    ("^(a|a)*$", "a" * 5000 + "!"),
    ("^(a+)+$", "a" * 5000 + "b"),
    ("(x+x+)+y", "x" * 5000),
    ("^(\\w+\\s?)*$", "word " * 1000 + "!"),
    ("^(a*)*(b*)*(c*)*$", "abc" * 1000 + "!"),
])
def test_catastrophic_patterns_run_in_linear_steps(pattern, text):
    """Counted in engine steps, not seconds: a backtracking engine needs 2^n; this one at
    most (program size) x (text size)."""
    rx = regex_bounded.compile(pattern)
    budget = 4 * len(rx.prog) * (len(text) + 1)
    assert rx.search(text, budget=budget) is False


def test_the_budget_bounds_a_search_and_regexp_becomes_error():
    rx = regex_bounded.compile("(a|b|c|d|e)*z")
    with pytest.raises(regex_bounded.BudgetExceeded):
        rx.search("abcde" * 10000, budget=1000)
    assert classad.evaluate(classad.parse('regexp("a", Name)'), {}, {"name": "xa"}) is True
    assert classad.evaluate(classad.parse("regexp(Pat, \"x\")"), {"pat": "(a)\\1"}) \
        is classad.ERROR  # a computed pattern the engine refuses: ERROR, not a crash


def test_regexp_never_uses_the_backtracking_re(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("re used for a ClassAd regexp")
    tree = classad.parse('!regexp("^(a|a)*$", "' + "a" * 3000 + '!")')
    monkeypatch.setattr(re, "search", boom)
    monkeypatch.setattr(re, "match", boom)
    monkeypatch.setattr(re, "fullmatch", boom)
    assert classad.evaluate(tree) is True


@pytest.mark.parametrize("pattern,why", [
    ("(a)\\1", "backreferences"), ("(?P<x>a)(?P=x)", "backreferences"),
    ("(?=a)b", "lookahead"), ("(?<!a)b", "lookbehind"), ("(?>a+)", "atomic"),
    ("a++", "possessive"), ("a{5000}", "at most 1000"), ("(?i)a", "options argument"),
    ("((a{1000}){1000})", "more than"), ("a**", "multiple repeat"), ("[a", "missing ]"),
])
def test_unboundable_patterns_are_refused_when_the_expression_is_parsed(pattern, why):
    text = 'regexp("' + pattern.replace("\\", "\\\\") + '", Name)'
    with pytest.raises(classad.ClassAdError, match=why):
        classad.parse(text)


def test_the_pool_reports_a_refused_pattern_as_unmatchable():
    p = Pool([NodeEntry(Endpoint("h", 1))], 0)
    p.node_hello("h:1", {"slots": 2, "memory": 10, "gpus": 0, "attrs": {}, "claims": []}, 1)
    p.submitter_hello({"submitter": "a", "user": "u", "host": "x", "pid": 1, "claims": [],
                       "clusters": []}, 1)
    out = p.set_demand("a", [{"key": "k", "count": 1, "cpus": 1, "memory": 0, "gpus": 0,
                              "requirements": 'regexp("(a)\\\\1", Name)', "ad": {}}], 1)
    (msg,) = [m for _, _, m in out if m["type"] == "unmatchable"]
    assert "backreferences" in msg["reason"]
    hostile = '!regexp("^(a|a)*$", "' + "a" * 4000 + '!")'
    out = p.set_demand("a", [{"key": "k2", "count": 1, "cpus": 1, "memory": 0, "gpus": 0,
                              "requirements": hostile, "ad": {}}], 2)
    assert [m["type"] for _, _, m in out] == ["claim-offer"]  # evaluated, and fast


def test_submit_refuses_an_unboundable_pattern_before_anything_runs(pyz, tmp_path):
    from .conftest import run_jrs

    (tmp_path / "r.condor").write_text('executable = /bin/true\n'
                                       'requirements = regexp("(a)\\\\1", Machine)\nqueue\n')
    r = run_jrs(pyz, "submit", "--local", "r.condor", cwd=tmp_path)
    assert r.returncode == 2 and "r.condor" in r.stderr and "backreferences" in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1
