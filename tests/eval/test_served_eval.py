"""`codealign eval --sampler openai` end to end against a real OpenAI-compatible server.

The server is `transformers serve` (installed with the dev extra: `transformers[serving]`), started on
127.0.0.1 with no model pinned, serving tiny Llama-shaped models built here (the `tiny` preset's
builder, a tokenizer trained on the synthetic task family) from local folders, offline. It returns one
choice per request whatever `n` asks and samples only when the model's generation config says so:
exactly the behaviour codealign must cope with.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}### Problem\n{{ m['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Answer\n{% endif %}"
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_models(root: Path) -> dict[str, Path]:
    """{"sampling": dir, "greedy": dir}: one small model saved twice. "sampling" samples by default and has a
    chat template; "greedy" keeps the default generation config, and a context that the longest of the
    first three held-out prompts fills."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.prompts import completion_prompt
    from codealign.synthetic_tasks import split_problems
    from codealign.train.sft import format_response
    from codealign.train.tiny import TinyConfig, build_tiny

    train = split_problems("train")
    corpus = [completion_prompt(p) for p in train[:100]] + [format_response(p.solutions["python"][0]) for p in train[:100]]
    base = build_tiny(corpus, seed=0, config=TinyConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2), cache_dir=root / "cache")
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    context = max(len(tok(completion_prompt(p)).input_ids) for p in split_problems("test")[:3])
    model.config.max_position_embeddings = context
    model.save_pretrained(root / "greedy")
    model.config.max_position_embeddings = 256
    tok.save_pretrained(root / "greedy")
    model.generation_config.do_sample = True
    tok.chat_template = CHAT_TEMPLATE
    model.save_pretrained(root / "sampling")
    tok.save_pretrained(root / "sampling")
    return {"sampling": root / "sampling", "greedy": root / "greedy"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A `transformers serve` process on 127.0.0.1 and the models it can serve: (base URL, its log, models)."""
    import httpx

    root = tmp_path_factory.mktemp("served")
    log = root / "serve.log"
    port = free_port()
    # One thread: the model is tiny, and more threads only contend with the judge on a 2-core machine.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--device", "cpu"], stdout=f, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        models = build_models(root)  # while the server starts
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"transformers serve exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"transformers serve did not start: {log.read_text()[-2000:]}"
            time.sleep(0.3)
        yield url, log, models
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def posts(log: Path, endpoint: str) -> int:
    return len(re.findall(rf'"POST {re.escape(endpoint)} HTTP/1.1" 200', log.read_text()))


def eval_args(url, model, out, *extra, limit=3):
    return [sys.executable, "-m", "codealign", "eval", "--model", str(model), "--sampler", "openai", "--api-base", url,
            "--dataset", "synthetic", "--limit", str(limit), "--max-new-tokens", "16", "--out", str(out), "--no-progress", *extra]


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("style,endpoint", [("completion", "/v1/completions"), ("chat", "/v1/chat/completions")])
def test_samples_n_per_problem_from_a_server_that_returns_one_choice(tmp_path, served, style, endpoint):
    from transformers import AutoTokenizer

    from codealign.prompts import chat_messages, completion_prompt
    from codealign.synthetic_tasks import split_problems

    url, log, models = served
    before = posts(log, endpoint)
    proc = run(eval_args(url, models["sampling"], tmp_path / "out", "--n", "4", "--k", "1,4", "--prompt-style", style, limit=2))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    sampling = summary["sampling"]
    # n=4 asked of a server that gives one choice per request: the rest is asked again, and its limit learned.
    assert summary["n_samples"] == 8 and sampling["server_n_limit"] == 1
    assert sampling["requests"] == 8 == posts(log, endpoint) - before
    assert len((out / "requests.jsonl").read_text().splitlines()) == 8
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    by_problem: dict[str, list[str]] = {}
    for row in samples:
        by_problem.setdefault(row["problem_id"], []).append(row["completion"])
    problems = split_problems("test")[:2]
    assert set(by_problem) == {p.id for p in problems} and all(len(set(c)) > 1 for c in by_problem.values())
    assert summary["identical_samples"]["n_problems"] == 0
    # The server saw the prompts codealign meant: completion text, or the messages through the model's template.
    tok = AutoTokenizer.from_pretrained(models["sampling"])
    if style == "chat":
        lengths = [len(tok(tok.apply_chat_template(chat_messages(p), add_generation_prompt=True, tokenize=False)).input_ids) for p in problems]
    else:
        lengths = [len(tok(completion_prompt(p)).input_ids) for p in problems]
    usage = sampling["usage"]
    assert usage["prompt_tokens"] == 4 * sum(lengths)
    assert 8 <= usage["completion_tokens"] <= 8 * 16 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert sampling["samples_per_s"] > 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 8 and sum(summary["verdicts"].values()) == 8


def test_a_greedy_server_is_reported_and_prompts_are_kept_within_the_context(tmp_path, served):
    from transformers import AutoConfig, AutoTokenizer

    from codealign.prompts import completion_prompt
    from codealign.synthetic_tasks import split_problems

    url, _, models = served
    out = tmp_path / "out"
    proc = run(eval_args(url, models["greedy"], out, "--n", "3", "--k", "1,3", "--temperature", "0.9", "--max-new-tokens", "24"))
    assert proc.returncode == 0, proc.stderr
    # The server decodes greedily (its generation config does not sample): said once, with the cause.
    assert proc.stderr.count("identical samples") == 1 and "do_sample" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    ident = summary["identical_samples"]
    assert ident["n_problems"] == ident["of"] == 2 and ident["temperature"] == 0.9
    # transformers serve checks no context: the local model folder's tokenizer does, before any request.
    tok = AutoTokenizer.from_pretrained(models["greedy"])
    context = AutoConfig.from_pretrained(models["greedy"]).max_position_embeddings
    lengths = {p.id: len(tok(completion_prompt(p)).input_ids) for p in split_problems("test")[:3]}
    assert summary["too_long"]["ids"] == [pid for pid, k in lengths.items() if k >= context] and len(summary["too_long"]["ids"]) >= 1
    assert proc.stderr.count("longer than the model's context") == 1 and summary["n_problems"] == 2
    for row in map(json.loads, (out / "requests.jsonl").read_text().splitlines()):
        assert row["usage"]["completion_tokens"] <= min(24, context - lengths[row["problem_id"]])


def test_resume_after_a_kill_requests_no_finished_sample_again(tmp_path, served):
    url, _, models = served
    out = tmp_path / "out"
    args = eval_args(url, models["sampling"], out, "--n", "6", "--k", "1,6", "--max-new-tokens", "48", "--concurrency", "2", limit=2)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    log = out / "requests.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 4):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = log.read_text().count("\n")  # complete rows (a torn last one is cut off by the resume)
    assert 4 <= logged < 12

    resumed = run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    # Every answered request covers samples no other request covered: nothing was asked twice.
    covered = [(r["problem_id"], r["start"] + i) for r in rows for i in range(len(r["completions"]))]
    assert len(covered) == len(set(covered)) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 12 and summary["sampling"]["requests"] == 12
    assert summary["sampling"]["samples_this_run"] == 12 - sum(len(r["completions"]) for r in rows[:logged])
