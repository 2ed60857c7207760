"""Mixed precision done one way: fp32 master weights, bf16 compute.

Why not bf16 weights: AdamW on bf16 parameters loses every update smaller than half a bf16 step of the
weight (8 mantissa bits, ~0.4% relative). Measured on N(0, 0.02) weights (``tests/train/test_precision.py``
reproduces it): AdamW at lr 1e-5 changed 16% of the elements in 10 steps, at lr 1e-6 2%; an EMA with
eta 1e-3 accumulated in bf16 moved ~0.1% of what the exact EMA moves, so PPO's factor 3 was off.

So every trained weight (policy, critic), its gradient and AdamW's moments stay fp32, and so does the
EMA reference (an fp32 copy of the policy, moved in fp32 and cast for its forward pass). Only the forward
and backward compute runs in bf16: ``torch.autocast`` (accelerate's ``mixed_precision="bf16"``) for
whole models, FSDP2's ``MixedPrecisionPolicy`` (bf16 all-gathers and compute, fp32 gradient reduction)
for sharded ones. Checkpoints hold the fp32 tensors, so a resume continues bit for bit.

Torch only (no pydantic), like the trainers.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("no", "bf16")


def compute_dtype(mode: str) -> torch.dtype:
    """The dtype forward/backward passes run in: bf16 for ``"bf16"``, fp32 for ``"no"``."""
    if mode not in MODES:
        raise ValueError(f"mixed precision {mode!r} is not supported: use one of {MODES} (fp16 needs loss scaling; bf16 does not)")
    return torch.bfloat16 if mode == "bf16" else torch.float32


def check_master_weights(model: nn.Module, what: str) -> None:
    """Refuse a model whose *trainable* parameters are not fp32 (they would silently drop small updates).

    Frozen parameters may be any dtype (e.g. a bf16 base under fp32 LoRA adapters)."""
    bad = [(name, p.dtype) for name, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if bad:
        name, dtype = bad[0]
        raise ValueError(
            f"{what}: {len(bad)} trainable parameters are {dtype} (e.g. {name}). AdamW on {dtype} weights drops "
            f"updates below the dtype's resolution (at lr 1e-6 only ~2% of bf16 weights change). Load the model in "
            f"float32 (model.dtype=float32) and set model.mixed_precision=bf16 for bf16 compute with fp32 master weights."
        )


def fsdp_policy(mode: str):
    """FSDP2's policy for ``mode``: bf16 parameters in forward/backward, fp32 gradient reduction (the
    sharded fp32 parameters stay the master copy the optimizer updates)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute_dtype(mode) == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
