"""What one ClassAd evaluation may cost the master, whatever the expression (review R5).

The master charges a submitter, per evaluation against a node, a unit per byte of the
requirements plus the steps `classad.matches_counted` reports. Before this file those
steps were only regexp search steps, so an expression small in bytes did unbounded work
for nearly nothing: `stringlistmember("z", strcat(strcat(a, ... 63 x), ... 63 x))` over a
4 KiB attribute of the request's own ad builds a 16 MiB string and splits it (10 s for
one evaluation, charged 8,488 units: 3 % of a round's budget), regexp() compiled a
pattern it was handed as a non-literal at every call (300 distinct 3,600-instruction
patterns: 15 s, charged 15,502), a failing compile was never cached, and the parse
compiled every literal pattern (100 of 20,000 instructions fit 16 KiB). Now string work
and compiles are charged to the evaluation's one budget (past it: ERROR, the work not
done), literal patterns are checked at parse without compiling, and compiled programs
are kept up to a size. Counted, not timed.
"""

from __future__ import annotations

import random

import pytest

from jrs.condor import classad, regex_bounded

from .test_pool_dos import _hello, _pool, _request

A = "a," * 2048  # a 4 KiB attribute of 2,048 list items
AD = {"a": A, "b": "x" * 4096}


def _cat(inner: str, n: int = 63) -> str:
    return "strcat(" + ",".join([inner] * n) + ")"


def test_string_work_is_charged_to_the_evaluation():
    # 63 x 4 KiB = 258,048 characters built, then handed to stringlistmember
    tree = classad.parse(f'stringlistmember("z", {_cat("a")})')
    result, steps = classad.matches_counted(tree, AD, {})
    assert result is False
    assert steps >= 2 * 63 * len(A)  # built by strcat, then split
    tree = classad.parse(f'tolower({_cat("b")}) == "q"')
    assert classad.matches_counted(tree, AD, {})[1] >= 3 * 63 * 4096  # strcat, lower, ==


def test_a_16_mib_string_is_error_before_it_is_built():
    tree = classad.parse(f'stringlistmember("z", {_cat(_cat("a"))})')
    env = classad._Env(AD, {})
    assert classad._eval(tree, env) is classad.ERROR
    assert env.steps <= 0
    result, steps = classad.matches_counted(tree, AD, {})
    assert result is False
    assert regex_bounded.STEP_BUDGET - 4096 * 63 <= steps <= regex_bounded.STEP_BUDGET


def test_a_compile_is_charged_cached_or_not_and_a_refusal_too():
    good = 'regexp(strcat("(a|b){900}"), "q")'
    first = classad.matches_counted(classad.parse(good), {}, {})[1]
    again = classad.matches_counted(classad.parse(good), {}, {})[1]
    assert first == again >= regex_bounded.COMPILE_COST * 3601
    bad = 'regexp(strcat("' + "a{1000}" * 21 + '"), "q")'
    tree = classad.parse(bad)  # not a literal: refused when it runs
    assert classad.evaluate(tree) is classad.ERROR
    steps = classad.matches_counted(tree, {}, {})[1]
    assert steps >= regex_bounded.COMPILE_COST * regex_bounded.MAX_PROGRAM


def test_distinct_non_literal_patterns_stop_at_the_budget():
    calls = [f'regexp(strcat("(a|b){{900}}", string({i})), "q")' for i in range(300)]
    text = " || ".join(calls)
    while len(text) > 16000:
        calls.pop()
        text = " || ".join(calls)
    built = []
    real = regex_bounded._build
    try:
        regex_bounded._build = lambda p, o: built.append(p) or real(p, o)
        result, steps = classad.matches_counted(classad.parse(text), {}, {})
    finally:
        regex_bounded._build = real
    assert result is False and steps <= regex_bounded.STEP_BUDGET
    assert len(built) <= regex_bounded.STEP_BUDGET // (regex_bounded.COMPILE_COST * 3601) + 1


def test_literal_patterns_are_checked_at_parse_not_compiled(monkeypatch):
    def no_compile(*_a: object) -> None:
        raise AssertionError("compiled at parse")
    monkeypatch.setattr(regex_bounded, "compile", no_compile)
    monkeypatch.setattr(regex_bounded, "_build", no_compile)
    big = "a{1000}" * 19 + "a" * 998  # 19,998 + match = 19,999 instructions
    text = " || ".join(f'regexp("{big}{i}", Name)' for i in range(5))
    classad.parse(text)
    with pytest.raises(classad.ClassAdError, match="more than 20000"):
        classad.parse(f'regexp("{big}bc", Name)')


def test_check_sizes_what_compile_emits():
    rnd = random.Random(5)
    atoms = ["a", ".", "[ab]", "\\d", "^", "$", "\\b", "(a|bc|)", "(?:x|y)"]
    for _ in range(200):
        pattern = ""
        for _ in range(rnd.randint(1, 5)):
            atom = rnd.choice(atoms)
            if rnd.random() < 0.3:
                atom = f"({atom}{rnd.choice(atoms)}|{rnd.choice(atoms)})"
            if atom not in ("^", "$", "\\b"):
                atom += rnd.choice(["", "*", "+", "?", "{3}", "{2,5}", "{1,}", "{0,40}"])
            pattern += atom
        for p in (pattern, f"({pattern}){{{rnd.randint(1, 30)}}}"):
            try:
                size = regex_bounded.check(p)
            except regex_bounded.RegexError as exc:
                with pytest.raises(regex_bounded.RegexError, match=str(exc)[:20]):
                    regex_bounded._build(p, "")
                continue
            assert size == len(regex_bounded._build(p, "").prog), p
    at_most = "a{1000}" * 19 + "a" * 999  # 19,999 + match: the largest program
    assert regex_bounded.check(at_most) == regex_bounded.MAX_PROGRAM
    for refused in (at_most + "a", "(a{1000}){1000}", "((a|b){1000}){1000}"):
        with pytest.raises(regex_bounded.RegexError, match="more than 20000"):
            regex_bounded.check(refused)


def test_compiled_programs_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(regex_bounded, "CACHE_PROGRAM", 20_000)
    for i in range(12):
        regex_bounded.compile("a{1000}" * 4 + f"b{i}")
    kept = sum(len(r.prog) for r in regex_bounded._cache.values()
               if isinstance(r, regex_bounded.Regex))
    assert 4000 < kept <= 20_000
    assert regex_bounded._cached[0] >= kept


def test_the_pool_charges_the_string_work_to_its_submitter():
    p = _pool(4)
    _hello(p, "evil", "mallory")
    req = _request("k", f'stringlistmember("z", {_cat("a")})')
    req["ad"] = {"a": A}
    p.set_demand("evil", [req], 1.5)
    assert p._spent.get("evil", 0) >= 2 * 63 * len(A)  # at least one node's evaluation
