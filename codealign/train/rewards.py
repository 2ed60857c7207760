"""Execution verdicts -> scalar rewards.

Paper-faithful default (Xu et al. 2024 on CodeContests/APPS): ``pass_reward`` (10) when every test
passes, else ``fail_reward`` (0). Options (``RewardConfig``):

* ``partial_credit``: ``fail + (pass - fail) * passed / total``, a denser signal;
* penalties subtracted for a compile error (CE, Python syntax errors included), a runtime error (RE),
  a time limit (TLE), and for a completion with no extractable program.

A sample whose judging failed (timeout, sandbox down) gets **no** reward: it is dropped from the update
and counted, so a broken judge can neither stall the loop nor teach the policy that good code is bad.
"""

from __future__ import annotations

from sandbox.spec import RunResult, Verdict

from codealign.train.config import RewardConfig


def reward_for(result: RunResult | None, has_code: bool, cfg: RewardConfig) -> float:
    """Reward of one sample. ``result`` is its judge result (None when it has no code)."""
    if not has_code or result is None:
        return cfg.fail_reward - cfg.no_code_penalty
    passed_all = result.verdict == Verdict.AC and result.passed == result.total > 0  # no tests proves nothing
    if passed_all:
        return cfg.pass_reward
    if cfg.partial_credit and result.total > 0:
        reward = cfg.fail_reward + (cfg.pass_reward - cfg.fail_reward) * result.passed / result.total
    else:
        reward = cfg.fail_reward
    if result.verdict == Verdict.CE:
        reward -= cfg.compile_error_penalty
    elif result.verdict == Verdict.RE:
        reward -= cfg.runtime_error_penalty
    elif result.verdict == Verdict.TLE:
        reward -= cfg.timeout_penalty
    return reward


def passed(result: RunResult | None) -> bool:
    """Whether a sample is correct: judged, and every test accepted."""
    return result is not None and result.verdict == Verdict.AC and result.passed == result.total > 0
