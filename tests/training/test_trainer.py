"""RexBertTrainer: one optimizer step over a variable number of micro-batches, loss normalised per step."""

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
from training.batch_plan import plan_batches
from training.collator import MICRO_BATCHES_KEY, STATS_KEY, PackedMLMCollator, StepCollator
from training.masking import MaskingConfig, SpanMasker
from training.recipe import PhaseConfig
from training.trainer import RexBertTrainer


def _items(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "row_id": r,
            "input_ids": [1, *rng.integers(4, 97, n - 2).tolist(), 2],
            "doc_lengths": [n],
            "spans": [],
        }
        for r, n in enumerate(lengths)
    ]


@pytest.fixture
def trainer(tmp_path):
    torch.manual_seed(0)
    config = RexBertConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=256, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2, mask_token_id=3,
    )  # fmt: skip
    phase = PhaseConfig(batch_size=4, micro_batch_size=2, max_seq_len=64)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1)
    plan = plan_batches(np.full(8, 40), phase, world_size=1)
    return RexBertTrainer(model=RexBertForMaskedLM(config), args=args, phase=phase, batch_plan=plan)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_step_loss_is_normalised_over_all_labelled_tokens_of_the_step(trainer):
    """Two micro-batches with very different labelled counts: the accumulated gradient equals that of the
    mean CE over every labelled token of the step (not the mean of per-micro-batch means)."""
    masker = SpanMasker(MaskingConfig(mlm_probability=0.3), 3, [0, 1, 2, 3], 97)
    collate = PackedMLMCollator(masker, seed=0)
    items = _items([60, 50, 6, 8])  # micro-batch 1 has ~10x the labels of micro-batch 2
    step = StepCollator(collate, micro_batch_size=2)(items)
    counts = [mb[STATS_KEY]["labelled"] for mb in step[MICRO_BATCHES_KEY]]
    assert counts[0] > 4 * counts[1]
    model = trainer.model
    model.zero_grad()
    loss = trainer.training_step(model, step)
    accumulated = _grads(model)
    # reference: the whole step as one flattened micro-batch (documents are independent)
    model.zero_grad()
    whole = collate(items)
    whole.pop(STATS_KEY)
    reference = model(**whole).loss  # mean over all labelled tokens of the step
    reference.backward()
    expected = _grads(model)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert {k: trainer.totals[k] for k in ("rows", "row_id_sum", "steps")} == {
        "rows": 4,
        "row_id_sum": 6,
        "steps": 1,
    }


def test_gradient_accumulation_must_be_left_to_the_plan(tmp_path, trainer):
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_accumulation_steps=2
    )
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1"):
        RexBertTrainer(model=trainer.model, args=args, phase=trainer.phase, batch_plan=trainer.batch_plan)
