"""The study file: which arms to train, over which seeds, on what budget.

```yaml
description: PPO vs GRPO on the embedded task set
base: ../cpu_default.yaml          # training config every arm starts from (relative to this file)
set: [rounds=4]                    # overrides for every arm
seeds: [0, 1, 2]                   # --seeds on the command line replaces these
match_judged_samples: true         # size each arm's steps_per_round to the same judged samples per round
arms:
  - name: ppo
  - name: grpo
    set: [algo=grpo]
  - name: ppo-ladder-top
    config: ../ablation/cpu_3_ema_reference.yaml   # instead of base
```

An arm's config for seed S is: the pydantic defaults <- its ``config`` (else ``base``) <- the study's
``set`` <- the arm's ``set`` <- ``seed=S`` (the run seed: tokenizer, model initialisation, SFT warm
start and sampling; the task split, ``tasks.seed``, stays fixed so every run is tested on the same
tasks) <- ``steps_per_round`` when matching.

Matching on judged samples: a step judges ``prompts_per_step x sampling.n_per_prompt`` training
samples (``ppo.prompts_per_step`` for PPO and the critic-free algorithms, ``dpo.prompts_per_step``
for DPO). With ``match_judged_samples``, every arm's ``steps_per_round`` becomes
``round(target / samples_per_step)`` (at least 1), where the target is ``judged_samples_per_round``
or, when that is not given, the largest judged-samples-per-round of the arms as configured. Every arm
then judges the same number of training samples per round (up to rounding; the table reports the
samples actually judged), so the curves compare arms at equal sampling cost at every round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from codealign.train.config import PPO_FAMILY, ConfigError, TrainConfig, build_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    """One arm: a training config file and/or overrides."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="Names the arm's directory and table row.")
    config: str | None = Field(None, description="Training config YAML (relative to the study file); None = the study's base.")
    set: list[str] = Field(default_factory=list, description="--set overrides, applied after the study's.")
    description: str = ""


class StudyConfig(_Strict):
    """A study: arms x seeds."""

    description: str = ""
    base: str | None = Field(None, description="Training config YAML every arm starts from (relative to the study file).")
    set: list[str] = Field(default_factory=list, description="--set overrides for every arm.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    match_judged_samples: bool = Field(False, description="Size every arm's steps_per_round to the same judged samples per round.")
    judged_samples_per_round: int | None = Field(
        None, gt=0, description="The matching target; None = the largest of the arms' own judged samples per round."
    )
    arms: list[Arm] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _unique(cls, arms: list[Arm]) -> list[Arm]:
        names = [a.name for a in arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique; repeated: {dup}")
        return arms


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """(study, the directory its relative paths start from); :class:`ConfigError` on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return StudyConfig.model_validate(data), path.parent
    except yaml.YAMLError as exc:
        raise ConfigError(f"study file {str(path)!r} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'study'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid study file {str(path)!r}:\n" + "\n".join(lines)) from None


def samples_per_step(cfg: TrainConfig) -> int:
    """Training samples judged per step (one process)."""
    prompts = cfg.ppo.prompts_per_step if cfg.algo in PPO_FAMILY else cfg.dpo.prompts_per_step
    return prompts * cfg.sampling.n_per_prompt


def run_dir(out: str | Path, arm: str, seed: int) -> Path:
    return Path(out) / "runs" / arm / f"seed{seed}"


def resolve(study: StudyConfig, root: Path, out: str | Path, seeds: list[int]) -> dict[tuple[str, int], TrainConfig]:
    """The training config of every (arm, seed), with matching applied; ConfigError names the arm."""

    def build(arm: Arm, seed: int, extra: list[str]) -> TrainConfig:
        source = arm.config or study.base
        try:
            return build_config(root / source if source else None, [*study.set, *arm.set, f"seed={seed}", *extra],
                                out=str(run_dir(out, arm.name, seed)))
        except ConfigError as exc:
            raise ConfigError(f"arm {arm.name!r}: {exc}") from None

    configs = {(arm.name, s): build(arm, s, []) for arm in study.arms for s in seeds}
    if study.match_judged_samples:
        own = {a.name: samples_per_step(configs[a.name, seeds[0]]) * configs[a.name, seeds[0]].steps_per_round for a in study.arms}
        target = study.judged_samples_per_round or max(own.values())
        for arm in study.arms:
            steps = max(1, round(target / samples_per_step(configs[arm.name, seeds[0]])))
            configs.update({(arm.name, s): build(arm, s, [f"steps_per_round={steps}"]) for s in seeds})
    return configs


def plan_lines(study: StudyConfig, configs: dict[tuple[str, int], TrainConfig], seeds: list[int]) -> list[str]:
    """One line per arm: algorithm, rounds, steps per round, judged training samples per round."""
    lines = []
    for arm in study.arms:
        c = configs[arm.name, seeds[0]]
        lines.append(f"{arm.name}: algo {c.algo}, {c.rounds} rounds x {c.steps_per_round} steps x "
                     f"{samples_per_step(c)} samples = {c.steps_per_round * samples_per_step(c)} judged samples per round")
    return lines


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(), sort_keys=False)


def same_run(saved: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a run's saved config.json is this (arm, seed)'s config (output directory aside)."""
    a = TrainConfig.model_validate(saved).model_dump(exclude={"out"})
    return a == cfg.model_dump(exclude={"out"})
