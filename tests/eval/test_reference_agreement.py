"""Dataset reference solutions judged through the sandbox agree with the datasets.

Measured here (see docs/eval.md): CodeContests 257/300 references AC (85.7%), APPS 98/101 (97.0%),
HumanEval 164/164. Every disagreement is listed with its cause in
benchmarks/reference_disagreements.json: multiple-answer problems that need Codeforces' special checkers
(28), wrong references (5) and broken tests (2) in the recovered data, interactive problems (2), slow
Python under the 4 s default limit (4), real answers the data prints as integers, which the
`codecontests` checker compares exactly (2: issue #9, docs/sandbox_engine.md); APPS: 3 solutions that
use a top-level `return` only APPS' harness tolerates. The rates are
asserted as lower bounds, so fixing a known cause never fails this test; a new disagreement does. The
four slow-Python problems are not rerun here (each would only burn its time limit); the benchmark runs
every reference.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from sandbox.client import make_client

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data"
BENCH = ROOT / "benchmarks" / "reference_agreement.py"
MEASURED = {"codecontests": (257, 300), "apps": (98, 101), "humaneval": (164, 164)}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("reference_agreement", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason=f"real data samples not found at {DATA}")
def test_reference_solutions_agree_with_the_judge_except_known_explained_cases():
    bench = load_benchmark()
    known = json.loads(bench.KNOWN.read_text())
    # The known slow-Python problems only burn their time limit: not rerun here (the benchmark runs them).
    slow = {name: {k for k, v in known[name].items() if v["category"] == "time limit"} for name in MEASURED}
    with make_client(workers=2) as client:
        results = bench.agreement(client, DATA, skip=slow)
    for name, (accepted, total) in MEASURED.items():
        r = results[name]
        assert r["references"] == total
        assert r["accepted"] >= accepted, f"{name}: {r['accepted']}/{total} AC, measured {accepted}"
        unexplained = {k: v for k, v in r["disagreements"].items() if k not in known[name]}
        assert not unexplained, f"{name}: disagreements without an explanation: {unexplained}"


def test_every_known_disagreement_has_a_cause_and_a_reason():
    known = json.loads((ROOT / "benchmarks" / "reference_disagreements.json").read_text())
    entries = [e for name in MEASURED for e in known[name].values()]
    assert len(entries) == sum(total - acc for acc, total in MEASURED.values())
    assert all(e["category"] and len(e["reason"]) > 20 for e in entries)
