"""jrs.plain.dataclass behaves as dataclasses.dataclass for the record classes it is
for (the submitter core's): the same class body under both, the same answers."""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest

from jrs import plain


def _both(body: str) -> tuple:
    out = []
    for mod in (dataclasses, plain):
        ns = {"dataclass": mod.dataclass, "field": mod.field, "Optional": Optional}
        exec("from __future__ import annotations\n@dataclass\nclass R:\n" + body, ns)
        out.append(ns["R"])
    return tuple(out)


BODY = ('    """A record."""\n    a: str\n    b: int\n    c: Optional[int] = None\n'
        '    d: bool = False\n    e: set = field(default_factory=set)\n'
        '    f: float = float("-inf")\n\n    def g(self) -> int:\n        return self.b\n')


def test_init_eq_repr_hash_and_defaults_are_a_dataclasss():
    D, P = _both(BODY)
    for args, kw in ((("x", 1), {}), (("x", 1, 2, True, {3}), {}), (("x",), {"b": 2}),
                     ((), {"a": "y", "b": 3, "e": {1}, "f": 2.5}),
                     (("x", 1), {"d": True, "c": 7})):
        d, p = D(*args, **kw), P(*args, **kw)
        assert repr(d).replace("D", "P") == repr(p)
        assert {k: getattr(d, k) for k in "abcdef"} == {k: getattr(p, k) for k in "abcdef"}
        assert p == P(*args, **kw) and p.g() == d.g()
    for args, kw in (((), {}), (("x",), {}), (("x", 1), {"a": "y"}),
                     (("x", 1), {"z": 1}), (("x", 1, 2, 3, 4, 5, 6), {})):
        with pytest.raises(TypeError):
            D(*args, **kw)
        with pytest.raises(TypeError):
            P(*args, **kw)
    p1, p2 = P("x", 1), P("x", 1)
    assert p1 == p2 and p1 is not p2 and p1.e is not p2.e  # a fresh set each
    p2.e.add(1)
    assert p1 != p2 and P("x", 2) != P("x", 1)
    assert (P("x", 1) == D("x", 1)) is False  # another class: never equal
    nan = float("nan")
    q = P("x", 1, f=nan)
    assert q == q and (D("x", 1, f=nan) == D("x", 1, f=nan)) is (q == P("x", 1, f=nan))
    with pytest.raises(TypeError):
        hash(P("x", 1))
    with pytest.raises(TypeError):
        hash(D("x", 1))
    assert P.c is None and P.d is False and not hasattr(P, "e")  # class attributes
    assert D.c is None and D.d is False and not hasattr(D, "e")
    assert P.__doc__ == "A record."


def test_an_explicit_hash_eq_or_repr_of_the_class_is_kept():
    _, P = _both("    a: int\n    def __repr__(self):\n        return 'mine'\n"
                 "    def __hash__(self):\n        return 7\n")
    assert repr(P(1)) == "mine" and hash(P(1)) == 7 and P(1) == P(1)


@pytest.mark.parametrize("body", [
    "    a: int = 1\n    b: int\n",  # a non-default after a default
    "    a: int\n    def __post_init__(self):\n        pass\n",
    "    a: ClassVar[int] = 1\n",
])
def test_what_it_does_not_do_it_refuses(body):
    ns = {"dataclass": plain.dataclass, "field": plain.field}
    with pytest.raises(TypeError):
        exec("from __future__ import annotations\n@dataclass\nclass R:\n" + body, ns)
    with pytest.raises(TypeError):
        plain.dataclass(frozen=True)  # type: ignore[call-arg]


def test_the_submitter_core_uses_it():
    """(The point: no dataclass of the submitter core compiles anything at import.)"""
    from jrs.client import core, jobs

    for cls in (core.ToMaster, core.StartRun, core.NodeState, core.ClaimState,
                core.CoreConfig, jobs.Summary):
        assert not hasattr(cls, "__dataclass_fields__") and cls._plain_fields


def test_the_classad_engine_imports_regexps_only_when_one_is_used():
    """A submit without regexp() never imports the bounded engine (its import is a
    part of every submit's start); with one, the same verdicts and one budget."""
    import subprocess
    import sys
    from pathlib import Path

    from jrs.condor import classad, regex_bounded

    assert classad.STEP_BUDGET == regex_bounded.STEP_BUDGET
    code = ("import sys; from jrs.condor import classad\n"
            "t = classad.parse('RequestCpus > 1 && Owner == \"x\"')\n"
            "assert classad.evaluate(t, {'requestcpus': 2, 'owner': 'x'}) is True\n"
            "assert 'jrs.condor.regex_bounded' not in sys.modules\n"
            "assert classad.evaluate(classad.parse('regexp(\"^a+$\", \"aaa\")')) is True\n"
            "assert 'jrs.condor.regex_bounded' in sys.modules\n")
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
