"""The models a run trains and compares against: policy, critic (value model), reference.

* policy: ``AutoModelForCausalLM`` from a HF name or local path, or the offline ``tiny`` preset
  (``codealign/train/tiny.py``), optionally wrapped with LoRA adapters (peft);
* critic: the same base network with a scalar head (zero-initialised, so it starts predicting 0);
* reference: a frozen copy of the policy, moved by :func:`ema_update` (PPO factor 3) or replaced by
  :func:`copy_weights` (DPO-Iter: the previous round's model).

Also the one place where sequences are packed and turned into per-token log-probs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

if TYPE_CHECKING:
    from codealign.train.config import LoraConfig, ModelConfig
from codealign.train.losses import entropy_from_logits, token_logprobs

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU; use --set device=cpu")
    return torch.device(name)


def load_pretrained(name_or_path: str, dtype: str = "float32"):
    """(model, tokenizer) from a HF hub name or a local directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=_DTYPES[dtype])
    return model, tokenizer


def add_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (only the adapters train)."""
    try:
        from peft import LoraConfig as PeftLoraConfig, get_peft_model
    except ImportError as exc:  # optional extra
        raise RuntimeError("model.lora.enabled needs peft: pip install 'codealign[lora]'") from exc
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, peft_cfg)


def prepare_policy(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Gradient checkpointing and LoRA as configured; dropout off (PPO's ratio must be 1 at the first
    epoch, so the forward pass that produced the old log-probs must be reproducible)."""
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora)
    model.eval()
    return model


class ValueModel(nn.Module):
    """Critic: a copy of the policy's base network with a scalar head on the last hidden state."""

    def __init__(self, causal_lm: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm).base_model
        self.backbone.requires_grad_(True)
        hidden = self.backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.head.to(next(self.backbone.parameters()).dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values (B, T-1) in the log-prob layout: position t values the state that emits token t+1."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1)[:, :-1].float()


def make_reference(policy: nn.Module) -> nn.Module:
    """A frozen copy of ``policy``: no gradient ever reaches it."""
    ref = copy.deepcopy(policy)
    ref.eval()
    ref.requires_grad_(False)
    return ref


@torch.no_grad()
def ema_update(ref: nn.Module, policy: nn.Module, eta: float) -> None:
    """PPO factor 3: ``ref = (1 - eta) * ref + eta * policy``, parameter by parameter (matched by name)."""
    pol = dict(policy.named_parameters())
    for name, p_ref in ref.named_parameters():
        p_ref.mul_(1.0 - eta).add_(pol[name].detach().to(p_ref.dtype), alpha=eta)


@torch.no_grad()
def copy_weights(dst: nn.Module, src: nn.Module) -> None:
    """``dst`` <- ``src`` (DPO-Iter: the reference becomes the previous round's policy)."""
    dst.load_state_dict(src.state_dict())


@dataclass
class PackedBatch:
    """Prompt + response sequences, right-padded. ``mask`` (B, T-1) marks response tokens in the
    log-prob layout (position t = token t+1)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T-1), float

    @property
    def labels(self) -> torch.Tensor:
        return self.input_ids[:, 1:]

    def index(self, idx: torch.Tensor | slice) -> "PackedBatch":
        return PackedBatch(self.input_ids[idx], self.attention_mask[idx], self.mask[idx])


def pack(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> PackedBatch:
    """Concatenate each prompt's and response's token ids, right-pad to the longest."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    T = max(lengths)
    input_ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    attention = torch.zeros((len(lengths), T), dtype=torch.long)
    mask = torch.zeros((len(lengths), T - 1), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        # response token j sits at position len(p)+j; its log-prob at len(p)+j-1
        mask[i, len(p) - 1 : len(seq) - 1] = 1.0
    return PackedBatch(input_ids.to(device), attention.to(device), mask.to(device))


def logprobs(model: nn.Module, batch: PackedBatch, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (B, T-1) of the batch's tokens under ``model`` (and entropies if asked)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    lp = token_logprobs(logits, batch.labels)
    ent = entropy_from_logits(logits) if with_entropy else None
    return lp, ent


def sequence_logprobs(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Sum of response-token log-probs per sequence (B,), what DPO compares."""
    lp, _ = logprobs(model, batch)
    return (lp * batch.mask).sum(-1)
