"""One optimizer step of RexBertTrainer on a fixed global batch, in one process or as one rank of a
torch.distributed (gloo) group: its logged loss and the gradient the optimizer would apply."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ROWS = [60, 50, 6, 8, 30, 12, 44, 20]  # one step of 8 rows, very different labelled counts per micro-batch


def packed_items(lengths, seed=0):
    """One packed document per row, ``row_id`` = its index: the rows a step of these tests trains."""
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


def one_step(world_size: int, output_dir: str) -> dict:
    """Train one step of ``ROWS`` split over ``world_size`` processes; returns the Trainer's logged loss and
    every parameter's gradient before the optimizer step (after DDP's all-reduce, no clipping)."""
    from transformers import TrainerCallback, TrainingArguments

    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
    from training.batch_plan import plan_batches
    from training.collator import PackedMLMCollator, StepCollator
    from training.masking import MaskingConfig, SpanMasker
    from training.recipe import PhaseConfig
    from training.trainer import RexBertTrainer

    torch.manual_seed(0)
    config = RexBertConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=256, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2, mask_token_id=3,
    )  # fmt: skip
    phase = PhaseConfig(batch_size=len(ROWS), micro_batch_size=2, max_seq_len=64, batch_warmup_tokens=0)
    args = TrainingArguments(
        output_dir=output_dir, use_cpu=True, report_to=[], max_steps=1, logging_steps=1, save_strategy="no",
        max_grad_norm=0.0, disable_tqdm=True,
    )  # fmt: skip
    masker = SpanMasker(MaskingConfig(mlm_probability=0.3), 3, [0, 1, 2, 3], 97)
    grads: dict[str, torch.Tensor] = {}

    class KeepGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads.update(
                {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            )

    trainer = RexBertTrainer(
        model=RexBertForMaskedLM(config),
        args=args,
        data_collator=StepCollator(PackedMLMCollator(masker, seed=0), phase.micro_batch_size),
        train_dataset=packed_items(ROWS),
        phase=phase,
        batch_plan=plan_batches(np.array(ROWS), phase, world_size),
        callbacks=[KeepGradients()],
    )
    assert trainer.accelerator.num_processes == world_size
    trainer.train()
    loss = next(e["loss"] for e in trainer.state.log_history if "loss" in e)
    return {"loss": loss, "grads": grads, "rank": trainer.accelerator.process_index}


def rank_main(rank: int, world_size: int, port: int, output_dir: str) -> None:
    """Entry point of a spawned rank: torch.distributed's environment, one step, rank 0 saves the result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    result = one_step(world_size, output_dir)
    if rank == 0:
        torch.save(result, Path(output_dir) / "rank0.pt")
