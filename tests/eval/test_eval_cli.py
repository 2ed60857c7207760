"""`codealign eval` end to end as a user runs it: a subprocess, real files, the real sandbox executor."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codealign.metrics import pass_at_k

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def codealign(*args, **kw):
    return subprocess.run([sys.executable, "-m", "codealign", "eval", *args, "--no-progress"], capture_output=True, text=True, timeout=300, **kw)


def apps_row(pid, tests, difficulty="introductory", question="Print twice the number."):
    ins, outs = zip(*tests)
    return {"problem_id": pid, "question": question, "solutions": "", "input_output": json.dumps({"inputs": ins, "outputs": outs}),
            "difficulty": difficulty, "url": "", "starter_code": ""}


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [
        apps_row(10, [("2\n", "4\n"), ("5\n", "10\n")]),
        apps_row(11, [("3\n", "9\n"), ("4\n", "16\n")], difficulty="interview", question="Print the square."),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_samples(path, rows):
    path.write_text("".join(json.dumps({"problem_id": p, "completion": c}) + "\n" for p, c in rows))


def fenced(code):
    return f"Here you go:\n```python\n{code}\n```\n"


def test_scores_a_samples_file_and_matches_the_estimator(tmp_path, dataset):
    samples = tmp_path / "samples.jsonl"
    double, square = "print(int(input()) * 2)", "x = int(input())\nprint(x * x)"
    rows = [("10", fenced(double)), ("10", fenced("print(4)")), ("10", "no code"), ("10", fenced(double)),
            ("11", fenced(square)), ("11", fenced("print(9)")), ("11", fenced("print(1/0)")), ("11", fenced("print(16)"))]
    write_samples(samples, rows)
    out = tmp_path / "out"
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1,2,4", "--out", str(out), "--submissions", "1")
    assert proc.returncode == 0, proc.stderr
    assert "pass@1" in proc.stdout and "pass@4" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_problems"] == 2 and summary["n_samples"] == 8
    for k in (1, 2, 4):  # problem 10: 2 of 4 correct, problem 11: 1 of 4
        assert summary["pass_at_k"][str(k)] == pytest.approx((pass_at_k(4, 2, k) + pass_at_k(4, 1, k)) / 2)
    assert set(summary["by_difficulty"]) == {"introductory", "interview"}
    assert summary["by_difficulty"]["interview"]["pass_at_k"]["1"] == pytest.approx(0.25)
    # Test-case average: p10 = (1 + 0.5 + 0 + 1)/4, p11 = (1 + 0.5 + 0 + 0.5)/4.
    assert summary["test_case_average"] == pytest.approx((2.5 / 4 + 2 / 4) / 2)
    # 1@4 on all samples. No test input is quoted in these statements, so none is public and nothing is
    # filtered out. p10: clusters {double x2} (largest, correct), {print(4)}, {CE}. p11: four clusters of
    # one; the earliest (square, correct) is submitted first.
    assert summary["n_at_k"]["1@4"] == pytest.approx(1.0)
    assert summary["verdicts"] == {"AC": 3, "WA": 3, "CE": 1, "RE": 1}
    assert summary["distinct_programs"] == 7  # the two identical programs count once

    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["problem_id"], r["sample_index"]) for r in results) == sorted((p, i) for p in ("10", "11") for i in range(4))
    row = next(r for r in results if r["problem_id"] == "10" and r["sample_index"] == 1)
    assert row["code"] == "print(4)\n" and row["verdict"] == "WA" and (row["passed"], row["total"]) == (1, 2)
    assert (out / "pass_at_k.png").read_bytes()[:4] == b"\x89PNG"

    # Without --k: the k of 1, 10, 100, 1000 that are <= n (here n = 4).
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--out", str(tmp_path / "default_k"))
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads((tmp_path / "default_k" / "summary.json").read_text())["pass_at_k"]) == ["1"]


def test_bad_input_gets_clear_errors_and_loses_nothing(tmp_path, dataset):
    samples = tmp_path / "s.jsonl"
    write_samples(samples, [("10", "x"), ("999", "y")])
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1", "--out", str(tmp_path / "o1"))
    assert proc.returncode == 2 and "'999'" in proc.stderr and "not in dataset" in proc.stderr

    write_samples(samples, [("10", "x"), ("10", "y")])
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1,10", "--out", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "k=10 > n" in proc.stderr

    proc = codealign("--samples", str(tmp_path / "missing.jsonl"), "--dataset", str(dataset), "--out", str(tmp_path / "o3"))
    assert proc.returncode == 2 and "samples file not found" in proc.stderr

    proc = codealign("--samples", str(samples), "--dataset", str(tmp_path / "nope.jsonl"), "--k", "1", "--out", str(tmp_path / "o4"))
    assert proc.returncode == 2 and "nope.jsonl: file does not exist" in proc.stderr
    proc = codealign("--samples", str(samples), "--dataset", "./nope.jsonl", "--k", "1", "--out", str(tmp_path / "o4"), cwd=tmp_path)
    assert proc.returncode == 2 and "file does not exist" in proc.stderr and "HFValidation" not in proc.stderr

    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1,x")
    assert proc.returncode == 2 and "comma-separated integers" in proc.stderr

    out = tmp_path / "o5"
    assert codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1", "--out", str(out)).returncode == 0
    before = (out / "results.jsonl").read_text()
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1", "--out", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (out / "results.jsonl").read_text() == before


def test_resume_after_a_kill_leaves_no_duplicate_and_no_missing_row(tmp_path, dataset):
    samples = tmp_path / "samples.jsonl"
    # 40 distinct slow programs (a unique comment defeats dedup and the sandbox's result cache).
    rows = [(pid, fenced(f"import time\ntime.sleep(0.15)\nprint(int(input()) * 2)  # sample {pid}-{i}")) for pid in ("10", "11") for i in range(20)]
    write_samples(samples, rows)
    out = tmp_path / "out"
    args = ["--samples", str(samples), "--dataset", str(dataset), "--k", "1,20", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "codealign", "eval", *args, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_text().splitlines()) >= 6:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its sandbox workers, mid-run
    proc.wait()
    done_before = len(results.read_text().splitlines())
    assert 6 <= done_before < 40

    resumed = codealign(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    keys = [(r["problem_id"], r["sample_index"]) for r in map(json.loads, results.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 40 and summary["pass_at_k"]["1"] == pytest.approx(0.5)  # doubling solves only problem 10

    again = codealign(*args, "--resume")  # nothing left to do: no new rows
    assert again.returncode == 0 and len(results.read_text().splitlines()) == 40


@pytest.mark.skipif(not DATA.exists(), reason=f"real data samples not found at {DATA}")
def test_real_codecontests_problems_with_reference_and_broken_samples(tmp_path):
    data = DATA / "code_contests" / "train.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()[:40]]
    picked = [r for r in rows if r["name"] in {"1271_C. Shawarma Tent", "9_A. Die Roll"}]
    assert len(picked) == 2
    samples = []
    for r in picked:
        sol = r["solutions"]["solution"][0]
        samples += [(r["name"], fenced(sol)), (r["name"], fenced("print(-1)")), (r["name"], fenced(sol))]
    write_samples(tmp_path / "s.jsonl", samples)
    proc = codealign("--samples", str(tmp_path / "s.jsonl"), "--dataset", str(data), "--k", "1,3", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["n_problems"] == len(picked) and s["pass_at_k"]["3"] == 1.0
    assert s["pass_at_k"]["1"] == pytest.approx(2 / 3)


def test_samples_with_the_hf_sampler_first(tmp_path, dataset, tiny_lm):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    args = ["--model", str(tmp_path / "model"), "--sampler", "hf", "--n", "3", "--k", "1,3", "--dataset", str(dataset),
            "--out", str(out), "--max-new-tokens", "8", "--device", "cpu"]
    proc = codealign(*args)
    assert proc.returncode == 0, proc.stderr
    sampled = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["problem_id"] for r in sampled) == ["10"] * 3 + ["11"] * 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 6 and summary["model"] == str(tmp_path / "model")
    # A random 2-layer model writes no working program.
    assert summary["pass_at_k"] == {"1": 0.0, "3": 0.0}
    # Resuming a finished run samples nothing new; different settings are refused.
    assert codealign(*args, "--resume").returncode == 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
    args[args.index("--n") + 1] = "4"
    proc = codealign(*args, "--resume")
    assert proc.returncode == 2 and "settings differ" in proc.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sandbox_url_judges_on_running_services_with_the_same_figures(tmp_path, dataset):
    import httpx

    samples = tmp_path / "samples.jsonl"
    write_samples(samples, [("10", fenced("print(int(input()) * 2)")), ("10", fenced("print(4)")),
                            ("11", fenced("x = int(input())\nprint(x * x)")), ("11", "none")])
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(p), "--workers", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for p in ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{p}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "sandbox service did not become ready"
                time.sleep(0.2)
        urls = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        remote = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1,2", "--out", str(tmp_path / "remote"), "--sandbox-url", urls)
        assert remote.returncode == 0, remote.stderr
        served = sum(int(line.split()[-1]) for p in ports for line in httpx.get(f"http://127.0.0.1:{p}/metrics").text.splitlines()
                     if line.startswith("sandbox_executions_total"))
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=30)
    local = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1,2", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("remote", "local"))
    assert a["pass_at_k"] == b["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert a["verdicts"] == b["verdicts"]
    assert served == 3  # the three programs ran on the services, not in process; 'none' is no program


def test_untested_problems_are_left_out_and_unparsable_completions_are_ce(tmp_path, dataset):
    """Class 10 (#9): an APPS row with an empty input_output was AC for any program; a completion that
    makes ast.parse raise MemoryError / RecursionError killed the whole eval."""
    empty = {**apps_row(12, [("1\n", "2\n")]), "input_output": ""}
    dataset.write_text(dataset.read_text() + json.dumps(empty) + "\n")
    samples = tmp_path / "samples.jsonl"
    double, square = "print(int(input()) * 2)", "x = int(input())\nprint(x * x)"
    write_samples(samples, [("10", fenced(double)), ("10", "the " * 2000), ("11", fenced(square)), ("11", "+".join(["1"] * 200_000)),
                            ("12", fenced(double)), ("12", fenced(double))])
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1,2", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "1 problems of dataset" in proc.stderr and "have no tests" in proc.stderr and "'12'" in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["no_tests"] == {"n_problems": 1, "ids": ["12"]}
    assert summary["n_problems"] == 2 and summary["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert summary["verdicts"] == {"AC": 2, "CE": 2} and summary["no_program"] == 2

    write_samples(samples, [("12", fenced(double))])
    proc = codealign("--samples", str(samples), "--dataset", str(dataset), "--k", "1", "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2 and "nothing to score" in proc.stderr


def test_resume_is_keyed_on_the_samples_content_and_the_settings(tmp_path, dataset):
    """Class 10 (#9): --resume after the samples file changed reused stale verdicts; another --k was taken silently."""
    samples = tmp_path / "samples.jsonl"
    rows = [("10", fenced("print(int(input()) * 2)")), ("10", fenced("print(4)")), ("11", fenced("print(9)")), ("11", fenced("print(16)"))]
    write_samples(samples, rows)
    out = tmp_path / "out"
    args = ["--samples", str(samples), "--dataset", str(dataset), "--out", str(out)]
    assert codealign(*args, "--k", "1,2").returncode == 0
    results = (out / "results.jsonl").read_text()

    write_samples(samples, [*rows[:3], ("11", fenced("x = int(input())\nprint(x * x)"))])  # same path, other content
    proc = codealign(*args, "--k", "1,2", "--resume")
    assert proc.returncode == 2 and "samples file's content" in proc.stderr and "stale" in proc.stderr
    assert (out / "results.jsonl").read_text() == results

    write_samples(samples, rows)
    proc = codealign(*args, "--k", "1", "--resume")  # scoring only: recomputed from the same verdicts
    assert proc.returncode == 0 and "recomputed" in proc.stderr
    assert json.loads((out / "summary.json").read_text())["pass_at_k"] == {"1": 0.25}
    assert json.loads((out / "run.json").read_text())["scoring"]["k"] == [1]
    assert (out / "results.jsonl").read_text() == results

    # A result row whose program is not the sample's is never reused, whatever it claims.
    forged = [json.loads(line) for line in results.splitlines()]
    for r in forged:
        if r["code"] == "print(4)\n":
            r.update(code="print(int(input()) * 2)\n", verdict="AC", passed=2, correct=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forged))
    proc = codealign(*args, "--k", "1", "--resume")
    assert proc.returncode == 0 and "do not match the samples" in proc.stderr
    assert json.loads((out / "summary.json").read_text())["pass_at_k"] == {"1": 0.25}


def test_synthetic_held_out_tasks_score_their_reference_solutions(tmp_path):
    from codealign.synthetic_tasks import make_split

    heldout = make_split(0).test
    samples = tmp_path / "samples.jsonl"
    write_samples(samples, [(p.id, fenced(p.solutions["python"][0])) for p in heldout])
    proc = codealign("--samples", str(samples), "--dataset", "synthetic", "--k", "1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_problems"] == 48 and summary["pass_at_k"] == {"1": 1.0} and list(summary["by_source"]) == ["synthetic"]


def test_prompts_longer_than_the_context_are_counted_apart_not_sampled(tmp_path, tiny_lm):
    from codealign.prompts import build_prompt
    from codealign.synthetic_tasks import split_problems

    model, tok = tiny_lm
    problems = split_problems("test")[:6]
    lengths = {p.id: len(tok(build_prompt(p, tok)).input_ids) for p in problems}
    context = sorted(lengths.values())[3]  # the three longest prompts do not fit
    model.config.max_position_embeddings = context
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    proc = codealign("--model", str(tmp_path / "model"), "--sampler", "hf", "--dataset", "synthetic", "--limit", "6", "--n", "2",
                     "--k", "1", "--max-new-tokens", "8", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("longer than the model's context") == 1
    summary = json.loads((out / "summary.json").read_text())
    too_long = {pid for pid, k in lengths.items() if k >= context}
    assert set(summary["too_long"]["ids"]) == too_long and summary["too_long"]["context"] == context
    assert summary["n_problems"] == 6 - len(too_long) and summary["n_samples"] == 2 * (6 - len(too_long))
    sampled = {json.loads(line)["problem_id"] for line in (out / "samples.jsonl").read_text().splitlines()}
    assert sampled == set(lengths) - too_long
    # Generation stopped at the context: max_new_tokens was cut for prompts within 8 tokens of it.
    assert summary["sampling"].get("max_new_tokens_capped_problems", 0) == sum(context - 8 < k < context for k in lengths.values())
