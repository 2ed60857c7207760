"""Packing and log-prob layout, the critic, LoRA policies, and the judge's deadline."""

import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from codealign.problems import Problem
from codealign.train.config import JudgeConfig, ModelConfig
from codealign.train.models import ValueModel, ema_update, logprobs, make_reference, pack, prepare_policy
from sandbox.spec import RunResult, TestCase, Verdict

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import tiny_lm  # noqa: E402


def test_pack_marks_exactly_the_response_tokens_in_logprob_layout():
    b = pack([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # position t holds the log-prob of token t+1
    assert b.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert (b.labels * b.mask.long()).tolist() == [[0, 0, 9, 10], [11, 12, 13, 0]]


def test_logprobs_ignore_padding_and_match_a_single_sequence_forward():
    model = tiny_lm()
    b = pack([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    lp, _ = logprobs(model, b)
    alone = pack([[8]], [[11, 12, 13]], pad_id=0)
    lp_alone, _ = logprobs(model, alone)
    assert torch.allclose(lp[1, :3], lp_alone[0], atol=1e-5)


def test_value_model_starts_at_zero_and_is_separate_from_the_policy():
    model = tiny_lm()
    critic = ValueModel(model)
    b = pack([[5, 6]], [[7, 8]], pad_id=0)
    v = critic(b.input_ids, b.attention_mask)
    assert v.shape == b.mask.shape and torch.all(v == 0)
    v.sum().backward()
    assert all(p.grad is None for p in model.parameters())  # the critic owns a copy of the network


def test_lora_policy_trains_only_adapters_and_ema_follows_by_name():
    cfg = ModelConfig(lora={"enabled": True, "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    policy = prepare_policy(tiny_lm(), cfg)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    ref = make_reference(policy)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.fill_(1.0)
    ema_update(ref, policy, 0.5)
    for (n, p_ref), (_, p) in zip(ref.named_parameters(), policy.named_parameters()):
        if "lora_B" in n:
            assert torch.allclose(p_ref, 0.5 * torch.zeros_like(p) + 0.5 * p)


class HangingClient:
    def __init__(self):
        self.release = threading.Event()

    def run_many(self, reqs, timeout_s=None, on_result=None):
        on_result(0, RunResult(verdict=Verdict.AC, passed=1, total=1))  # one arrives, then the judge hangs
        self.release.wait(60)
        return []

    def close(self):
        self.release.set()


class BrokenClient:
    def run_many(self, reqs, timeout_s=None, on_result=None):
        raise ConnectionError("sandbox down")

    def close(self):
        pass


def problem():
    return Problem(id="p", source="t", statement="s", private_tests=[TestCase(input="", output="1\n")])


def test_a_hanging_judge_returns_what_finished_by_the_deadline():
    from codealign.train.rollouts import Judge

    client = HangingClient()
    judge = Judge(JudgeConfig(timeout_s=0.5), client=client)
    t = time.perf_counter()
    # judge_many bounds itself with the same deadline; the trainer's backstop covers clients that do not
    out = judge([problem(), problem()], ["print(1)", "print(2)"])
    assert time.perf_counter() - t < 10
    assert out[0] is not None and out[0].verdict == Verdict.AC and out[1] is None
    assert judge.errors == 1
    judge.close()


def test_a_failing_judge_gives_none_not_an_exception():
    from codealign.train.rollouts import Judge

    judge = Judge(JudgeConfig(timeout_s=5), client=BrokenClient())
    assert judge([problem()], ["print(1)"]) == [None]
    judge.close()


@pytest.mark.parametrize("code, verdict", [("print(1)", Verdict.AC), ("print(2)", Verdict.WA), ("import time\nwhile True: pass", Verdict.TLE)])
def test_real_local_sandbox_verdicts_flow_into_rewards(code, verdict):
    from codealign.train.config import RewardConfig
    from codealign.train.rewards import reward_for
    from codealign.train.rollouts import Judge

    p = problem().model_copy(update={"time_limit_s": 0.5})
    judge = Judge(JudgeConfig(timeout_s=60, workers=1))
    try:
        [result] = judge([p], [code])
    finally:
        judge.close()
    assert result is not None and result.verdict == verdict
    assert reward_for(result, True, RewardConfig(timeout_penalty=1.0)) == {Verdict.AC: 10.0, Verdict.WA: 0.0, Verdict.TLE: -1.0}[verdict]
