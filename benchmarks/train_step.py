"""Seconds per PPO, GRPO (critic-free) and DPO step, tokens/s, the pass accounting of a PPO step, and where a round's time goes.

    python benchmarks/train_step.py                 # CPU: the tiny preset, plus one real round
    python benchmarks/train_step.py --device cuda   # GPU: a Qwen2.5-0.5B-shaped model, bf16 mixed precision

Update steps run the real ``codealign.train.ppo.PPO`` (with GAE and a critic, and as GRPO without one) /
``codealign.train.dpo.DPO`` classes (through a real ``accelerate.Accelerator``, bf16 mixed precision on fp32
master weights by default on CUDA) on synthetic rollouts (random response tokens, random 0/10 rewards) of a
fixed shape, so the figures measure the update alone. The same batch is also run through each model pass
alone, which gives the pass accounting:

* a PPO step = old log-probs (policy forward, no grad) + reference log-probs (forward) + values (critic
  forward) + policy forward and backward + critic forward and backward; in forward-equivalents per token
  (a backward costs ~2 forwards; ``c`` = a critic forward's cost relative to the policy's, measured: the
  critic has no LM head) that is ``2 + c + 3 + 3c``, plus ``1 + c`` recomputation with gradient
  checkpointing; plain training of the policy is ``3`` (``4``);
* "fraction of the plain forward+backward rate per model pass" = (PPO tokens/s x PPO forward-equivalents)
  / (plain tokens/s x plain forward-equivalents): 1.0 means the PPO step runs its passes as fast as plain
  training runs its own; what it loses goes to GAE, losses, gradient clipping, 4 optimizer steps and the EMA.

On CPU the script then runs one real PPO, GRPO and DPO round of the embedded default (sample with the hf
sampler -> judge in the local sandbox -> update) and prints the share of each phase. The ``--device cuda``
path imports only torch, transformers and accelerate (plus the torch-only trainer modules), since the GPU
machine has no pydantic: it times ``model.generate`` for the sampling share and reports no judging share
(judging runs on CPU, see the CPU figures).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codealign.train.advantages import ESTIMATORS  # noqa: E402  (torch-only modules)
from codealign.train.dpo import DPO, Pair  # noqa: E402
from codealign.train.models import ValueModel, logprobs, make_reference, pack  # noqa: E402
from codealign.train.ppo import PPO  # noqa: E402


PPO_CFG = dict(
    beta=0.1, kl_estimator="k1", gamma=1.0, lam=1.0, ratio_clip=0.2, value_clip=0.2, reward_clip=20.0, ppo_epochs=1,
    n_minibatches=4, max_grad_norm=1.0, actor_lr=1e-5, critic_lr=5e-6, weight_decay=0.0, advantage_normalization=True,
    ema_reference=True, ema_eta=0.001,
)
DPO_CFG = dict(beta=0.1, lr=1e-6, nll_weight=0.0, iterative=True, pairing="all", max_pairs_per_prompt=4, reference_as_chosen=False,
               epochs=1, max_grad_norm=1.0)


def fake_rollouts(n: int, prompt_len: int, resp_len: int, vocab: int, rng: random.Random):
    out = []
    for i in range(n):
        reward = 10.0 * (rng.random() < 0.3)
        out.append(SimpleNamespace(
            problem_id=f"p{i // 8}", prompt_ids=[rng.randrange(3, vocab) for _ in range(prompt_len)],
            response_ids=[rng.randrange(3, vocab) for _ in range(resp_len)], judged=True, reward=reward,
            passed=reward > 0, code="x",
        ))
    return out


def time_ppo(policy, acc, rollouts, micro: int, repeats: int, algo: str = "ppo") -> tuple[float, int, PPO]:
    cfg = SimpleNamespace(**{**PPO_CFG, **({"beta": 0.04, "kl_estimator": "k3"} if algo == "grpo" else {})}, micro_batch_size=micro)
    critic = ValueModel(policy) if ESTIMATORS[algo].needs_critic else None
    resp_len = max(len(r.response_ids) for r in rollouts)
    ppo = PPO(policy, critic, make_reference(policy), cfg, pad_id=0, accelerator=acc, algo=algo, max_new_tokens=resp_len)
    tokens = sum(len(r.response_ids) for r in rollouts)
    times = []
    for i in range(repeats + 1):
        sync(acc)
        t = clock(acc)
        ppo.step([None], lambda _: rollouts)
        sync(acc)
        if i:  # the first step warms up kernels and allocator
            times.append(clock(acc) - t)
    return sum(times) / len(times), tokens, ppo


def time_passes(ppo: PPO, acc, rollouts, micro: int, repeats: int) -> dict[str, float]:
    """Seconds for each model pass of a PPO step run alone over the same batch, in the same micro-batches."""
    batch = pack([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts], 0, acc.device)
    chunks = [batch.index(slice(i, i + micro)) for i in range(0, batch.input_ids.shape[0], micro)]

    def policy_fwd(b):
        with torch.no_grad():
            logprobs(ppo.policy, b)

    def critic_fwd(b):
        with torch.no_grad():
            ppo.critic(b.input_ids, b.attention_mask)

    def policy_fwd_bwd(b):
        lp, _ = logprobs(ppo.policy, b)
        (lp * b.mask).sum().backward()

    def critic_fwd_bwd(b):
        (ppo.critic(b.input_ids, b.attention_mask) * b.mask).sum().backward()

    out = {}
    for name, fn in (("policy_fwd", policy_fwd), ("critic_fwd", critic_fwd), ("policy_fwd_bwd", policy_fwd_bwd),
                     ("critic_fwd_bwd", critic_fwd_bwd)):
        times = []
        for i in range(repeats + 1):
            sync(acc)
            t = clock(acc)
            for b in chunks:
                fn(b)
            sync(acc)
            if i:
                times.append(clock(acc) - t)
        out[name] = sum(times) / len(times)
    ppo.actor_opt.zero_grad(set_to_none=True)
    ppo.critic_opt.zero_grad(set_to_none=True)
    return out


def pass_accounting(passes: dict[str, float], ppo_s: float, checkpointing: bool) -> None:
    """Print the forward-equivalents of a PPO step and the fraction of the plain fwd+bwd rate it reaches."""
    c = passes["critic_fwd"] / passes["policy_fwd"]
    recompute, plain = (1 + c, 4.0) if checkpointing else (0.0, 3.0)
    work = 2 + c + 3 + 3 * c + recompute
    alone = passes["policy_fwd"] * 2 + passes["critic_fwd"] + passes["policy_fwd_bwd"] + passes["critic_fwd_bwd"]
    print(f"pass accounting (forward-equivalents per token; backward = 2 forwards; critic forward c = {c:.2f} policy forwards, measured):")
    print(f"  old log-probs 1 + reference 1 + values c + policy fwd+bwd 3 + critic fwd+bwd 3c{' + recompute 1+c' if checkpointing else ''} "
          f"= {work:.2f}, vs {plain:.0f} for plain training of the policy")
    print(f"  passes alone: policy fwd {passes['policy_fwd']:.3f} s, critic fwd {passes['critic_fwd']:.3f} s, policy fwd+bwd "
          f"{passes['policy_fwd_bwd']:.3f} s, critic fwd+bwd {passes['critic_fwd_bwd']:.3f} s: {alone:.3f} s; the PPO step "
          f"{ppo_s:.3f} s ({100 * alone / ppo_s:.0f}% of its passes' standalone speed)")
    print(f"  fraction of the plain forward+backward rate per model pass: "
          f"{(work / plain) * passes['policy_fwd_bwd'] / ppo_s:.2f}")


def time_dpo(policy, acc, rollouts, micro: int, repeats: int) -> tuple[float, int, int]:
    n_pairs = len(rollouts) // 2
    cfg = SimpleNamespace(**DPO_CFG, batch_size=n_pairs // 4 or 1, micro_batch_size=micro, prompts_per_step=n_pairs)
    dpo = DPO(policy, make_reference(policy), cfg, 0, None, acc)
    pairs = [Pair(r.problem_id, r.prompt_ids, r.response_ids, s.response_ids) for r, s in zip(rollouts[::2], rollouts[1::2])]
    import codealign.train.dpo as dpo_module

    real_build = dpo_module.build_pairs
    dpo_module.build_pairs = lambda *a, **k: pairs  # fixed pairs: time the update, not the pairing
    try:
        times = []
        for i in range(repeats + 1):
            sync(acc)
            t = clock(acc)
            dpo.step([], lambda ps, m: rollouts, i)
            sync(acc)
            if i:
                times.append(clock(acc) - t)
    finally:
        dpo_module.build_pairs = real_build
    tokens = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return sum(times) / len(times), tokens, len(pairs)


def sync(acc):
    if acc.device.type == "cuda":
        torch.cuda.synchronize()


def clock(acc) -> float:
    """Wall seconds on a GPU; CPU seconds of this process on CPU (the shared CPU machine's wall time is
    mostly other people's load)."""
    return time.perf_counter() if acc.device.type == "cuda" else time.process_time()


def build_model(device: str):
    """(policy, vocab, prompt_len, resp_len, rollouts per step, micro, label)."""
    if device == "cuda":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        # Qwen2.5-0.5B's shape (~494M parameters), random weights: no downloads
        cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                          tie_word_embeddings=True, pad_token_id=0, eos_token_id=1)
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).to(device)
        label = f"Qwen2-shaped {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params (random init)"
        return model, cfg.vocab_size, 256, 256, 64, 8, label
    from codealign.synthetic_tasks import make_split
    from codealign.prompts import build_prompt
    from codealign.train.sft import format_response
    from codealign.train.tiny import load_tiny

    train = make_split().train
    corpus = [build_prompt(p) for p in train] + [format_response(p.solutions["python"][0]) for p in train]
    model, tok = load_tiny(corpus)
    label = f"tiny preset {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params"
    return model, len(tok), 100, 45, 64, 32, label


def real_round_shares(algo: str, mixed: str) -> None:
    """One real round of the embedded default (CPU) with ``algo``: seconds in sampling, judging, updating."""
    from codealign.train.config import TrainConfig
    from codealign.train import rounds

    cfg = TrainConfig(algo=algo, rounds=1, steps_per_round=4, out=str(Path("/tmp") / f"train_step_bench_{time.time_ns()}"))
    cfg.eval.n, cfg.eval.ks, cfg.log.progress, cfg.log.plot = 1, [1], False, False
    cfg.model.mixed_precision = mixed  # (one accelerator setting per process)
    t = time.perf_counter()
    rounds.train(cfg)
    total = time.perf_counter() - t
    steps = [r for r in rounds.read_metrics(cfg.out) if r.get("type") == "step"]
    sample = sum(r["rollout_s"] for r in steps)  # sampling + judging (the collector)
    judge = sum(r.get("judge_s", 0.0) for r in steps)
    update = sum(r["update_s"] for r in steps)
    step_total = sample + update
    print(f"real {algo.upper()} round ({len(steps)} steps, {int(steps[0]['n_rollouts'])} rollouts each): "
          f"sampling {100 * (sample - judge) / step_total:.0f}%  judging {100 * judge / step_total:.0f}%  "
          f"updating {100 * update / step_total:.0f}% of {step_total:.1f} s of steps "
          f"(whole run incl. warm start and 2 evaluations: {total:.0f} s)")


def main() -> None:
    import copy

    from accelerate import Accelerator

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--mixed-precision", default=None, choices=["no", "bf16"], help="default: bf16 on cuda, no on cpu")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CPU: torch threads (1 gives steadier CPU seconds on a busy machine)")
    ap.add_argument("--no-round", action="store_true", help="skip the real-round share measurement (CPU)")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    mixed = args.mixed_precision or ("bf16" if args.device == "cuda" else "no")
    base, vocab, plen, rlen, n, micro, label = build_model(args.device)
    if args.gradient_checkpointing:
        from codealign.train.models import enable_checkpointing

        enable_checkpointing(base)
    acc = Accelerator(cpu=args.device == "cpu", mixed_precision=mixed)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {args.device} ({where}; {'wall' if args.device == 'cuda' else 'CPU'} seconds); {label}; "
          f"mixed precision {mixed} (fp32 master weights)"
          f"{'; gradient checkpointing' if args.gradient_checkpointing else ''}")
    rng = random.Random(0)
    rollouts = fake_rollouts(n, plen, rlen, vocab, rng)

    # each trainer gets its own copy, taken before accelerate wraps anything
    ppo_s, tok, ppo = time_ppo(copy.deepcopy(base), acc, rollouts, micro, args.repeats)
    print(f"PPO step: {n} rollouts x ({plen} prompt + {rlen} response) tokens, 4 mini-batches, micro {micro}: "
          f"{ppo_s:.2f} s/step, {tok / ppo_s:,.0f} response tokens/s, {n * (plen + rlen) / ppo_s:,.0f} total tokens/s")
    passes = time_passes(ppo, acc, rollouts, micro, args.repeats)
    print(f"plain policy forward+backward of the same batch: {passes['policy_fwd_bwd']:.2f} s, "
          f"{n * (plen + rlen) / passes['policy_fwd_bwd']:,.0f} total tokens/s")
    pass_accounting(passes, ppo_s, args.gradient_checkpointing)
    del ppo
    s, _, grpo = time_ppo(copy.deepcopy(base), acc, rollouts, micro, args.repeats, algo="grpo")
    print(f"GRPO step (no critic, KL k3 in the loss): {s:.2f} s/step, {tok / s:,.0f} response tokens/s ({100 * (1 - s / ppo_s):.0f}% less than PPO)")
    del grpo
    s, tok, pairs = time_dpo(copy.deepcopy(base), acc, rollouts, micro // 2 or 1, args.repeats)
    print(f"DPO step: {pairs} pairs, 4 optimizer steps: {s:.2f} s/step, {tok / s:,.0f} response tokens/s")

    if args.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        # sampling share: plain generate of the same batch (the hf sampler's path), bf16 compute
        model = base.to("cuda")
        ids = torch.tensor([r.prompt_ids for r in rollouts], device="cuda")
        sync(acc)
        t = time.perf_counter()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=mixed == "bf16"):
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=rlen, min_new_tokens=rlen,
                           do_sample=True, pad_token_id=0)
        sync(acc)
        gen = time.perf_counter() - t
        print(f"generate: {n} x {rlen} new tokens in {gen:.2f} s ({n * rlen / gen:,.0f} tokens/s); "
              f"a PPO round of sample + update spends {100 * gen / (gen + ppo_s):.0f}% sampling (judging runs on CPU)")
    elif not args.no_round:
        for algo in ("ppo", "grpo", "dpo"):
            real_round_shares(algo, mixed)


if __name__ == "__main__":
    main()
