"""Training configuration: pydantic models, the single source of truth for every default.

YAML files under ``configs/`` and ``--set section.field=value`` on the command line only override
these. The defaults are the *embedded CPU run* (``codealign train`` with no arguments: the ``tiny``
model on the generated task family, a few minutes on 2 cores). Algorithm hyperparameters keep the
values of Xu et al. (ICML 2024, "Is DPO Superior to PPO for LLM Alignment?") and of ReaLHF where a tiny
model learns with them; where the CPU run needs another value, the field's docstring says the paper's
value and why it differs. ``configs/qwen2.5-coder-*.yaml`` restore the paper's values at GPU scale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codealign.train.sft import SFTConfig  # the warm start's settings live with the warm start


class _Strict(BaseModel):
    # a typo in a YAML key or --set path is an error, never silently ignored
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Strict):
    """Optional LoRA adapters (peft) on the policy; the critic and reference stay full models."""

    enabled: bool = False
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="LoRA dropout. 0: PPO needs a reproducible forward pass (the first epoch's ratio is exactly 1), "
        "so PPO refuses any other value; DPO accepts it.",
    )
    target_modules: list[str] | str = "all-linear"


class ModelConfig(_Strict):
    """Which policy to start from, and how it is stored, computed and placed."""

    name_or_path: str = Field(
        "tiny", description="'tiny' (offline preset: small causal LM + locally trained tokenizer), a HF hub name, or a local path."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Storage dtype of the loaded weights. Trained weights must be float32 (fp32 master weights: AdamW "
        "on bf16 weights drops small updates, codealign/train/precision.py); a lower dtype is accepted only for the "
        "frozen base under LoRA adapters. For bf16 speed set mixed_precision instead.",
    )
    mixed_precision: Literal["no", "bf16"] = Field(
        "no",
        description="Compute dtype of forward/backward passes: 'bf16' = bf16 compute on fp32 master weights, fp32 "
        "optimizer states and an fp32 EMA reference (accelerate autocast; FSDP2 MixedPrecisionPolicy when sharded). "
        "'no' on the CPU default; the GPU presets use 'bf16'.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute layer activations in backward (policy and critic): less memory, ~1/3 more compute."
    )
    sharding: Literal["none", "fsdp"] = Field(
        "none",
        description="'none': every process holds whole models (DDP across processes). 'fsdp': policy, critic and "
        "reference sharded over the processes with FSDP2 (needs >= 2 processes). DeepSpeed is not supported.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @model_validator(mode="after")
    def _trainable_in_fp32(self) -> "ModelConfig":
        if self.dtype != "float32" and not self.lora.enabled:
            raise ValueError(
                f"model.dtype={self.dtype} would train the weights in {self.dtype}: AdamW updates below its resolution are "
                f"lost (at lr 1e-6 only ~2% of bf16 weights change, and the EMA reference barely moves). Keep "
                f"model.dtype=float32 and set model.mixed_precision=bf16 (bf16 compute, fp32 master weights); a lower "
                f"dtype is only for the frozen base of a LoRA policy (model.lora.enabled=true)"
            )
        return self


class TasksConfig(_Strict):
    """Where training, validation and test problems come from.

    Tune on validation, report test: ``metrics.jsonl`` round rows carry ``test_pass@k`` (and its
    alias ``eval_pass@k``) and ``val_pass@k``, each with its standard error.
    """

    dataset: str = Field(
        "synthetic",
        description="'synthetic' (the embedded generated task family with its own train / validation / test split, "
        "codealign.synthetic_tasks.make_split) or a dataset name/path for codealign.loaders.load_problems.",
    )
    train_split: str = "train"
    eval_split: str = Field("test", description="Test split of a real dataset: what eval_pass@k / test_pass@k report (ignored for 'synthetic').")
    val_split: str | None = Field(
        None, description="Validation split of a real dataset (tune on it; val_pass@k); None = no validation. Ignored for 'synthetic'."
    )
    max_train_problems: int | None = Field(None, gt=0)
    max_eval_problems: int | None = Field(48, gt=0, description="Test problems evaluated each round (synthetic: 48 exist).")
    max_val_problems: int | None = Field(
        48, ge=0, description="Validation problems evaluated each round (synthetic: 48 exist); 0 = skip the validation evaluation."
    )
    seed: int = Field(0, description="Seed of the generated task family (which combinations are held out).")


class VLLMConfig(_Strict):
    """The ``vllm`` sampler during training (codealign/samplers/vllm.py, vllm_server.py). Written against the
    vLLM API of the ``vllm`` extra's version range; it has NOT run in this repository (no GPU, no vLLM here):
    the tests check the calls against a stand-in module."""

    mode: Literal["colocate", "server"] = Field(
        "colocate",
        description="'colocate': one engine inside every training process (vLLM's external launcher, as TRL's colocate "
        "mode), on the training GPUs; weights pushed in-process. 'server': sample from a running `vllm serve` on "
        "separate GPUs and push the weights to it after each update (see server_url, weights_dir).",
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Engine dtype; the policy's fp32 master weights are cast to it when pushed."
    )
    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        le=1,
        description="colocate: share of each GPU's memory the engine may take (weights + KV cache). vLLM's default 0.9 "
        "leaves no room for the policy, critic and reference beside it; 0.3 is TRL's colocate suggestion.",
    )
    max_model_len: int | None = Field(
        None, gt=0, description="colocate: longest prompt + response, tokens (None = the model's own); lower = smaller minimum KV cache."
    )
    tensor_parallel_size: int = Field(
        1,
        gt=0,
        description="colocate: GPUs per engine. Must divide the number of processes; the processes of a group share "
        "one engine and sample each other's prompts together (same seed within a group).",
    )
    sleep: bool = Field(
        True,
        description="colocate: put the engine to sleep (level 1: KV cache freed, weights offloaded to CPU) after each "
        "sampling call, and wake it before the next weight push, so the update has the GPU memory.",
    )
    server_url: str | None = Field(None, description="server: base URL of the vLLM server, e.g. http://10.0.0.2:8000.")
    server_model: str | None = Field(None, description="server: the served model name (default: model.name_or_path).")
    weights_dir: str | None = Field(
        None,
        description="server: a directory both the trainer and the server can read (shared filesystem); the trainer "
        "writes the policy there as safetensors after each update and asks the server to reload from it.",
    )
    timeout_s: float = Field(600.0, gt=0, description="server: seconds to wait for one HTTP request (sampling or weight reload).")


class SamplingConfig(_Strict):
    """Rollout sampling (also the evaluation's sampling unless EvalConfig overrides)."""

    sampler: Literal["hf", "vllm"] = "hf"
    n_per_prompt: int = Field(8, gt=0, description="Samples per problem per step (DPO pairs are built among them).")
    temperature: float = Field(1.0, ge=0, description="Paper: 1.0.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0, description="Tokens. The tiny task family's solutions are ~35 tokens.")
    batch_size: int = Field(64, gt=0, description="Prompts x samples generated at once by the hf sampler.")
    static_cache: bool | None = Field(
        None,
        description="hf sampler: static KV cache + torch.compile (None = on for CUDA, off on CPU). Measured on an H200 with a 0.5B model: 5.6x the new tokens/s of plain generate at batch 64.",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)

    @model_validator(mode="after")
    def _server_needs_its_address(self) -> "SamplingConfig":
        v = self.vllm
        if self.sampler == "vllm" and v.mode == "server" and (not v.server_url or not v.weights_dir):
            raise ValueError("sampling.vllm.mode=server needs sampling.vllm.server_url and sampling.vllm.weights_dir")
        return self


class JudgeConfig(_Strict):
    """The sandbox that turns programs into verdicts."""

    sandbox_urls: list[str] | None = Field(None, description="Sandbox services; None = the in-process local executor.")
    workers: int | None = Field(None, gt=0, description="Local executor workers (None = one per core).")
    isolate: Literal["on", "off"] = Field(
        "on",
        description="Local executor: 'on' needs root (namespaces, uid drop, memory cgroup) and refuses to start "
        "without; 'off' judges with rlimits only (trusted code, a machine without root), reported in every result.",
    )
    timeout_s: float = Field(
        120.0, gt=0, description="Wall-clock limit for judging one batch, seconds; what is unjudged by then counts as a judge error."
    )


class RewardConfig(_Strict):
    """Verdict -> scalar reward (see codealign/train/rewards.py)."""

    pass_reward: float = Field(10.0, description="Paper (CodeContests/APPS): 10 when every test passes.")
    fail_reward: float = Field(0.0, description="Paper: 0 otherwise.")
    partial_credit: bool = Field(False, description="Reward fail_reward + (pass_reward - fail_reward) * passed/total instead.")
    compile_error_penalty: float = Field(0.0, ge=0, description="Subtracted on CE (includes Python syntax errors).")
    runtime_error_penalty: float = Field(0.0, ge=0, description="Subtracted on RE.")
    timeout_penalty: float = Field(0.0, ge=0, description="Subtracted on TLE.")
    no_code_penalty: float = Field(0.0, ge=0, description="Subtracted when no program can be extracted.")


class EvalConfig(_Strict):
    """Held-out evaluation after every round (round 0 = the starting policy, before any update)."""

    n: int = Field(8, gt=0, description="Samples per held-out problem; pass@1 is the unbiased estimate from them.")
    ks: list[int] = Field(default_factory=lambda: [1, 4, 8])
    temperature: float | None = Field(None, ge=0, description="None = the sampling temperature (honest pass@1 at T).")


class PPOConfig(_Strict):
    """PPO as in Xu et al. (2024) / ReaLHF, with the paper's three factors as switches.

    The critic-free algorithms (``algo`` grpo, drgrpo, rloo, reinforce++; codealign/train/advantages.py)
    share this section: rollouts, the clipped loss, mini-batches, optimizer, EMA reference. They build
    no critic, so ``lam``, ``value_clip``, ``critic_lr`` and factor 1 (``advantage_normalization``: they
    normalise advantages their own way) apply to ``ppo`` only; ``beta`` and ``kl_estimator`` default per
    algorithm (``ALGO_DEFAULTS``).
    """

    beta: float = Field(
        0.1,
        ge=0,
        description="KL penalty coefficient. PPO (paper 0.1), RLOO and REINFORCE++: per-token KL in the reward; GRPO "
        "and Dr.GRPO: a per-token KL term in the loss. Default per algorithm: ALGO_DEFAULTS.",
    )
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="KL estimator (ReaLHF, in the reward: k1 = log p - log ref; GRPO, in the loss: k3)."
    )
    gamma: float = Field(1.0, ge=0, le=1, description="Discount. Paper: 1.0.")
    lam: float = Field(1.0, ge=0, le=1, description="GAE lambda. Paper: 1.0.")
    ratio_clip: float = Field(0.2, gt=0, description="PPO ratio clip epsilon. ReaLHF: 0.2.")
    value_clip: float | None = Field(0.2, gt=0, description="Value clip around the old values. ReaLHF: 0.2.")
    reward_clip: float | None = Field(20.0, gt=0, description="Clip of the sequence score. ReaLHF: 20.")
    ppo_epochs: int = Field(1, gt=0, description="Passes over each batch of rollouts.")
    n_minibatches: int = Field(4, gt=0, description="Optimizer steps per epoch. Paper: 4 mini-batches.")
    micro_batch_size: int = Field(32, gt=0, description="Rollouts per forward/backward (gradient accumulation up to a mini-batch).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (ReaLHF: 1.0).")
    actor_lr: float = Field(
        1e-4,
        gt=0,
        description="Paper: 1e-5 for 1.5B-34B models. The ~1M-parameter tiny model needs a larger step to move in "
        "~128 updates; 5e-4 and above collapsed it (measured).",
    )
    critic_lr: float = Field(1e-3, gt=0, description="Paper: 5e-6. Larger for the tiny run (fresh value head).")
    value_norm: bool = Field(
        False,
        description="The critic regresses returns standardised by running statistics, and its outputs are mapped back "
        "to reward units for GAE (codealign/train/value_norm.py). ReaLHF's default; on in the GPU presets. Off in the "
        "tiny CPU default, whose documented learning runs were made without it.",
    )
    value_norm_beta: float = Field(
        0.99995, gt=0, lt=1, description="EMA rate of the return statistics (ReaLHF: 0.99995, i.e. close to the mean over the whole run)."
    )
    weight_decay: float = 0.0
    # -- the three factors (Table 3 of the paper) --
    advantage_normalization: bool = Field(
        False,
        description="Factor 1: whiten advantages over all valid tokens of the batch. Paper: on (the GPU presets and "
        "the ablation ladder set it). Off in the tiny CPU default: with 10-20% of samples passing, whitening "
        "centres the advantages so every update mostly pushes down the failing majority, and a 0.9M-parameter "
        "model moves that mass onto other wrong programs (held-out pass@1 flat or collapsing, measured); "
        "unwhitened, the update is led by the passing samples and pass@1 rose 0.174 -> 0.33 in 4 rounds.",
    )
    prompts_per_step: int = Field(
        8, gt=0, description="Factor 2 (large batch): problems per PPO step; rollouts = prompts_per_step * n_per_prompt. Paper: 512 rollouts."
    )
    ema_reference: bool = Field(True, description="Factor 3: ref = (1 - eta) * ref + eta * policy after every update.")
    ema_eta: float = Field(
        0.001, ge=0, le=1, description="EMA rate. ReaLHF example: 0.001. Harmless at the tiny scale too (few updates)."
    )


class DPOConfig(_Strict):
    """DPO and iterative DPO on pairs built from execution verdicts.

    The defaults are the tiny CPU run's: plain DPO (the paper's loss, beta 0.1) plus the RPO term and a
    larger learning rate; the GPU presets (configs/qwen2.5-coder-*-dpo.yaml) are the paper's plain DPO.
    """

    beta: float = Field(0.1, gt=0, description="Paper: 0.1.")
    lr: float = Field(
        2e-4,
        gt=0,
        description="Paper: 1e-6 for 1.5B-34B models (GPU presets). The ~1M-parameter tiny model needs a larger "
        "step: 1e-4 learned more slowly, 5e-4 collapsed it, and 4x more optimizer steps at 2e-4 (batch 4) "
        "collapsed it too (measured, docs/train.md).",
    )
    iterative: bool = Field(
        True, description="DPO-Iter: each round samples with the current policy and the reference becomes the previous round's model. False = DPO: samples from and reference = the starting policy."
    )
    pairing: Literal["one", "all"] = Field(
        "all", description="Per prompt: 'one' random (passing, failing) pair, or 'all' pairs up to max_pairs_per_prompt."
    )
    max_pairs_per_prompt: int = Field(4, gt=0)
    reference_as_chosen: bool = Field(
        False,
        description="When no sample of a prompt passes, use a dataset reference solution as chosen (the paper "
        "does on APPS; the GPU presets turn it on). Off in the tiny CPU default: there the reference solutions "
        "are the warm start's SFT data, so a gain could come from more SFT rather than from execution rewards.",
    )
    nll_weight: float = Field(
        1.0,
        ge=0,
        description="RPO (Pang et al. 2024, iterative reasoning preference optimization): add nll_weight x the "
        "per-token NLL of the chosen response to the DPO loss. Paper (and GPU presets): 0 = plain DPO. 1 in the "
        "tiny CPU default: plain DPO moved the tiny model's probability mass from rejected programs onto other "
        "wrong ones (held-out pass@1 fell in round 1 in every run); with the term it rose (measured, docs/train.md).",
    )
    epochs: int = Field(1, gt=0, description="Passes over each step's pairs.")
    batch_size: int = Field(16, gt=0, description="Pairs per optimizer step.")
    micro_batch_size: int = Field(16, gt=0, description="Pairs per forward/backward.")
    max_grad_norm: float = Field(1.0, gt=0)
    prompts_per_step: int = Field(
        8, gt=0, description="Problems sampled per DPO step (x sampling.n_per_prompt samples; the same 64 samples as a PPO step)."
    )


class LogConfig(_Strict):
    tensorboard: bool = Field(True, description="Write TensorBoard logs to DIR/tb when tensorboard is installed.")
    progress: bool = Field(True, description="Progress bars.")
    plot: bool = Field(True, description="DIR/curves.png: reward and held-out pass@1 across rounds.")


#: Per-algorithm defaults, applied beneath whatever the YAML file, --set and the flags give (an explicit
#: value always wins); the resolved values are saved in DIR/config.json. Sources:
#: * grpo: DeepSeekMath (Shao et al. 2024), beta 0.04 on a k3 KL term in the loss;
#: * drgrpo: Liu et al. 2025 (Dr.GRPO) train without a KL term: beta 0;
#: * rloo: KL in the sequence reward, beta 0.05 (TRL's RLOOConfig.kl_coef; Ahmadian et al. 2024 put it there too);
#: * reinforce++: per-token KL in the reward, beta 0.01 (OpenRLHF's REINFORCE++ examples, Hu 2025);
#: * steps_per_round on the tiny CPU run: see TrainConfig.steps_per_round.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"steps_per_round": 32},
    "dpo": {"steps_per_round": 64},
    "grpo": {"steps_per_round": 32, "ppo": {"beta": 0.04, "kl_estimator": "k3"}},
    "drgrpo": {"steps_per_round": 32, "ppo": {"beta": 0.0, "kl_estimator": "k3"}},
    "rloo": {"steps_per_round": 32, "ppo": {"beta": 0.05}},
    "reinforce++": {"steps_per_round": 32, "ppo": {"beta": 0.01}},
}
#: The algorithms PPO's trainer runs (every one but DPO): their estimators are in advantages.ESTIMATORS.
PPO_FAMILY = ("ppo", "grpo", "drgrpo", "rloo", "reinforce++")


class TrainConfig(_Strict):
    """Everything ``codealign train`` needs."""

    algo: Literal["ppo", "dpo", "grpo", "drgrpo", "rloo", "reinforce++"] = Field(
        "ppo",
        description="ppo (GAE + critic), dpo (DPO / DPO-Iter), or a critic-free estimator sharing PPO's rollouts and "
        "clipped loss: grpo (Shao et al. 2024), drgrpo (Liu et al. 2025), rloo (Ahmadian et al. 2024), reinforce++ (Hu 2025).",
    )
    rounds: int = Field(4, ge=0, description="Rounds after round 0 (each: steps_per_round updates, then eval).")
    steps_per_round: int = Field(
        None,  # filled in by _default_steps: the algorithm's own default
        gt=0,
        description="Sample-judge-update steps per round. Default per algorithm on the tiny run (ALGO_DEFAULTS): PPO "
        "and the critic-free ones 32 (a PPO round is ~75 s on 2 cores), DPO 64 (a DPO step updates on its pairs only, "
        "so a round costs ~55 s; 32 steps learned too little in four rounds, measured).",
    )
    out: str = Field("runs/train", description="Output directory (metrics.jsonl, checkpoints, curves.png).")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    keep_checkpoints: int = Field(1, ge=1, description="Complete-round checkpoints kept on disk (newest first).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sft: SFTConfig = Field(
        default_factory=SFTConfig,
        description="Warm start on reference solutions of the training problems, before round 0 (steps=0: none).",
    )
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="before")
    @classmethod
    def _algo_defaults(cls, data: Any) -> Any:
        algo = data.get("algo", "ppo") if isinstance(data, dict) else None
        if algo in ALGO_DEFAULTS:  # a bad algo: the field's own error
            given = {k: v for k, v in data.items() if v is not None}
            data = deep_merge(ALGO_DEFAULTS[algo], given)
        return data

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if any(k > self.eval.n for k in self.eval.ks):
            raise ValueError(f"eval.ks {self.eval.ks} must all be <= eval.n = {self.eval.n}")
        if self.algo == "ppo" and self.model.lora.enabled and self.model.lora.dropout > 0:
            raise ValueError(
                "model.lora.dropout must be 0 for PPO: dropout makes the forward pass that produced the old "
                "log-probs irreproducible, so the first epoch's ratio is not 1"
            )
        return self


class ConfigError(ValueError):
    """A config file, override or value that cannot be used; the message says which and why."""


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, recursing into nested dicts (lists and scalars are replaced)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"ppo.beta=0.05"`` -> ``{"ppo": {"beta": 0.05}}``; the value is parsed as YAML (numbers, bools,
    null, lists like ``[1,4]``), so ``--set judge.sandbox_urls=[http://a:8080]`` works."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    path, raw = text.split("=", 1)
    keys = [k.strip() for k in path.split(".")]
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from None
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-5" as a string
    tree: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        tree = {key: tree}
    return tree


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    # `base: other.yaml` (relative to this file) lets presets share a common file, e.g. the ablation ladder
    base = data.pop("base", None)
    if base is not None:
        data = deep_merge(load_yaml(path.parent / base), data)
    return data


def build_config(
    config_path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None, **fields: Any
) -> TrainConfig:
    """``base`` (default: the pydantic defaults; a resumed run's saved config) <- YAML file <- ``--set``
    overrides <- explicit fields (the CLI's --algo/--rounds/--out, skipped when None). Raises
    :class:`ConfigError` with the offending field on any bad value."""
    data: dict[str, Any] = deep_merge(base or {}, load_yaml(config_path) if config_path else {})
    for text in overrides or []:
        data = deep_merge(data, parse_override(text))
    data = deep_merge(data, {k: v for k, v in fields.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid training config:\n" + "\n".join(lines)) from None


#: What a resumed run may not change: its checkpoints and its round-0 policy were made with these.
FIXED_ON_RESUME = ("algo", "seed", "model", "tasks", "sft")


def resume_config(
    out: str | Path, config_path: str | Path | None = None, overrides: list[str] | None = None, **fields: Any
) -> tuple[TrainConfig, list[str]]:
    """The config a resumed run continues with: the one saved in ``out/config.json``, changed only by
    what the caller gives explicitly (a YAML file, ``--set``, ``--rounds``...). Returns the config and
    the changes as ``"field: old -> new"`` lines. A change of a :data:`FIXED_ON_RESUME` field is an error."""
    saved_file = Path(out) / "config.json"
    if not saved_file.is_file():
        raise ConfigError(f"--resume: {out} holds no run (no config.json); start one without --resume")
    saved = json.loads(saved_file.read_text())
    cfg = build_config(config_path, overrides, base=saved, **{**fields, "out": str(out)})
    before, after = _flatten(TrainConfig.model_validate(saved).model_dump()), _flatten(cfg.model_dump())
    changed = [k for k in after if before.get(k) != after[k]]
    fixed = [k for k in changed if k.split(".")[0] in FIXED_ON_RESUME]
    if fixed:
        raise ConfigError(
            f"--resume cannot change {', '.join(fixed)}: the run's checkpoints and round-0 policy were made with "
            f"the saved values; start a new run (another --out) instead"
        )
    return cfg, [f"{k}: {before.get(k)!r} -> {after[k]!r}" for k in changed]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
