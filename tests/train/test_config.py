"""Training config: pydantic defaults, YAML overrides, --set overrides, clear errors, the CLI surface."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from codealign.train.config import ConfigError, TrainConfig, build_config, parse_override
from codealign.train.rewards import reward_for
from codealign.train.config import RewardConfig
from sandbox.spec import RunResult, Verdict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_keep_the_papers_algorithm_values():
    cfg = TrainConfig()
    assert (cfg.ppo.beta, cfg.ppo.gamma, cfg.ppo.lam, cfg.ppo.ratio_clip, cfg.ppo.value_clip) == (0.1, 1.0, 1.0, 0.2, 0.2)
    assert cfg.ppo.ema_reference and cfg.ppo.ema_eta == 0.001
    # factor 1 is off only in the tiny CPU default (see PPOConfig.advantage_normalization); the GPU presets restore it
    assert not cfg.ppo.advantage_normalization
    for preset in ("qwen2.5-coder-1.5b-ppo.yaml", "qwen2.5-coder-7b-ppo.yaml"):
        assert build_config(CONFIGS / preset).ppo.advantage_normalization
    assert cfg.dpo.beta == 0.1 and cfg.sampling.temperature == 1.0
    # the GPU DPO presets are the paper's plain DPO (the CPU default adds the RPO term, see DPOConfig)
    for preset in ("qwen2.5-coder-1.5b-dpo.yaml", "qwen2.5-coder-7b-dpo.yaml"):
        dpo = build_config(CONFIGS / preset).dpo
        assert (dpo.beta, dpo.lr, dpo.nll_weight, dpo.iterative) == (0.1, 1e-6, 0.0, True)
    assert cfg.reward.pass_reward == 10.0 and cfg.reward.fail_reward == 0.0 and not cfg.reward.partial_credit


def test_yaml_then_set_then_explicit_fields(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: dpo\nrounds: 7\nppo:\n  beta: 0.2\n  actor_lr: 1.0e-5\n")
    cfg = build_config(f, ["ppo.beta=0.05", "eval.ks=[1,2]", "judge.sandbox_urls=[http://a:1]"], rounds=3)
    assert cfg.algo == "dpo" and cfg.rounds == 3  # explicit CLI flag wins over the file
    assert cfg.ppo.beta == 0.05 and cfg.ppo.actor_lr == 1e-5  # --set wins over the file, rest kept
    assert cfg.eval.ks == [1, 2] and cfg.judge.sandbox_urls == ["http://a:1"]
    assert cfg.ppo.gamma == 1.0  # untouched default


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["ppo.betta=0.1"], "ppo.betta"),  # typo: never silently ignored
        (["ppo.beta=-1"], "ppo.beta"),
        (["algo=sft"], "algo"),
        (["eval.n=2"], "eval.ks"),
        (["ppo.beta"], "section.field=value"),
        (["sampling.temperature=abc"], "sampling.temperature"),
    ],
)
def test_bad_overrides_name_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config(None, overrides)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(bad)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(tmp_path / "list.yaml")


def test_parse_override_nests_and_parses_yaml_values():
    assert parse_override("a.b.c=1e-3") == {"a": {"b": {"c": 1e-3}}}
    assert parse_override("x=true") == {"x": True}
    assert parse_override("x=null") == {"x": None}


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "study"),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path):
    cfg = build_config(path)
    assert isinstance(cfg, TrainConfig)


@pytest.mark.parametrize("path", sorted((CONFIGS / "study").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_resolves(path, tmp_path):
    from codealign.study.config import load_study, resolve, samples_per_step

    study, root = load_study(path)
    configs = resolve(study, root, tmp_path, study.seeds)
    assert len(configs) == len(study.arms) * len(study.seeds) >= 5
    per_round = {samples_per_step(c) * c.steps_per_round for c in configs.values()}
    assert len(per_round) == 1  # matched on judged samples


def test_ablation_ladder_adds_one_factor_per_step():
    ladder = [build_config(CONFIGS / "ablation" / f) for f in
              ("0_ppo_baseline.yaml", "1_adv_norm.yaml", "2_large_batch.yaml", "3_ema_reference.yaml")]
    factors = [(c.ppo.advantage_normalization, c.ppo.prompts_per_step * c.sampling.n_per_prompt, c.ppo.ema_reference) for c in ladder]
    assert factors == [(False, 64, False), (True, 64, False), (True, 512, False), (True, 512, True)]
    assert ladder[3].ppo.model_dump() == build_config(CONFIGS / "qwen2.5-coder-1.5b-ppo.yaml").ppo.model_dump()


def test_cli_show_config_and_bad_override_exit_code():
    run = lambda *a: subprocess.run([sys.executable, "-m", "codealign", "train", *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    ok = run("--show-config", "--algo", "dpo", "--set", "dpo.beta=0.3", "--rounds", "2")
    assert ok.returncode == 0, ok.stderr
    shown = yaml.safe_load(ok.stdout)
    assert shown["algo"] == "dpo" and shown["dpo"]["beta"] == 0.3 and shown["rounds"] == 2
    bad = run("--show-config", "--set", "ppo.nope=1")
    assert bad.returncode == 2 and "ppo.nope" in bad.stderr


def test_rewards_default_partial_credit_and_penalties():
    cfg = RewardConfig()
    ac = RunResult(verdict=Verdict.AC, passed=4, total=4)
    wa = RunResult(verdict=Verdict.WA, passed=3, total=4)
    ce = RunResult(verdict=Verdict.CE, passed=0, total=4)
    assert reward_for(ac, True, cfg) == 10.0 and reward_for(wa, True, cfg) == 0.0
    part = RewardConfig(partial_credit=True, compile_error_penalty=1.0, no_code_penalty=2.0, runtime_error_penalty=0.5)
    assert reward_for(wa, True, part) == pytest.approx(7.5)
    assert reward_for(ce, True, part) == pytest.approx(-1.0)
    assert reward_for(None, False, part) == pytest.approx(-2.0)
    assert reward_for(RunResult(verdict=Verdict.RE, passed=1, total=4), True, part) == pytest.approx(2.0)
    # A problem without tests rewards nothing (the sandbox calls a run of 0 tests AC; #9 class 10).
    assert reward_for(RunResult(verdict=Verdict.AC, passed=0, total=0), True, cfg) == 0.0


def test_steps_per_round_defaults_per_algorithm_and_an_explicit_value_wins(tmp_path):
    from codealign.train.config import ALGO_DEFAULTS

    DEFAULT_STEPS_PER_ROUND = {a: d["steps_per_round"] for a, d in ALGO_DEFAULTS.items()}

    assert build_config().steps_per_round == DEFAULT_STEPS_PER_ROUND["ppo"]
    assert build_config(algo="dpo").steps_per_round == DEFAULT_STEPS_PER_ROUND["dpo"] != DEFAULT_STEPS_PER_ROUND["ppo"]
    f = tmp_path / "c.yaml"
    f.write_text("algo: dpo\n")
    assert build_config(f).steps_per_round == DEFAULT_STEPS_PER_ROUND["dpo"]
    assert build_config(f, ["steps_per_round=3"]).steps_per_round == 3
    # the resolved value is saved in DIR/config.json, so a resumed run keeps it
    saved = build_config(algo="dpo").model_dump_json()
    assert TrainConfig.model_validate_json(saved).steps_per_round == DEFAULT_STEPS_PER_ROUND["dpo"]


def test_resume_keeps_the_saved_config_and_reports_explicit_changes(tmp_path):
    from codealign.train.config import resume_config

    out = tmp_path / "run"
    out.mkdir()
    saved = build_config(None, ["steps_per_round=6", "ppo.actor_lr=3e-4"], rounds=3, out=str(out))
    (out / "config.json").write_text(saved.model_dump_json())
    same, changes = resume_config(out)
    assert same == saved and changes == []  # not the defaults: 3 rounds, 6 steps, lr 3e-4
    longer, changes = resume_config(out, None, ["eval.n=16"], rounds=5)
    assert (longer.rounds, longer.steps_per_round, longer.eval.n, longer.ppo.actor_lr) == (5, 6, 16, 3e-4)
    assert changes == ["rounds: 3 -> 5", "eval.n: 8 -> 16"]
    with pytest.raises(ConfigError, match="cannot change algo"):
        resume_config(out, algo="dpo")
    with pytest.raises(ConfigError, match="cannot change tasks.seed"):
        resume_config(out, None, ["tasks.seed=2"])
    with pytest.raises(ConfigError, match="holds no run"):
        resume_config(tmp_path / "nothing")
