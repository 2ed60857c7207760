"""Smoke run of the real-scale path: the real round loop, bf16 mixed precision, one PPO and one DPO round.

    python benchmarks/gpu_smoke.py                        # one GPU: a Qwen2.5-0.5B-shaped model, hf sampler (static cache)
    python benchmarks/gpu_smoke.py --sampler vllm         # the same with the colocated vLLM engine (needs vLLM)
    python benchmarks/gpu_smoke.py --device cpu --tiny    # the tiny model in bf16 on CPU (CI runs this)

Each algorithm runs ``codealign.train.rounds`` as ``codealign train`` does (set-up with the warm start on
the device, round-0 evaluation, checkpoint, one round of 2 steps on the embedded synthetic tasks, its
evaluation and checkpoint, the final policy saved), with fp32 master weights and bf16 compute. The GPU
model has Qwen2.5-0.5B's transformer (24 layers, width 896, MLP 4864, 14 query / 2 KV heads; random
weights built from a config, no hub) over the embedded tokenizer's vocabulary, so ~0.36B parameters.

Printed: peak memory, sampling and update tokens/s, the fraction of the policy's parameter elements the
round changed, the EMA reference's drift against eta x the policy's change, and seconds per phase. The
exit status is 1 when a sanity check fails (non-finite losses, a policy that did not move, an EMA that
does not follow eta x (policy - ref), weights or optimizer states not fp32, DPO-Iter's reference not the
policy after the round, a missing checkpoint or final policy).

Imports beyond torch/transformers/accelerate: pydantic, pyyaml, httpx, tqdm, matplotlib (the trainer's
config, the sandbox client, progress and plots); a bare GPU image needs them installed (docs/train.md).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ETA = 1e-3  # PPO's EMA rate (the presets')


def build_qwen2_dir(root: Path) -> Path:
    """Qwen2.5-0.5B's transformer with random weights and the embedded task tokenizer, saved like a hub model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from codealign.prompts import build_prompt
    from codealign.synthetic_tasks import make_tasks
    from codealign.train.sft import format_response
    from codealign.train.tiny import train_tokenizer

    train, _ = make_tasks()
    tok = train_tokenizer([build_prompt(p) for p in train] + [format_response(p.solutions["python"][0]) for p in train], 512)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    path = root / "qwen2-0.5b-shaped"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def config(algo: str, model: str, args, out: Path):
    from codealign.train.config import TrainConfig

    gpu = args.device == "cuda"
    prompts = 8 if gpu else 2
    return TrainConfig.model_validate({
        "algo": algo, "rounds": 1, "steps_per_round": 2, "out": str(out), "device": args.device, "seed": 0,
        "model": {"name_or_path": model, "mixed_precision": "bf16", "gradient_checkpointing": True},
        "sft": {"steps": args.sft_steps, "batch_size": 16},
        "tasks": {"max_eval_problems": 8 if gpu else 2},
        "sampling": {"sampler": args.sampler, "n_per_prompt": 8 if gpu else 4, "max_new_tokens": 256 if gpu else 32,
                     "batch_size": 64, "static_cache": gpu, "vllm": {"gpu_memory_utilization": 0.3}},
        "eval": {"n": 2, "ks": [1]},
        # random or barely warm-started weights rarely write a program: the penalty gives PPO a signal,
        # reference solutions give DPO pairs
        "reward": {"no_code_penalty": 1.0},
        "ppo": {"actor_lr": 1e-5, "critic_lr": 5e-6, "prompts_per_step": prompts, "n_minibatches": 2, "micro_batch_size": 8,
                "advantage_normalization": False, "value_norm": True, "ema_eta": ETA},
        "dpo": {"lr": 1e-6, "prompts_per_step": prompts, "reference_as_chosen": True, "nll_weight": 0.0, "batch_size": 8,
                "micro_batch_size": 4},
        "log": {"progress": False, "plot": False, "tensorboard": False},
    })


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run_round(algo: str, model: str, args, root: Path) -> dict:
    """One round of ``algo`` through the real loop; figures and sanity checks."""
    from codealign.train import rounds

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = rounds.start_run(config(algo, model, args, root / algo), resume=False)
    setup_s = time.perf_counter() - t0
    trainer, acc = run.trainer, run.acc
    policy = trainer.unwrapped_policy
    fig = {"setup_s": setup_s, "sync_s": 0.0, "ema_drift": 0.0, "ema_expected": 0.0}

    real_sync = run.sampler.sync

    def timed_sync(model_):
        t = time.perf_counter()
        real_sync(model_)
        fig["sync_s"] += time.perf_counter() - t

    run.sampler.sync = timed_sync
    real_step = trainer.step

    def watched_step(*a, **k):
        # the EMA's contract per update: ref_after - ref_before = eta x (policy_after - ref_before)
        ref_before = snapshot(trainer.ref) if algo == "ppo" else None
        stats = real_step(*a, **k)
        if ref_before is not None:
            with torch.no_grad():
                pol = dict(policy.named_parameters())
                for n, r in trainer.ref.named_parameters():
                    fig["ema_drift"] += float((r.double() - ref_before[n].double()).abs().sum())
                    fig["ema_expected"] += ETA * float((pol[n].double() - ref_before[n].double()).abs().sum())
        return stats

    trainer.step = watched_step
    t = time.perf_counter()
    rounds.evaluate_round(run, 0, {"reward_mean": None, "train_pass_rate": None})
    rounds.save_checkpoint(run, 0)
    fig["round0_s"] = time.perf_counter() - t
    start = snapshot(policy)
    t = time.perf_counter()
    rounds.train_round(run, 1)
    fig["round_s"] = time.perf_counter() - t
    params = dict(policy.named_parameters())
    fig["params"] = sum(p.numel() for p in params.values())
    fig["changed"] = sum(int((params[n].detach() != start[n]).sum()) for n in params) / fig["params"]
    fig["masters_fp32"] = all(p.dtype == torch.float32 for p in params.values()) and all(
        t.dtype == torch.float32 for opt in _optimizers(trainer) for s in opt.state.values() for t in s.values())
    if algo == "dpo":
        fig["ref_is_policy"] = all(torch.equal(r, params[n]) for n, r in trainer.ref.named_parameters())
    t = time.perf_counter()
    rounds.finish(run)
    fig["finish_s"] = time.perf_counter() - t
    fig["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows = rounds.read_metrics(root / algo)
    steps = [r for r in rows if r.get("type") == "step"]
    fig["steps"] = steps
    fig["round"] = [r for r in rows if r.get("type") == "round"][-1]
    fig["files_ok"] = (root / algo / rounds.CHECKPOINTS / "round_0001" / "state.json").exists() and (root / algo / "policy" / "config.json").exists()
    del run, trainer, policy, start, params
    if cuda:
        torch.cuda.empty_cache()
    return fig


def _optimizers(trainer):
    return [o for o in (getattr(trainer, k, None) for k in ("actor_opt", "critic_opt", "opt")) if o is not None]


def report(algo: str, fig: dict) -> list[str]:
    """Print ``algo``'s figures; return the failed checks."""
    steps, failed = fig["steps"], []
    gen = sum(r["gen_s"] for r in steps)
    judge = sum(r["judge_s"] for r in steps)
    update = sum(r["update_s"] for r in steps)
    sampled = sum(r["n_rollouts"] * r["response_len"] for r in steps)
    updated = sum(r["update_tokens_per_s"] * r["update_s"] for r in steps)
    losses = [r[k] for r in steps for k in ("policy_loss", "value_loss", "dpo_loss", "grad_norm") if k in r]
    print(f"{algo.upper()}: {fig['params'] / 1e6:.1f}M policy parameters, {len(steps)} steps")
    print(f"  peak memory {fig['peak_gib']:.2f} GiB; sampling {sampled / max(gen, 1e-9):,.0f} response tokens/s; "
          f"update {updated / max(update, 1e-9):,.0f} response tokens/s")
    print(f"  seconds: set-up (load, warm start, engine) {fig['setup_s']:.1f}, round 0 eval + checkpoint {fig['round0_s']:.1f}, "
          f"round 1 {fig['round_s']:.1f} (generate {gen:.1f}, judge {judge:.1f}, update {update:.1f}, "
          f"eval {fig['round'].get('eval_s', 0):.1f}, weight sync {fig['sync_s']:.1f}), final save {fig['finish_s']:.1f}")
    print(f"  policy elements changed by the round: {100 * fig['changed']:.1f}%")
    if not all(math.isfinite(x) for x in losses):
        failed.append(f"{algo}: non-finite loss or gradient norm {losses}")
    if not all(r["grad_norm"] > 0 for r in steps if r.get("n_pairs", 1) > 0):
        failed.append(f"{algo}: zero gradient")
    if fig["changed"] < 0.5:
        failed.append(f"{algo}: only {100 * fig['changed']:.1f}% of the policy's elements changed")
    if not fig["masters_fp32"]:
        failed.append(f"{algo}: weights or optimizer states are not fp32")
    if not fig["files_ok"]:
        failed.append(f"{algo}: checkpoint or final policy missing")
    if not 0.0 <= fig["round"]["eval_pass@1"] <= 1.0:
        failed.append(f"{algo}: held-out pass@1 {fig['round']['eval_pass@1']}")
    if algo == "ppo":
        ratio = fig["ema_drift"] / max(fig["ema_expected"], 1e-30)
        print(f"  EMA reference drift {fig['ema_drift']:.4g} vs eta x (policy - ref) {fig['ema_expected']:.4g}: ratio {ratio:.3f}")
        if not 0.8 <= ratio <= 1.25:
            failed.append(f"ppo: the EMA reference moved {ratio:.3f} x eta x (policy - ref)")
    else:
        pairs = sum(r["n_pairs"] for r in steps)
        print(f"  {pairs:.0f} pairs; DPO-Iter reference = policy after the round: {fig['ref_is_policy']}")
        if pairs == 0 or not fig["ref_is_policy"]:
            failed.append(f"dpo: {pairs:.0f} pairs, reference = policy: {fig['ref_is_policy']}")
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="the tiny preset instead of the 0.5B-shaped model")
    ap.add_argument("--sampler", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--sft-steps", type=int, default=None, help="warm-start steps (default: 5 tiny, 10 otherwise)")
    ap.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU visible: run with --device cpu --tiny, or on a machine with a GPU", file=sys.stderr)
        return 2
    if args.sft_steps is None:
        args.sft_steps = 5 if args.tiny else 10
    if args.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    root = Path(args.out or tempfile.mkdtemp(prefix="gpu_smoke_"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CODEALIGN_CACHE", str(root / "cache"))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"gpu_smoke: {where}, torch {torch.__version__}, sampler {args.sampler}, bf16 mixed precision, out {root}")
    model = "tiny" if args.tiny else str(build_qwen2_dir(root))
    failed = []
    for algo in ("ppo", "dpo"):
        failed += report(algo, run_round(algo, model, args, root))
    for f in failed:
        print(f"SANITY CHECK FAILED: {f}")
    print("all sanity checks passed" if not failed else f"{len(failed)} sanity checks failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
