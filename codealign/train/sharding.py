"""Where the models live when a run has several processes, and the operations that need whole tensors.

Two layouts (``model.sharding``):

* ``none``: every process holds whole models. Trained models go through ``accelerate`` (DDP across
  processes, bf16 autocast when ``mixed_precision="bf16"``), frozen ones (the reference) get the same
  autocast and device placement without DDP.
* ``fsdp``: policy, critic and reference are sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``
  per transformer layer, then the root), with :func:`codealign.train.precision.fsdp_policy`. The
  trainers create their optimizers after sharding, on the fp32 shards. Policy and reference are
  sharded alike, so the EMA update and DPO-Iter's copy run shard by shard with no communication.
  Gradients are reduce-scattered after every micro-batch (no ``no_sync``: holding unsharded gradients
  for a whole mini-batch would undo the memory saving) and averaged over processes like DDP's.

Whole tensors are needed in three places, each a collective every process must enter in the same order:
checkpoints (:func:`full_state_dict`, gathered to the main process; :func:`load_full_state_dict`
broadcasts from it), the vLLM weight push (:func:`iter_full_tensors`: HF names, LoRA merged, one tensor
at a time) and hf sampling (:func:`gathered`: the policy unsharded for the whole ``generate`` call, so
processes with different prompts never wait on each other).

accelerate's own FSDP and DeepSpeed plugins are refused (:func:`check_launch`): accelerate's FSDP2 path
takes one model per ``prepare`` and none without an optimizer (the reference), and DeepSpeed asserts
when policy and critic are prepared together. Torch only (no pydantic), like the trainers.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from codealign.train.precision import fsdp_policy

SHARDINGS = ("none", "fsdp")


def check_launch(acc, sharding: str) -> None:
    """Refuse launches this module does not handle, with what to do instead."""
    kind = str(getattr(acc, "distributed_type", "")).upper()
    if "DEEPSPEED" in kind:
        raise RuntimeError(
            "DeepSpeed is not supported: its engine asserts when the policy and the critic are prepared together. "
            "Use a plain multi-process launch with --set model.sharding=fsdp (FSDP2 shards policy, critic and reference)."
        )
    if "FSDP" in kind:
        raise RuntimeError(
            "an accelerate FSDP config was given: codealign shards the models itself. Launch without the FSDP plugin "
            "(accelerate launch --multi_gpu --num_processes N ...) and set model.sharding=fsdp."
        )
    if sharding not in SHARDINGS:
        raise ValueError(f"model.sharding {sharding!r}: use one of {SHARDINGS}")
    if sharding == "fsdp" and acc.num_processes < 2:
        raise ValueError("model.sharding=fsdp needs at least 2 processes (accelerate launch --num_processes N); one process holds whole models")


def prepare_models(acc, trained: Sequence[nn.Module | None], frozen: Sequence[nn.Module | None], sharding: str = "none"):
    """Place ``trained`` (policy, critic) and ``frozen`` (reference) models; returns (trained, frozen) in
    order (``None`` stays ``None``). Create the optimizers afterwards, on the returned models' parameters."""
    check_launch(acc, sharding)
    if sharding == "none":
        return (
            [None if m is None else acc.prepare_model(m) for m in trained],
            [None if m is None else acc.prepare_model(m, evaluation_mode=True) for m in frozen],
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
    policy = fsdp_policy(str(acc.mixed_precision))
    for model in [*trained, *frozen]:
        if model is None:
            continue
        model.to(acc.device)
        for layer in _layers(model):
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        # the root reshards after forward too (FSDP2 keeps it whole by default): a frozen model's no-grad
        # forward is never followed by a backward that would reshard it, and the EMA works on shards
        fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    return list(trained), list(frozen)


def _layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model`` (HF models name their class in ``_no_split_modules``)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"found no transformer layers to shard in {type(model).__name__} (no _no_split_modules)")
    return layers


def unwrap(model: nn.Module) -> nn.Module:
    """The model under a DDP wrapper (FSDP2 shards in place and needs none)."""
    return getattr(model, "module", model)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in unwrap(model).modules())


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def clip_grad_norm(acc, params, max_norm: float) -> float:
    """Clip the gradient norm over every process's shard; the total norm before clipping."""
    return float(_full(acc.clip_grad_norm_(params, max_norm)))


# -- checkpoints -------------------------------------------------------------------------------------

_FULL = dict(full_state_dict=True, cpu_offload=True)


def full_state_dict(model: nn.Module) -> dict:
    """Whole tensors on CPU, keyed like the unwrapped model; on the main process (others may get ``{}``
    when sharded). Collective. The tensors of an unsharded CPU model are the model's own: save or copy
    them before the next update."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(unwrap(model), options=StateDictOptions(**_FULL))  # names without DDP's 'module.'


def load_full_state_dict(model: nn.Module, state: dict, world: int) -> None:
    """Load a :func:`full_state_dict`; with several processes only the main one needs ``state`` (it is
    broadcast and sharded). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(unwrap(model), _containers(state), options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=world > 1))


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimizer's state keyed by parameter names, whole tensors on the main process; ``{}`` before
    its first step. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    if not opt.state:  # (torch's API would first run a zero-lr step, which counts in AdamW's bias correction)
        return {}
    return get_optimizer_state_dict(unwrap(model), opt, options=StateDictOptions(**_FULL))


def load_full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict, world: int) -> None:
    """Load a :func:`full_optimizer_state` (only the main process needs it); an empty one leaves the
    optimizer fresh. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if world == 1 and state and all(isinstance(k, int) for k in state.get("state", {})):
        opt.load_state_dict(state)  # a checkpoint from before optimizer states were keyed by name
        return
    saved = [bool(state)]
    if world > 1:
        torch.distributed.broadcast_object_list(saved, src=0)
    if saved[0]:
        set_optimizer_state_dict(unwrap(model), opt, _containers(state),
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=world > 1))


def _containers(state):
    """A copy of the dicts and lists of ``state`` (tensors shared): loading with a broadcast replaces the
    values of the dict it is given."""
    if isinstance(state, dict):
        return {k: _containers(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_containers(v) for v in state]
    return state


# -- whole tensors for sampling ------------------------------------------------------------------------


def iter_full_tensors(model: nn.Module, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every weight of ``model`` as a plain HF checkpoint holds it: whole (gathered
    one at a time when sharded), LoRA adapters merged into their base weights (W + B A * scaling, without
    touching the model), names without DDP / peft prefixes, cast to ``dtype`` if given.

    Collective when sharded: every process must consume the whole iterator."""
    model = unwrap(model)
    lora = _lora_scalings(model)
    cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
    held: dict[str, dict[str, torch.Tensor]] = {}  # a LoRA layer's base weight, A and B until all three came
    for key, value in model.state_dict().items():
        value = _full(value.detach())
        owner = next((p for p in lora if key.startswith(p + ".")), None)
        part = key[len(owner) + 1 :] if owner else ""
        if owner and (part == "base_layer.weight" or part.startswith(("lora_A.", "lora_B.")) and part.endswith(".weight")):
            parts = held.setdefault(owner, {})
            parts[part.split(".")[0]] = value
            if len(parts) == 3:
                del held[owner]
                delta = (parts["lora_B"].float() @ parts["lora_A"].float()) * lora[owner]
                yield _hf_name(owner + ".weight"), cast(parts["base_layer"] + delta.to(parts["base_layer"].dtype))
        else:  # any other weight, a LoRA layer's bias included
            yield _hf_name(key), cast(value)
    if held:
        raise RuntimeError(f"LoRA layers without all of base/A/B weights in the state dict: {sorted(held)[:3]}")


def _lora_scalings(model: nn.Module) -> dict[str, float]:
    """State-dict prefix -> scaling of every LoRA linear layer of a peft model ({} otherwise)."""
    out = {}
    for name, m in model.named_modules():
        scaling = getattr(m, "scaling", None)
        if isinstance(scaling, dict) and hasattr(m, "lora_A") and hasattr(m, "base_layer"):
            adapters = list(m.lora_A.keys())
            if len(adapters) != 1 or getattr(m, "fan_in_fan_out", False) or any(getattr(m, "use_dora", {}).values()):
                raise NotImplementedError(f"{name}: only one plain LoRA adapter on a linear layer can be merged for sampling")
            if not isinstance(m.base_layer, nn.Linear):
                raise NotImplementedError(f"{name}: LoRA on {type(m.base_layer).__name__} cannot be merged for sampling")
            out[name] = float(scaling[adapters[0]])
    return out


def _hf_name(key: str) -> str:
    return key.removeprefix("base_model.model.").replace(".base_layer.", ".")


@contextlib.contextmanager
def gathered(model: nn.Module):
    """``model`` whole for the duration (hf ``generate``): a sharded model is unsharded once and kept so
    until the end, so no forward inside waits on other processes. No-op for an unsharded model.
    Collective on entry and exit."""
    from torch.distributed.fsdp import FSDPModule

    groups = [m for m in unwrap(model).modules() if isinstance(m, FSDPModule)]
    if not groups:
        yield model
        return
    for m in groups:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m in groups:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)
