"""New tokens per second of transformers ``generate``, with and without the static KV cache + torch.compile.

This is what the ``hf`` sampler (``codealign/samplers/hf.py``) runs: left-padded batches, sampling at
temperature 1, ``cache_implementation="static"`` when its ``static_cache`` option is on (transformers
then compiles the forward pass on a GPU). Only torch and transformers are imported, so the script runs
on any machine with them. The model is built from a config with random weights (no download); every
sequence generates exactly ``--new-tokens`` tokens (EOS disabled) so the modes do the same work.

    python benchmarks/sampler_throughput.py                       # tiny model on CPU
    python benchmarks/sampler_throughput.py --device cuda         # ~0.5B Qwen2-shaped model, bf16

On an H100/H200 the GPU run takes about 3-5 minutes (the first static-cache call per batch size compiles).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    # Qwen2.5-0.5B's shape: 24 layers, hidden 896, 14 heads / 2 KV heads, vocab 151,936 (~494M parameters).
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024),
}


def build(shape: str, device: str) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def run(model, batch: int, prompt_len: int, new_tokens: int, static: bool, device: str) -> float:
    """Seconds for one generate call of ``batch`` sequences."""
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt_len), device=device)
    mask = torch.ones_like(ids)
    mask[: batch // 2, : prompt_len // 4] = 0  # half the rows left-padded, as in a real batch
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=0, eos_token_id=None)
    if static:
        kwargs["cache_implementation"] = "static"
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    assert out.shape[1] == prompt_len + new_tokens
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shape", default=None, choices=sorted(SHAPES), help="default: 0.5b on cuda, tiny on cpu")
    ap.add_argument("--batch-sizes", default=None, help="comma-separated (default: 64,256 on cuda, 16 on cpu)")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=None, help="default: 256 on cuda, 64 on cpu")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per setting after one warm-up call")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    shape = args.shape or ("0.5b" if cuda else "tiny")
    batches = [int(b) for b in (args.batch_sizes or ("64,256" if cuda else "16")).split(",")]
    new_tokens = args.new_tokens or (256 if cuda else 64)
    prompt_len = args.prompt_len if cuda else min(args.prompt_len, 64)
    model = build(shape, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{shape} Qwen2-shaped model, {n_params / 1e6:.1f}M parameters, on {name}; prompt {prompt_len} tokens, {new_tokens} new tokens per sequence")
    print(f"{'batch':>6} {'mode':<28} {'new tok/s':>10} {'s/call':>8}  (first call incl. compile: s)")
    for batch in batches:
        rates = {}
        for static in (False, True):
            mode = "static cache + compile" if static and cuda else ("static cache" if static else "dynamic cache (plain)")
            first = run(model, batch, prompt_len, new_tokens, static, args.device)  # warm-up / compile
            best = min(run(model, batch, prompt_len, new_tokens, static, args.device) for _ in range(args.repeats))
            rates[static] = batch * new_tokens / best
            print(f"{batch:>6} {mode:<28} {rates[static]:>10.0f} {best:>8.2f}  ({first:.1f})")
        print(f"{batch:>6} {'speed-up of static':<28} {rates[True] / rates[False]:>9.2f}x")


if __name__ == "__main__":
    main()
