"""DPO pairs from execution verdicts and the DPO / DPO-Iter updates on a real tiny causal LM."""

import copy
import random
import sys
from pathlib import Path

import pytest
import torch

from codealign.problems import Problem
from codealign.train.config import DPOConfig
from codealign.train.dpo import DPO, build_pairs
from codealign.train.models import make_reference, pack, sequence_logprobs

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import cpu_accelerator, rollout, tiny_lm  # noqa: E402

PROMPT = [3, 4, 5]
GOOD = [6, 7, 8, 1]
BAD = [9, 10, 11, 1]
BAD2 = [9, 12, 1]


class CharTokenizer:
    """Stand-in tokenizer for the reference-solution path: one id per character (ids >= 2)."""

    eos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return type("Enc", (), {"input_ids": [2 + (ord(c) % 20) for c in text]})()


def problem(pid="p0", solution="print(1)\n"):
    return Problem(id=pid, source="t", statement="s", solutions={"python": [solution]} if solution else {})


def test_pairs_take_passing_as_chosen_and_failing_as_rejected():
    rolls = [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0), rollout(PROMPT, BAD2, 0), rollout(PROMPT, BAD, 0)]
    cfg = DPOConfig(pairing="all", max_pairs_per_prompt=10)
    pairs = build_pairs([problem()], rolls, cfg, CharTokenizer(), random.Random(0))
    assert sorted((p.chosen_ids, p.rejected_ids) for p in pairs) == sorted([(GOOD, BAD), (GOOD, BAD2)])  # duplicates merged
    one = build_pairs([problem()], rolls, cfg.model_copy(update={"pairing": "one"}), CharTokenizer(), random.Random(0))
    assert len(one) == 1 and one[0].chosen_ids == GOOD


def test_reference_solution_is_chosen_only_when_nothing_passes_and_only_if_enabled():
    rolls = [rollout(PROMPT, BAD, 0), rollout(PROMPT, BAD2, 0)]
    pairs = build_pairs([problem()], rolls, DPOConfig(reference_as_chosen=True, pairing="one"), CharTokenizer(), random.Random(0))
    assert len(pairs) == 1 and pairs[0].chosen_is_reference
    assert pairs[0].chosen_ids[-1] == CharTokenizer.eos_token_id and pairs[0].rejected_ids in (BAD, BAD2)
    assert build_pairs([problem()], rolls, DPOConfig(reference_as_chosen=False), CharTokenizer(), random.Random(0)) == []
    assert build_pairs([problem(solution=None)], rolls, DPOConfig(), CharTokenizer(), random.Random(0)) == []


def test_no_pair_without_a_failure_and_unjudged_samples_are_ignored():
    all_pass = [rollout(PROMPT, GOOD, 10), rollout(PROMPT, GOOD[:-1] + [2, 1], 10)]
    assert build_pairs([problem()], all_pass, DPOConfig(), CharTokenizer(), random.Random(0)) == []
    unjudged = [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0, judged=False)]
    assert build_pairs([problem()], unjudged, DPOConfig(), CharTokenizer(), random.Random(0)) == []


def margin(model):
    with torch.no_grad():
        lp = sequence_logprobs(model, pack([PROMPT, PROMPT], [GOOD, BAD], 0))
    return float(lp[0] - lp[1])


def make_dpo(**over):
    policy = tiny_lm()
    cfg = DPOConfig(**{"lr": 3e-3, "batch_size": 4, "micro_batch_size": 2, **over})
    return DPO(policy, make_reference(policy), cfg, 0, CharTokenizer(), cpu_accelerator())


def test_dpo_step_prefers_chosen_and_leaves_the_reference_alone():
    dpo = make_dpo(iterative=False)
    ref0 = copy.deepcopy(dpo.ref.state_dict())
    before = margin(dpo.unwrapped_policy)
    seen_models = []

    def collect(problems, model):
        seen_models.append(model)
        return [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0)] * 2

    for i in range(4):
        stats = dpo.step([problem()], collect, i)
    assert margin(dpo.unwrapped_policy) > before + 0.5
    assert stats["pref_accuracy"] == 1.0 and stats["n_pairs"] == 1
    # plain DPO samples from, and compares against, the fixed starting policy
    assert all(m is dpo.ref for m in seen_models)
    dpo.end_round()
    assert all(torch.equal(v, ref0[k]) for k, v in dpo.ref.state_dict().items())
    assert all(p.grad is None for p in dpo.ref.parameters())


def test_dpo_loss_value_matches_formula_on_the_first_batch():
    dpo = make_dpo(epochs=1, batch_size=1, micro_batch_size=1, nll_weight=0.0)
    # policy == reference at the start: margin 0, loss log(2)
    stats = dpo.step([problem()], lambda ps, m: [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0)], 0)
    assert stats["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)


def test_dpo_iter_samples_with_the_policy_and_the_reference_becomes_the_previous_round_model():
    dpo = make_dpo(iterative=True)
    seen = []
    dpo.step([problem()], lambda ps, m: seen.append(m) or [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0)], 0)
    assert seen[0] is dpo.unwrapped_policy
    assert margin(dpo.ref) != margin(dpo.unwrapped_policy)
    dpo.end_round()
    pol = dpo.unwrapped_policy.state_dict()
    assert all(torch.equal(v, pol[k]) for k, v in dpo.ref.state_dict().items())
    assert not any(p.requires_grad for p in dpo.ref.parameters())


def test_step_without_pairs_updates_nothing():
    dpo = make_dpo()
    before = copy.deepcopy(dpo.unwrapped_policy.state_dict())
    stats = dpo.step([problem(solution=None)], lambda ps, m: [rollout(PROMPT, BAD, 0), rollout(PROMPT, BAD2, 0)], 0)
    assert stats["n_pairs"] == 0
    assert all(torch.equal(v, before[k]) for k, v in dpo.unwrapped_policy.state_dict().items())


def test_rpo_adds_the_chosen_per_token_nll():
    dpo = make_dpo(epochs=1, batch_size=1, micro_batch_size=1, nll_weight=2.0)
    with torch.no_grad():
        lp = sequence_logprobs(dpo.unwrapped_policy, pack([PROMPT], [GOOD], 0))
    stats = dpo.step([problem()], lambda ps, m: [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0)], 0)
    # first (only) batch: policy == reference, so the DPO part is log 2; the NLL is reported apart
    assert stats["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert stats["chosen_nll"] == pytest.approx(-lp.item() / len(GOOD), abs=1e-4)
    # and it is in the gradient: the same step without the term moves the policy differently
    plain = make_dpo(epochs=1, batch_size=1, micro_batch_size=1, nll_weight=0.0)
    plain.step([problem()], lambda ps, m: [rollout(PROMPT, GOOD, 10), rollout(PROMPT, BAD, 0)], 0)
    a, b = dpo.unwrapped_policy.state_dict(), plain.unwrapped_policy.state_dict()
    assert any(not torch.allclose(a[k], b[k]) for k in a)
