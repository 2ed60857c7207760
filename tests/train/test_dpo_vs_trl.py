"""Our DPO loss against TRL's DPOTrainer on the same pairs, tokens and models.

TRL builds and tokenizes the batch its own way (prompt/completion split, EOS appended, padding);
we take its token ids and completion mask, compute the sequence log-probs with
``codealign.train.models.sequence_logprobs`` and the loss with ``codealign.train.losses.dpo_loss``,
and require the same number TRL's ``compute_loss`` gives. Real models: the ``tiny`` preset built
locally (tokenizer trained here), the policy perturbed so the log-ratios are not zero.
"""

import pytest
import torch

trl = pytest.importorskip("trl")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """TRL's Trainer configures accelerate's process-wide state; later tests must not inherit it."""
    from accelerate.state import AcceleratorState, PartialState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def _to_pairs(batch):
    """TRL's [chosen..., rejected...] batch -> (prompts, chosen, rejected) token lists."""
    ids, comp, att = batch["input_ids"], batch["completion_mask"], batch["attention_mask"]
    seqs = []
    for row, c, a in zip(ids.tolist(), comp.tolist(), att.tolist()):
        n = sum(a)
        start = c.index(1)
        seqs.append((row[:start], row[start:n]))
    half = len(seqs) // 2
    prompts = [p for p, _ in seqs[:half]]
    assert prompts == [p for p, _ in seqs[half:]]
    return prompts, [r for _, r in seqs[:half]], [r for _, r in seqs[half:]]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl(tmp_path, beta):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.train.losses import dpo_loss
    from codealign.train.models import pack, sequence_logprobs
    from codealign.train.tiny import build_tiny

    corpus = ["Read integers from a line. Print the sum.", "a = list(map(int, input().split()))\nprint(sum(a))\n"]
    path = build_tiny(corpus, seed=0, cache_dir=tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained(path)
    # float64 on both sides (and TRL's bf16 autocast off): what differs is the formula, not rounding
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = [
        {"prompt": "Read integers from a line. ", "chosen": "print(sum(a))", "rejected": "print(a)"},
        {"prompt": "Print the sum.\n", "chosen": "a = list(map(int, input().split()))", "rejected": "sum(a"},
        {"prompt": "Read", "chosen": "print(max(a))\n", "rejected": "a = input()\nprint(a)\n"},
    ]
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(rows), beta=beta, report_to=[], use_cpu=True, bf16=False
    )
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)

    prompts, chosen, rejected = _to_pairs(batch)
    assert len(prompts) == len(rows) and all(c[-1] == tok.eos_token_id for c in chosen)
    pad = tok.pad_token_id
    with torch.no_grad():
        pc = sequence_logprobs(policy, pack(prompts, chosen, pad))
        pr = sequence_logprobs(policy, pack(prompts, rejected, pad))
        rc = sequence_logprobs(ref, pack(prompts, chosen, pad))
        rr = sequence_logprobs(ref, pack(prompts, rejected, pad))
    ours, _ = dpo_loss(pc, pr, rc, rr, beta)
    assert (pc - rc).abs().max() > 1e-3  # the comparison is not between two zero log-ratios
    assert abs(float(ours.mean()) - 0.6931) > 1e-3
    # TRL's fused LM head returns float32 log-probs even for a float64 model: agreement to float32 precision
    assert float(ours.mean()) == pytest.approx(float(trl_loss.detach()), abs=2e-6)
