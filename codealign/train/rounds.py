"""The round loop of ``codealign train``.

Round 0: build (or load) the policy, warm-start it by SFT if configured, evaluate it on the test and
validation problems, checkpoint. Rounds 1..R: ``steps_per_round`` times (draw training problems ->
sample -> judge -> reward -> update), then evaluate test and validation pass@1 / pass@k and checkpoint.

Files in ``out``:

* ``metrics.jsonl``: one JSON object per line. Per-step rows ``{"type": "step", "step", "train_round",
  reward_mean, kl, losses, clip_frac, entropy, tokens/s, ...}``; one row per round
  ``{"type": "round", "round": int, "eval_pass@1": float in [0, 1], "eval_pass@k"..., "test_pass@k",
  "test_pass@k_se", "val_pass@k", "val_pass@k_se", ...}`` where ``eval_pass@k`` is the test split's
  pass@k (``test_pass@k``; the key external tools read) and ``_se`` its standard error over problems
  (only round rows carry the key ``"round"``);
* ``config.json`` (the resolved config), ``curves.png`` (reward and pass@1 per round), ``tb/``
  (TensorBoard, when installed), ``checkpoints/round_NNNN/`` (the newest complete rounds),
  ``policy/`` (the final policy, loadable with ``from_pretrained`` / ``codealign eval --model``).

Resume (``--resume``): the newest complete checkpoint is loaded, ``metrics.jsonl`` is cut back to
the byte length it had when that checkpoint was written (rows of a half-done round go), and the next
round is rerun from its start. Problem draws and sampling seeds depend only on (seed, step), so the
rerun sees the same data as the interrupted attempt: no round or step is lost, skipped or repeated.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codealign.train.config import TrainConfig

CHECKPOINTS = "checkpoints"


# -- files -----------------------------------------------------------------------------------------


class MetricsLog:
    """Appends JSON rows to ``metrics.jsonl`` (flushed per row) and mirrors numbers to TensorBoard."""

    def __init__(self, out: Path, truncate_to: int | None, enabled: bool, tensorboard: bool):
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if truncate_to is not None and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(truncate_to)
        self.f = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard not installed: the JSONL file is the record
                self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())
        if self.tb is not None:
            x = row.get("round") if row.get("type") == "round" else row.get("step")
            prefix = "round" if row.get("type") == "round" else "step"
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("round", "step"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, x)

    def tell(self) -> int:
        return self.f.tell() if self.enabled else 0

    def close(self) -> None:
        if self.enabled:
            self.f.close()
            if self.tb is not None:
                self.tb.close()


def read_metrics(out: str | Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def latest_checkpoint(out: Path) -> Path | None:
    """The newest *complete* checkpoint (a directory is complete once renamed into place)."""
    root = out / CHECKPOINTS
    done = sorted(p for p in root.glob("round_*") if (p / "state.json").exists()) if root.exists() else []
    return done[-1] if done else None


def plot_curves(out: Path) -> Path | None:
    """``curves.png``: test pass@1 (band: +- one standard error), validation pass@1 and mean training
    reward per round."""
    rows = [r for r in read_metrics(out) if r.get("type") == "round"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    rounds = [r["round"] for r in rows]
    test = [r["eval_pass@1"] for r in rows]
    ax1.plot(rounds, test, "o-", color="tab:blue", label="test pass@1")
    if all("test_pass@1_se" in r for r in rows):
        se = [r["test_pass@1_se"] for r in rows]
        ax1.fill_between(rounds, [m - e for m, e in zip(test, se)], [m + e for m, e in zip(test, se)], color="tab:blue", alpha=0.2)
    if all("val_pass@1" in r for r in rows):
        ax1.plot(rounds, [r["val_pass@1"] for r in rows], "^:", color="tab:green", label="validation pass@1")
    ax1.set_xlabel("round")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_ylabel("pass@1", color="tab:blue")
    ax1.set_ylim(0, 1)
    ax1.legend(loc="upper left", fontsize=8)
    with_reward = [r for r in rows if r.get("reward_mean") is not None]
    if with_reward:
        ax2 = ax1.twinx()
        ax2.plot([r["round"] for r in with_reward], [r["reward_mean"] for r in with_reward], "s--", color="tab:orange")
        ax2.set_ylabel("mean training reward", color="tab:orange")
    ax1.set_title(f"codealign train ({rows[-1].get('algo', '')})")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- set-up ------------------------------------------------------------------------------------------


def load_tasks(cfg: TrainConfig):
    """The run's :class:`codealign.synthetic_tasks.TaskSplit` (train, validation, test problems), cut to
    the configured sizes. 'synthetic': the family's own split (no held-out task leaks from training);
    a real dataset: its ``train_split`` / ``val_split`` / ``eval_split``, checked disjoint by id."""
    from codealign.synthetic_tasks import TaskSplit

    t = cfg.tasks
    if t.dataset == "synthetic":
        from codealign.synthetic_tasks import make_split

        split = make_split(seed=t.seed)
    else:
        from codealign.loaders import load_problems

        named = {"train": t.train_split, "validation": t.val_split, "test": t.eval_split}
        loaded = {k: load_problems(t.dataset, split=v) if v else [] for k, v in named.items()}
        split = TaskSplit(**loaded)
        for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
            overlap = {p.id for p in getattr(split, a)} & {p.id for p in getattr(split, b)}
            if overlap:
                raise ValueError(f"{len(overlap)} problems are in both the {a} and the {b} split, e.g. {sorted(overlap)[:3]}")
    cut = lambda problems, n: problems if n is None else problems[:n]  # noqa: E731
    split = TaskSplit(cut(split.train, t.max_train_problems), cut(split.validation, t.max_val_problems),
                      cut(split.test, t.max_eval_problems))
    if not split.train or not split.test:
        raise ValueError(f"need training and test problems; got {len(split.train)} and {len(split.test)}")
    return split


def initial_policy(cfg: TrainConfig, train_problems, log=print, device="cpu"):
    """(policy, tokenizer) before round 0: the tiny preset or a pretrained model, warm-started by SFT
    on the training problems' reference solutions when ``sft.steps > 0``. A pretrained model is moved to
    ``device`` first, so its SFT runs there (unsharded, on every process: for models that fit one device)."""
    from codealign.prompts import build_prompt
    from codealign.train.models import load_pretrained
    from codealign.train.sft import format_response, sft, warm_start_tiny

    if cfg.model.name_or_path == "tiny":
        return warm_start_tiny(train_problems, build_prompt, seed=cfg.seed, sft=cfg.sft, log=log)
    model, tokenizer = load_pretrained(cfg.model.name_or_path, cfg.model.dtype)
    model.to(device)
    if cfg.sft.steps > 0:
        with_solution = [p for p in train_problems if p.solutions.get("python")]
        prompts = [build_prompt(p, tokenizer) for p in with_solution]
        responses = [format_response(p.solutions["python"][0]) for p in with_solution]
        log(f"warm start: SFT for {cfg.sft.steps} steps on {len(prompts)} reference solutions")
        model = sft(model, tokenizer, prompts, responses, cfg.sft, mixed_precision=cfg.model.mixed_precision)
    return model, tokenizer


def draw_problems(problems: list, k: int, step: int, seed: int, rank: int, world: int) -> list:
    """The problems of one step: ``k`` per process, a function of (seed, step) only (resume-safe)."""
    rng = random.Random(f"draw-{seed}-{step}")
    picked = rng.sample(problems, min(len(problems), k * world))
    return picked[rank::world]


#: The splits a round evaluates: metrics.jsonl key prefix, TaskSplit field, offset of its sampling seed.
EVAL_SPLITS = (("test", "test", 17), ("val", "validation", 29))


def evaluate(policy, problems, collector, cfg: TrainConfig, acc, prefix: str, seed_offset: int) -> dict[str, float]:
    """pass@k on ``problems``: ``eval.n`` samples per problem at the evaluation temperature, unbiased
    estimator with its standard error over problems (``codealign.metrics``). Keys ``{prefix}_pass@k``,
    ``{prefix}_pass@k_se``, ``{prefix}_problems``, ``{prefix}_samples``, ``{prefix}_s``. The same
    sampling seed every round (common random numbers: round-to-round changes are not sampling luck)."""
    from accelerate.utils import gather_object

    from codealign.metrics import mean_pass_at_k, pass_at_k_se
    from codealign.samplers.base import SamplingParams

    ev = cfg.eval
    params = SamplingParams(
        max_new_tokens=cfg.sampling.max_new_tokens,
        temperature=cfg.sampling.temperature if ev.temperature is None else ev.temperature,
        top_p=cfg.sampling.top_p,
        seed=cfg.seed * 7919 + seed_offset + acc.process_index,
    )
    shard = problems[acc.process_index :: acc.num_processes]
    t0 = time.perf_counter()
    # every process samples, even with an empty shard: a sharded policy is gathered collectively
    rollouts = collector(shard, policy, n=ev.n, params=params)
    by_problem: dict[str, list] = {}
    for r in rollouts:
        by_problem.setdefault(r.problem_id, []).append(r)
    counts = [(len(v), sum(r.passed for r in v)) for v in by_problem.values()]
    counts = gather_object(counts) if acc.num_processes > 1 else counts
    pk, se = mean_pass_at_k(counts, ev.ks), pass_at_k_se(counts, ev.ks)
    row = {f"{prefix}_pass@{k}": float(v) for k, v in sorted(pk.items())}
    row.update({f"{prefix}_pass@{k}_se": float(v) for k, v in sorted(se.items())})
    row.update({f"{prefix}_problems": len(counts), f"{prefix}_samples": sum(n for n, _ in counts), f"{prefix}_s": time.perf_counter() - t0})
    return row


# -- the loop ----------------------------------------------------------------------------------------


def prepare_out_dir(cfg: TrainConfig, resume: bool) -> None:
    """Create ``out``; refuse to start over a run, or to resume where there is none. (A resumed run's
    config is ``config.resume_config``'s: the saved one, changed only by explicit flags.)"""
    out = Path(cfg.out)
    if resume:
        if not (out / "config.json").exists():
            raise FileNotFoundError(f"--resume: {out} holds no run (no config.json); start one without --resume")
        return
    if (out / "metrics.jsonl").exists() or latest_checkpoint(out) is not None:
        raise FileExistsError(f"{out} already holds a run; continue it with --resume or pick another --out")
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class Run:
    """Everything one ``codealign train`` process holds between set-up and the end of the loop."""

    cfg: TrainConfig
    acc: Any  # accelerate.Accelerator
    out: Path
    t_start: float  # perf_counter origin of elapsed_s (shifted back by the time of earlier attempts)
    tasks: Any  # synthetic_tasks.TaskSplit: train, validation, test problems
    tokenizer: Any
    trainer: Any  # ppo.PPO or dpo.DPO
    sampler: Any  # rollouts.PolicySampler
    collector: Any  # rollouts.Collector
    judge: Any  # rollouts.Judge
    log: MetricsLog
    step: int = 0  # steps done so far (a step's problems and sampling seed depend on it)
    start_round: int = 1  # 1 for a fresh run (after round 0); on resume, the round after the checkpoint's
    resumed: bool = False  # continued from a checkpoint (round 0 was evaluated by an earlier attempt)
    last: dict = field(default_factory=dict)  # the newest round row

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    def say(self, *args: Any) -> None:
        if self.main:
            print(*args)


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or continue, ``resume``) training with ``cfg``; returns the last round row. To continue
    with a run's saved config, pass ``config.resume_config(out)[0]`` (what ``--resume`` does)."""
    run = start_run(cfg, resume)
    if not run.resumed:  # round 0: the starting policy, before any update
        evaluate_round(run, 0, {"reward_mean": None, "train_pass_rate": None})
        save_checkpoint(run, 0)
    for round_index in range(run.start_round, run.cfg.rounds + 1):
        train_round(run, round_index)
    finish(run)
    return run.last


def start_run(cfg: TrainConfig, resume: bool) -> Run:
    """Set up a run: output dir and saved config, tasks, models (from the newest checkpoint on resume),
    the trainer, sampler, judge and metrics log."""
    import torch
    from accelerate import Accelerator

    from codealign.samplers.base import SamplingParams
    from codealign.train.models import resolve_device
    from codealign.train.rollouts import Collector, Judge, PolicySampler, build_engine

    # mixed precision: bf16 compute, fp32 master weights (codealign/train/precision.py)
    acc = Accelerator(cpu=resolve_device(cfg.device).type == "cpu", mixed_precision=cfg.model.mixed_precision)
    if acc.is_main_process:
        prepare_out_dir(cfg, resume)
    acc.wait_for_everyone()
    out = Path(cfg.out)
    if acc.is_main_process:
        (out / "config.json").write_text(cfg.model_dump_json(indent=2))

    t_start = time.perf_counter()
    tasks = load_tasks(cfg)
    ckpt = latest_checkpoint(out) if resume else None
    state = json.loads((ckpt / "state.json").read_text()) if ckpt else None
    if state:  # elapsed_s counts the whole run, across resumes (time lost to the kill excluded)
        t_start -= state.get("elapsed_s", 0.0)
    torch.manual_seed(cfg.seed)
    say = print if acc.is_main_process else (lambda *a, **k: None)
    trainer, tokenizer = build_trainer(cfg, acc, out, tasks.train, ckpt, say)

    # vLLM: colocated engine or server; its weights are replaced by the policy's before every sampling
    engine = build_engine(cfg.sampling, cfg.model.name_or_path, acc, cfg.seed)
    sampler = PolicySampler(cfg.sampling, tokenizer, engine)
    judge = Judge(cfg.judge, stop_on_first_failure=not cfg.reward.partial_credit)
    params = SamplingParams(
        max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p
    )
    collector = Collector(sampler, tokenizer, judge, cfg.reward, params, cfg.sampling.n_per_prompt)
    log = MetricsLog(out, truncate_to=state["metrics_bytes"] if state else 0, enabled=acc.is_main_process,
                     tensorboard=cfg.log.tensorboard)
    run = Run(cfg, acc, out, t_start, tasks, tokenizer, trainer, sampler, collector, judge, log)
    if state:
        say(f"resuming {out} after round {state['round']} (step {state['step']})")
        run.step, run.start_round, run.resumed = state["step"], state["round"] + 1, True
        run.last = next((r for r in reversed(read_metrics(out)) if r.get("type") == "round"), {})
    return run


def build_trainer(cfg: TrainConfig, acc, out: Path, train_problems: list, ckpt: Path | None, say):
    """(trainer, tokenizer): the policy of round 0 (built and warm-started, or reloaded from
    ``out/start_policy`` on resume), its critic and reference, the algorithm's trainer, and on resume
    every state from checkpoint ``ckpt``."""
    from codealign.train.models import ValueModel, load_pretrained, make_reference, prepare_policy
    from codealign.train.value_norm import RunningMoments

    start_dir = out / "start_policy"  # the policy of round 0 (after SFT); every resume rebuilds from it
    if ckpt is not None:
        policy, tokenizer = load_pretrained(str(start_dir), cfg.model.dtype)
    else:
        # the main process first: it builds and caches the tiny preset and its warm start, the others then
        # load them (transformers writes a model's files on rank 0 only once torch.distributed is up, so
        # concurrent builds left broken cache entries)
        with acc.main_process_first():
            policy, tokenizer = initial_policy(cfg, train_problems, log=say, device=acc.device)
        if acc.is_main_process:
            policy.save_pretrained(start_dir)
            tokenizer.save_pretrained(start_dir)
    policy.to(acc.device)
    from codealign.train.advantages import ESTIMATORS
    from codealign.train.config import PPO_FAMILY

    critic = None
    if cfg.algo in PPO_FAMILY and ESTIMATORS[cfg.algo].needs_critic:
        # built from the base network before LoRA wraps it; checkpointed like the policy
        value_norm = RunningMoments(beta=cfg.ppo.value_norm_beta) if cfg.ppo.value_norm else None
        critic = ValueModel(policy, gradient_checkpointing=cfg.model.gradient_checkpointing, value_norm=value_norm)
    policy = prepare_policy(policy, cfg.model)
    ref = make_reference(policy)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if cfg.algo in PPO_FAMILY:
        from codealign.train.ppo import PPO

        trainer = PPO(policy, critic, ref, cfg.ppo, pad_id, acc, algo=cfg.algo,
                      max_new_tokens=cfg.sampling.max_new_tokens, sharding=cfg.model.sharding)
    else:
        from codealign.train.dpo import DPO

        trainer = DPO(policy, ref, cfg.dpo, pad_id, tokenizer, acc, seed=cfg.seed, sharding=cfg.model.sharding)
    if ckpt is not None:
        trainer.load_state_dict(read_checkpoint(ckpt) if acc.is_main_process else {})
    return trainer, tokenizer


MODEL_FILES = ("policy", "ref", "critic")  # one file each in a checkpoint; the optimizer states go to optim.pt


def read_checkpoint(ckpt: Path) -> dict:
    """The trainer state saved in ``ckpt`` (see :func:`save_checkpoint`), on CPU."""
    import torch

    state = {name: torch.load(ckpt / f"{name}.pt", map_location="cpu") for name in MODEL_FILES if (ckpt / f"{name}.pt").exists()}
    state.update(torch.load(ckpt / "optim.pt", map_location="cpu"))
    return state


def save_checkpoint(run: Run, round_index: int) -> None:
    """``out/checkpoints/round_NNNN``: written to a temporary directory and renamed into place, so a
    directory with ``state.json`` is always complete; older rounds beyond ``keep_checkpoints`` go."""
    import torch

    acc, cfg, trainer = run.acc, run.cfg, run.trainer
    acc.wait_for_everyone()
    state = trainer.state_dict()  # every process takes part (sharded models are gathered); fp32, on the main one
    if run.main:
        root = run.out / CHECKPOINTS
        final, tmp = root / f"round_{round_index:04d}", root / f".tmp_round_{round_index:04d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in MODEL_FILES:
            if name in state:
                torch.save(state.pop(name), tmp / f"{name}.pt")
        torch.save(state, tmp / "optim.pt")
        # state.json last: its presence marks the directory complete
        (tmp / "state.json").write_text(json.dumps({
            "round": round_index, "step": run.step, "metrics_bytes": run.log.tell(),
            "elapsed_s": time.perf_counter() - run.t_start,
        }))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob("round_*"))[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def evaluate_round(run: Run, round_index: int, extra: dict) -> dict:
    """Evaluate the current policy on the test and validation problems, write the round row, print a
    line. ``eval_pass@k`` (the key external tools read) is the test split's ``test_pass@k``."""
    policy = run.acc.unwrap_model(run.trainer.policy)
    row = {"type": "round", "round": round_index, "algo": run.cfg.algo}
    run.sampler.sync(policy)
    for prefix, field_name, seed_offset in EVAL_SPLITS:
        problems = getattr(run.tasks, field_name)
        if problems:
            row.update(evaluate(policy, problems, run.collector, run.cfg, run.acc, prefix, seed_offset))
    row.update({"eval_" + k[len("test_"):]: v for k, v in list(row.items()) if k.startswith("test_") and "_se" not in k})
    row.update(extra)
    row["elapsed_s"] = time.perf_counter() - run.t_start
    run.log.write(row)
    shown = [f"test pass@1 {row['test_pass@1']:.3f} ± {row['test_pass@1_se']:.3f}"]
    if "val_pass@1" in row:
        shown.append(f"val pass@1 {row['val_pass@1']:.3f} ± {row['val_pass@1_se']:.3f}")
    shown += [f"{k} {v:.3f}" for k, v in extra.items() if isinstance(v, float)]
    run.say(f"round {round_index}: " + "  ".join(shown))
    run.last = row
    return row


def train_round(run: Run, round_index: int) -> None:
    """``steps_per_round`` x (draw problems -> sample -> judge -> reward -> update), then evaluate and
    checkpoint."""
    import torch
    from tqdm.auto import tqdm

    cfg, acc, trainer, collector = run.cfg, run.acc, run.trainer, run.collector
    from codealign.train.config import PPO_FAMILY

    prompts_per_step = cfg.ppo.prompts_per_step if cfg.algo in PPO_FAMILY else cfg.dpo.prompts_per_step
    base_params = collector.params
    t_round = time.perf_counter()
    step_rows = []
    bar = tqdm(range(cfg.steps_per_round), desc=f"round {round_index}/{cfg.rounds}", disable=not (run.main and cfg.log.progress))
    for _ in bar:
        run.step += 1
        step = run.step
        # all randomness of a step is a function of (seed, step): a resumed round replays it exactly
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        problems = draw_problems(run.tasks.train, prompts_per_step, step, cfg.seed, acc.process_index, acc.num_processes)
        collector.params = base_params.model_copy(update={"seed": cfg.seed * 1_000_003 + step * 101 + acc.process_index})
        before = (collector.timings.gen_s, collector.timings.judge_s)
        if cfg.algo in PPO_FAMILY:
            run.sampler.sync(trainer.unwrapped_policy)
            stats = trainer.step(problems, lambda ps: collector(ps, trainer.unwrapped_policy))
        else:
            run.sampler.sync(trainer.sampling_model())
            stats = trainer.step(problems, collector, step)
        stats["gen_s"] = collector.timings.gen_s - before[0]  # rollout_s = gen_s + judge_s (+ pairing)
        stats["judge_s"] = collector.timings.judge_s - before[1]
        row = {"type": "step", "step": step, "train_round": round_index, "algo": cfg.algo, **stats}
        step_rows.append(row)
        run.log.write(row)
        bar.set_postfix(reward=f"{stats['reward_mean']:.2f}", pass_rate=f"{stats['pass_rate']:.2f}")
    collector.params = base_params
    if cfg.algo == "dpo":
        trainer.end_round()
    mean = lambda k: sum(r.get(k, 0.0) for r in step_rows) / max(len(step_rows), 1)  # noqa: E731
    evaluate_round(run, round_index, {
        "reward_mean": mean("reward_mean"),
        "train_pass_rate": mean("pass_rate"),
        "steps": float(len(step_rows)),
        "round_s": time.perf_counter() - t_round,
    })
    save_checkpoint(run, round_index)


def finish(run: Run) -> None:
    """Save the final policy (LoRA merged, fp32) to ``out/policy``, plot, close the log and the judge."""
    from codealign.train.sharding import iter_full_tensors

    policy = run.acc.unwrap_model(run.trainer.policy)
    weights = {}
    for name, t in iter_full_tensors(policy):  # every process takes part (a sharded policy is gathered)
        if run.main:
            weights[name] = t.cpu()
    if run.main:
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        # Servers that follow the generation config (`transformers serve`) sample only when it says so;
        # codealign's own samplers always set do_sample themselves.
        base.generation_config.do_sample = True
        base.save_pretrained(run.out / "policy", state_dict=weights)
        run.tokenizer.save_pretrained(run.out / "policy")
        if run.cfg.log.plot:
            plot_curves(run.out)
    run.log.close()
    run.judge.close()
    run.acc.wait_for_everyone()
