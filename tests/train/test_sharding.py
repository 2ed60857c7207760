"""Launches the sharding module refuses, and the whole-tensor view of a LoRA policy."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from codealign.train.sharding import check_launch, iter_full_tensors

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import tiny_lm  # noqa: E402


@pytest.mark.parametrize("kind,match", [("DistributedType.DEEPSPEED", "DeepSpeed is not supported"),
                                        ("DistributedType.FSDP", "codealign shards the models itself")])
def test_deepspeed_and_accelerates_fsdp_plugin_are_refused_with_what_to_do(kind, match):
    with pytest.raises(RuntimeError, match=match) as err:
        check_launch(SimpleNamespace(distributed_type=kind, num_processes=8), "none")
    assert "model.sharding=fsdp" in str(err.value)


def test_fsdp_needs_two_processes():
    with pytest.raises(ValueError, match="at least 2 processes"):
        check_launch(SimpleNamespace(distributed_type="DistributedType.NO", num_processes=1), "fsdp")
    check_launch(SimpleNamespace(distributed_type="DistributedType.MULTI_GPU", num_processes=2), "fsdp")


def test_a_lora_policy_reads_as_its_merged_hf_checkpoint_and_is_left_untouched():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_lm(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"], init_lora_weights=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tensors = dict(iter_full_tensors(model, dtype=torch.bfloat16))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # adapters not merged into the model
    merged = model.merge_and_unload().state_dict()
    assert set(tensors) == set(merged) and {t.dtype for t in tensors.values()} == {torch.bfloat16}
    for k, v in merged.items():
        assert torch.allclose(tensors[k].float(), v, atol=1e-2, rtol=1e-2), k
