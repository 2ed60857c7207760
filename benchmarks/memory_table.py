"""What fits where: computed GPU memory of PPO and DPO for Qwen2.5(-Coder) 0.5B / 1.5B / 7B, full fine-tune
and LoRA, on one 80 GB GPU and on 8 (FSDP). Computed, not measured (no GPU has run it): the assumptions
are the constants below and in docs/train.md.

    python benchmarks/memory_table.py            # a markdown table

Per GPU, in GiB (2^30 bytes):

* trained weights (policy, critic) fp32 4 B + gradients fp32 4 B + AdamW's two moments fp32 8 B = 16 B per
  parameter; the EMA / DPO reference fp32 4 B; a LoRA policy's frozen base bf16 2 B, its adapters 16 B, and
  its reference copies both (a LoRA run still trains a full critic);
* bf16 compute: autocast keeps a bf16 copy of the weights of the model in its forward/backward (2 B per
  parameter, one model at a time); FSDP all-gathers bf16 layers instead (a few layers, counted as 2);
* activations per micro-batch of ``TOKENS`` tokens with gradient checkpointing: each layer's input (bf16),
  one layer's recomputed intermediates, and the logits path (bf16 logits, their fp32 log-softmax and its
  gradient: 14 B per token per vocabulary entry), the largest term;
* the colocated vLLM engine takes ``gpu_memory_utilization`` x 80 GB while it samples and sleeps (KV cache
  freed, weights offloaded) during the update, so the peak is states + max(vLLM, update working set);
* 2 GiB of CUDA context and allocator slack. Sharded (FSDP over 8): states / 8, activations and vLLM not.
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_GIB = 79.0  # an "80 GB" H100/A100 has ~79.6 GiB usable
TOKENS = 4096  # tokens per micro-batch (e.g. 2 rollouts of 1k prompt + 1k response)
CONTEXT_GIB = 2.0
LORA_R = 16  # all linear layers


@dataclass
class Shape:
    name: str
    vocab: int
    hidden: int
    layers: int
    inter: int
    heads: int
    kv_heads: int
    tied: bool
    vllm_share: float  # gpu_memory_utilization in the presets

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.inter
        attn = h * h + 2 * h * kv + h * h + h + 2 * kv  # q, k, v (+ biases), o
        return attn + 3 * h * i + 2 * h  # MLP, two norms

    def params(self) -> int:
        emb = self.vocab * self.hidden
        return emb + self.layers * self.layer_params() + self.hidden + (0 if self.tied else emb)

    def critic_params(self) -> int:
        return self.vocab * self.hidden + self.layers * self.layer_params() + self.hidden + self.hidden + 1

    def lora_params(self) -> int:
        h, kv, i, r = self.hidden, self.kv_dim, self.inter, LORA_R
        return self.layers * r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))

    def activations(self) -> float:
        t, h = TOKENS, self.hidden
        checkpoints = self.layers * t * h * 2
        one_layer = t * (6 * h + 2 * self.kv_dim + 3 * self.inter) * 2 * 2  # intermediates and their grads, bf16
        logits = t * self.vocab * 14
        return checkpoints + one_layer + logits


SHAPES = [
    Shape("0.5B", 151936, 896, 24, 4864, 14, 2, True, 0.15),
    Shape("1.5B", 151936, 1536, 28, 8960, 12, 2, True, 0.15),
    Shape("7B", 152064, 3584, 28, 18944, 28, 4, False, 0.3),
]

GIB = 2**30


def row(s: Shape, algo: str, lora: bool, gpus: int) -> tuple[float, float, float, float]:
    """(states, update working set, vLLM, peak) in GiB per GPU."""
    p, pc, pl = s.params(), s.critic_params(), s.lora_params()
    if lora:
        policy = 2 * p + 16 * pl
        ref = 2 * p + 4 * pl
    else:
        policy, ref = 16 * p, 4 * p
    critic = 16 * pc if algo == "PPO" else 0
    states = (policy + ref + critic) / gpus
    compute_copy = 2 * max(p, pc if algo == "PPO" else 0) if gpus == 1 else 2 * 2 * s.layer_params()
    update = s.activations() + compute_copy
    vllm = s.vllm_share * 80e9
    peak = states + max(vllm, update) + CONTEXT_GIB * GIB
    return states / GIB, update / GIB, vllm / GIB, peak / GIB


def main() -> None:
    print(f"| model (params) | run | states/GPU (1 GPU) | 1 x 80 GB | states/GPU (8, FSDP) | 8 x 80 GB (FSDP) |")
    print("|---|---|---|---|---|---|")
    for s in SHAPES:
        for algo in ("PPO", "DPO"):
            for lora in (False, True):
                one = row(s, algo, lora, 1)
                eight = row(s, algo, lora, 8)
                fit = lambda r: f"{'fits' if r[3] <= GPU_GIB else 'no'} (peak {r[3]:.0f})"  # noqa: E731
                print(f"| {s.name} ({s.params() / 1e9:.2f}B) | {algo} {'LoRA r16' if lora else 'full'} | {one[0]:.0f} | {fit(one)} | "
                      f"{eight[0]:.1f} | {fit(eight)} |")
    s = SHAPES[1]
    print(f"\nper GPU besides the states: update working set (micro-batch of {TOKENS} tokens, checkpointing) "
          + ", ".join(f"{x.name} {row(x, 'PPO', False, 1)[1]:.1f}" for x in SHAPES)
          + f" GiB; vLLM share " + ", ".join(f"{x.name} {x.vllm_share * 80e9 / GIB:.1f}" for x in SHAPES)
          + f" GiB; context {CONTEXT_GIB:.0f} GiB. Logits alone: {TOKENS * s.vocab * 14 / GIB:.1f} GiB at {TOKENS} tokens.")


if __name__ == "__main__":
    main()
