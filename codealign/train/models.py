"""The models a run trains and compares against: policy, critic (value model), reference.

* policy: ``AutoModelForCausalLM`` from a HF name or local path, or the offline ``tiny`` preset
  (``codealign/train/tiny.py``), optionally wrapped with LoRA adapters (peft);
* critic: the same base network with a scalar head (zero-initialised, so it starts predicting 0), in fp32;
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
from codealign.train.losses import logprobs_and_entropy, token_logprobs
from codealign.train.value_norm import RunningMoments

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


def disable_dropout(model: nn.Module) -> None:
    """Dropout off in the model's own settings (not through eval mode, which would also turn off
    gradient checkpointing): every ``nn.Dropout`` gets p = 0, and so do the dropout probabilities HF
    attention layers keep as plain floats and the config. PPO needs it: the forward pass that made the
    old log-probs must be reproducible, so the first epoch's ratio is exactly 1."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        for attr in ("attention_dropout", "dropout", "attn_dropout", "resid_dropout", "hidden_dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            for key, value in config.to_dict().items():
                if isinstance(value, float) and ("dropout" in key or "pdrop" in key):
                    setattr(config, key, 0.0)


def enable_checkpointing(model: nn.Module) -> None:
    """Gradient checkpointing: layer activations are recomputed in backward instead of kept. Active in
    training mode only (transformers' rule), which is why the trainers train in ``train()`` mode with
    dropout off. Non-reentrant checkpointing, so frozen inputs (LoRA, the critic's embeddings) and FSDP
    work without extra hooks."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name goes in v6
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_policy(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """The policy as it trains: dropout off, gradient checkpointing and LoRA as configured, train mode."""
    disable_dropout(model)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora)
    model.train()
    return model


class ValueModel(nn.Module):
    """Critic: a copy of the policy's base network with a scalar head on the last hidden state.

    Trained, so always fp32 (master weights; bf16 compute comes from mixed precision), dropout off,
    gradient checkpointing when asked. ``value_norm`` (PPO's ``value_norm`` option) is the running
    statistics of the returns the critic regresses; kept here so that it travels with the critic's
    state dict (checkpoints, broadcasts)."""

    def __init__(self, causal_lm: nn.Module, gradient_checkpointing: bool = False, value_norm: RunningMoments | None = None):
        super().__init__()
        base = causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm
        self.backbone = copy.deepcopy(base.base_model).float()
        self.backbone.requires_grad_(True)
        disable_dropout(self.backbone)
        if gradient_checkpointing:
            enable_checkpointing(self.backbone)
        self.head = nn.Linear(self.backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.value_norm = value_norm
        self.train()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values (B, T-1) in the log-prob layout: position t values the state that emits token t+1
        (normalised units when ``value_norm`` is on)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1)[:, :-1].float()


def make_reference(policy: nn.Module) -> nn.Module:
    """A frozen copy of ``policy``: no gradient ever reaches it."""
    ref = copy.deepcopy(policy)
    ref.eval()
    ref.requires_grad_(False)
    return ref


@torch.no_grad()
def ema_update(ref: nn.Module, policy: nn.Module, eta: float) -> None:
    """PPO factor 3: ``ref = (1 - eta) * ref + eta * policy``, parameter by parameter (matched by name),
    in the reference's dtype (fp32: see codealign/train/precision.py)."""
    pol = dict(policy.named_parameters())
    for name, p_ref in ref.named_parameters():
        if pol[name].requires_grad:  # a frozen weight (LoRA's base) equals the policy's already
            # ref + eta (policy - ref): the small increment is formed exactly and rounded once (at lr 1e-6 it
            # is a few fp32 steps of the weight; (1 - eta) ref + eta policy would round twice at full size)
            p_ref.lerp_(pol[name].detach().to(p_ref.dtype), eta)


@torch.no_grad()
def copy_weights(dst: nn.Module, src: nn.Module) -> None:
    """``dst`` <- ``src`` parameter by parameter, matched by name (DPO-Iter: the reference becomes the
    previous round's policy). Shard by shard when both are sharded alike (FSDP)."""
    src_params = dict(src.named_parameters())
    for name, p in dst.named_parameters():
        p.copy_(src_params[name].detach())


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
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits[:, :-1]
    if with_entropy:
        return logprobs_and_entropy(logits, batch.labels)
    return token_logprobs(logits, batch.labels), None


def sequence_logprobs(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Sum of response-token log-probs per sequence (B,), what DPO compares."""
    lp, _ = logprobs(model, batch)
    return (lp * batch.mask).sum(-1)
