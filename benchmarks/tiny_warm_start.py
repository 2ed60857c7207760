"""Where the ``tiny`` warm start leaves the policy: held-out and training pass@1 after SFT.

Builds the tiny model on the synthetic training tasks, runs the warm-start SFT for each requested
step count, samples ``--n`` completions per task at temperature 1.0 (plus one greedy) with the hf
sampler and judges them in the sandbox (local executor), exactly as ``codealign train`` does for
round 0. Prints one line per step count: pass@1 at T=1, greedy pass@1, how many tasks were solved by
at least one / by every sample, and the seconds spent in SFT, sampling and judging; then, per split,
how often each of the three parts of a task (filter, transform, aggregate: one sentence of the statement,
one piece of the program) is written right at T=1, which tells a model that cannot compose the parts
from one that has not learnt them yet.

    python benchmarks/tiny_warm_start.py --steps 200,300 --n 8
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time

#: The canonical program's second and third lines: b = [<transform> for x in a( if <filter>)?] / <aggregate>.
_BODY = re.compile(r"b = \[(?P<transform>.*) for x in a(?: if (?P<filter>.*))?\]\n(?P<aggregate>.*)")
PARTS = ("filter", "transform", "aggregate")


def parts(program: str) -> dict[str, str] | None:
    """The filter condition, transform expression and aggregate line of a program in the family's
    canonical shape (None when it has another shape)."""
    m = _BODY.search(program)
    return None if m is None else {"filter": m["filter"] or "", "transform": m["transform"], "aggregate": m["aggregate"].strip()}


def part_accuracy(pairs) -> dict[str, float]:
    """Over (problem, program) pairs: the fraction whose filter / transform / aggregate / all three
    equal the reference program's, and the fraction not in the canonical shape."""
    counts = dict.fromkeys((*PARTS, "all", "other_shape"), 0)
    for problem, program in pairs:
        want, got = parts(problem.solutions["python"][0]), parts(program or "")
        if got is None:
            counts["other_shape"] += 1
            continue
        right = {k: got[k] == want[k] for k in PARTS}
        for k, ok in right.items():
            counts[k] += ok
        counts["all"] += all(right.values())
    return {k: v / max(len(pairs), 1) for k, v in counts.items()}


def pass_rates(model, tokenizer, problems, n: int, temperature: float, client) -> tuple[list[float], float, float, dict[str, float]]:
    from codealign.judge import judge_many, outcome, program_from_completion
    from codealign.prompts import build_prompt
    from codealign.samplers import SamplingParams
    from codealign.samplers.hf import HFSampler

    t0 = time.perf_counter()
    sampler = HFSampler(model, tokenizer, batch_size=64)
    params = SamplingParams(max_new_tokens=64, temperature=temperature, seed=0)
    samples = sampler.sample([build_prompt(p) for p in problems], n, params)
    t1 = time.perf_counter()
    pairs = [(p, program_from_completion(p, c.text)) for p, row in zip(problems, samples) for c in row]
    results = judge_many(client, pairs, timeout_s=600)
    t2 = time.perf_counter()
    correct = [r is not None and outcome(p, r).correct for (p, _), r in zip(pairs, results)]
    per_task = [sum(correct[i * n : (i + 1) * n]) / n for i in range(len(problems))]
    return per_task, t1 - t0, t2 - t1, part_accuracy(pairs)


def main() -> None:
    from codealign.prompts import build_prompt
    from codealign.synthetic_tasks import make_split
    from codealign.train.sft import SFTConfig, warm_start_tiny
    from sandbox.client import make_client

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="200", help="comma-separated SFT step counts")
    ap.add_argument("--n", type=int, default=8, help="samples per task at temperature 1.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-tasks", type=int, default=96, help="training tasks to score as well")
    ap.add_argument("--cache-dir", default=None, help="tiny-model cache (default: a fresh temporary directory)")
    args = ap.parse_args()

    split = make_split(args.seed)
    train, heldout = split.train, split.validation  # a tuning tool: validation, never test
    cache = args.cache_dir or tempfile.mkdtemp(prefix="tiny-bench-")
    with make_client() as client:
        for steps in (int(s) for s in args.steps.split(",")):
            t = time.perf_counter()
            model, tok = warm_start_tiny(train, build_prompt, seed=args.seed, cache_dir=cache, sft=SFTConfig(steps=steps), log=lambda _: None)
            sft_s = time.perf_counter() - t
            held, gen_s, judge_s, held_parts = pass_rates(model, tok, heldout, args.n, 1.0, client)
            greedy, _, _, _ = pass_rates(model, tok, heldout, 1, 0.0, client)
            tr, _, _, train_parts = pass_rates(model, tok, train[: args.train_tasks], args.n, 1.0, client)
            print(
                f"sft_steps={steps} val_pass@1(T=1)={sum(held) / len(held):.3f} "
                f"val_greedy={sum(greedy) / len(greedy):.3f} train_pass@1(T=1)={sum(tr) / len(tr):.3f} "
                f"solved>=1={sum(x > 0 for x in held)}/{len(held)} solved_all={sum(x == 1 for x in held)} "
                f"sft_s={sft_s:.1f} gen_s={gen_s:.1f} judge_s={judge_s:.1f}",
                flush=True,
            )
            for name, acc in (("val", held_parts), ("train", train_parts)):
                print(f"  {name} parts right (T=1): " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()), flush=True)


if __name__ == "__main__":
    main()
