"""Warm-start SFT: response-only loss, it really learns, and the tiny warm start is cached."""

from __future__ import annotations

import torch

from codealign.extract import extract_code
from codealign.problems import Problem
from codealign.train.sft import IGNORE_INDEX, SFTConfig, _encode, format_response, sft, warm_start_tiny
from codealign.train.tiny import TinyConfig, load_tiny

SMALL = TinyConfig(vocab_size=320, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2)
PAIRS = [
    ("### Problem\nPrint the sum.\n### Answer\n", format_response("print(sum(map(int, input().split())))")),
    ("### Problem\nPrint the maximum.\n### Answer\n", format_response("print(max(map(int, input().split())))")),
    ("### Problem\nPrint the count.\n### Answer\n", format_response("print(len(input().split()))")),
]


def test_format_response_is_a_fenced_block_that_extract_code_reads():
    response = format_response("print(1)\n")
    assert response == "```python\nprint(1)\n```"
    assert extract_code(response).strip() == "print(1)"


def test_labels_mask_the_prompt_and_end_with_eos(tmp_path):
    model, tok = load_tiny([p + r for p, r in PAIRS], config=SMALL, cache_dir=tmp_path)
    (ids, labels), *_ = _encode(tok, [PAIRS[0][0]], [PAIRS[0][1]])
    n_prompt = len(tok(PAIRS[0][0]).input_ids)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == PAIRS[0][1]


def test_sft_learns_the_responses_and_only_the_responses(tmp_path):
    prompts, responses = zip(*PAIRS)
    model, tok = load_tiny(list(prompts) + list(responses), config=SMALL, cache_dir=tmp_path)
    torch.manual_seed(0)
    logs: list[dict] = []
    sft(model, tok, prompts, responses, SFTConfig(steps=250, batch_size=3, lr=5e-3, warmup_steps=5), log=logs.append)
    assert not model.training
    assert logs[-1]["sft_loss"] < 0.2 * logs[0]["sft_loss"]
    for prompt, response in PAIRS:
        ids = tok(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert text == response  # greedy decoding reproduces the target, then stops at EOS


def _problems(n: int) -> list[Problem]:
    from codealign.synthetic_tasks import make_split

    return make_split(0, n_tests=2).train[:n]


def test_warm_start_tiny_trains_on_training_solutions_and_caches(tmp_path):
    problems = _problems(12)
    messages: list[str] = []
    cfg = SFTConfig(steps=4, batch_size=4)
    model, tok = warm_start_tiny(problems, lambda p: p.statement + "\n", cache_dir=tmp_path, sft=cfg, tiny=SMALL, log=messages.append)
    assert messages and "SFT for 4 steps on 12" in messages[-1]
    again, _ = warm_start_tiny(problems, lambda p: p.statement + "\n", cache_dir=tmp_path, sft=cfg, tiny=SMALL, log=messages.append)
    assert "cached" in messages[-1]
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the reloaded tokenizer is the one the model was trained with
    assert tok.get_vocab() == _.get_vocab()


def test_warm_start_without_reference_solutions_is_a_clear_error(tmp_path):
    import pytest

    bare = [p.model_copy(update={"solutions": {}}) for p in _problems(2)]
    with pytest.raises(ValueError, match="reference solution"):
        warm_start_tiny(bare, lambda p: p.statement, cache_dir=tmp_path, sft=SFTConfig(steps=1), tiny=SMALL)


def test_a_hub_models_warm_start_runs_on_the_run_device(tmp_path, monkeypatch):
    """``initial_policy`` moves a pretrained model to the run's device before its SFT (it used to train on
    CPU and move afterwards). No second device here, so the SFT is a recorder and the device ``meta``."""
    import codealign.train.sft as sft_module
    from codealign.train.config import TrainConfig
    from codealign.train.rounds import initial_policy
    from codealign.train.tiny import build_tiny

    problems = _problems(4)
    path = build_tiny([p.statement for p in problems] + [p.solutions["python"][0] for p in problems], config=SMALL,
                      cache_dir=tmp_path)
    seen = {}

    def recorder(model, tokenizer, prompts, responses, config, mixed_precision="no"):
        seen.update(device=next(model.parameters()).device, n=len(prompts), mixed=mixed_precision)
        return model

    monkeypatch.setattr(sft_module, "sft", recorder)
    cfg = TrainConfig(model={"name_or_path": str(path), "mixed_precision": "bf16"}, sft={"steps": 1})
    model, _ = initial_policy(cfg, problems, log=lambda *a: None, device=torch.device("meta"))
    assert seen == {"device": torch.device("meta"), "n": 4, "mixed": "bf16"}
    assert next(model.parameters()).device.type == "meta"


def test_sft_in_bf16_computes_in_bf16_on_fp32_weights(tmp_path):
    prompts, responses = zip(*PAIRS)
    model, tok = load_tiny(list(prompts) + list(responses), config=SMALL, cache_dir=tmp_path)
    dtypes = set()
    model.lm_head.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    start = model.lm_head.weight.detach().clone()
    sft(model, tok, prompts, responses, SFTConfig(steps=2, batch_size=3, lr=1e-6, warmup_steps=0), mixed_precision="bf16")
    assert dtypes == {torch.bfloat16} and model.lm_head.weight.dtype == torch.float32
    assert float((model.lm_head.weight != start).float().mean()) > 0.9  # a 1e-6 step still lands in fp32


def test_sft_leaves_no_gradient_behind(tmp_path):
    """Its last batch's gradient once leaked into the first RL update of a run that warm-started in-process
    (a cached warm start has none), so a run and its resume diverged."""
    prompts, responses = zip(*PAIRS)
    model, tok = load_tiny(list(prompts) + list(responses), config=SMALL, cache_dir=tmp_path)
    sft(model, tok, prompts, responses, SFTConfig(steps=2, batch_size=3, warmup_steps=0))
    assert all(p.grad is None for p in model.parameters())
