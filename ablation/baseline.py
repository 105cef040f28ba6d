"""The plain-MLM arm: what a user would run with transformers alone, on the same tokens.

Everything that trains is transformers' / torch's: ``ModernBertForMaskedLM`` (the architecture and size
of the RexBERT arms, converted with ``modeling_rexbert.conversion``), ``DataCollatorForLanguageModeling``
(i.i.d. 15%, 80/10/10), ``torch.optim.AdamW`` (``optim="adamw_torch"``), a linear warmup/decay schedule
and the stock ``Trainer``; no curriculum, no span masking, no Guided MLM, no StableAdamW. The *data* comes
from the study's own document sampler and packer (``training.curriculum.prepare_phase``, one phase with a
constant domain share equal to the RexBERT recipe's overall share) so that both arms read the same corpus
mixture and the same number of real tokens -- like ``run_mlm.py``'s ``group_texts``, rows hold several
documents. Tokens consumed are counted by the Trainer itself (``include_num_input_tokens_seen``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

from ablation.config import BaselineConfig
from ablation.variants import overall_domain_share
from training.masking import MaskingConfig
from training.recipe import MixtureConfig, Recipe


def baseline_recipe(
    recipe: Recipe, settings: BaselineConfig, seed: int, output_dir: str | os.PathLike
) -> Recipe:
    """One phase holding the whole budget at the recipe's overall domain share (its row shape: phase 1's)."""
    share = overall_domain_share(recipe) if settings.domain_share is None else settings.domain_share
    tokens = sum(recipe.phase(name).tokens for name in ("phase1", "phase2", "phase3"))
    recipe = copy.deepcopy(recipe)
    recipe.seed, recipe.data.seed, recipe.output_dir = seed, seed, str(output_dir)
    recipe.phase1.tokens = tokens
    recipe.phase1.mixture = MixtureConfig(domain_start=share, domain_end=share)
    recipe.phase1.masking = MaskingConfig(mlm_probability=settings.mlm_probability, span_lambda=0.0)
    return recipe


def build_trainer(recipe: Recipe, settings: BaselineConfig, out: Path):
    """The stock ``transformers.Trainer`` of the plain arm, its rows built (or reused) under ``out``."""
    import torch
    from datasets import Dataset
    from datasets.table import InMemoryTable
    from transformers import (
        DataCollatorForLanguageModeling,
        ModernBertForMaskedLM,
        Trainer,
        TrainingArguments,
    )

    from modeling_rexbert.conversion import rexbert_config_to_modernbert
    from training.curriculum import model_for_phase, prepare_phase
    from training.phase_data import process_state
    from training.tokenizer import load_tokenizer
    from training.trainer_settings import use_bf16

    phase = recipe.phase1
    tokenizer = load_tokenizer(recipe.tokenizer.name_or_path)
    rows, _ = prepare_phase(recipe, "phase1", tokenizer)  # prepared once, or built here
    dataset = Dataset(InMemoryTable(rows.table.select(["input_ids"])))  # memory-mapped rows, no copy
    # the RexBERT arms' exact model config (size, overrides, context, special ids), as a ModernBertConfig
    # (training.curriculum builds it; a public hook there would avoid the private import)
    config = rexbert_config_to_modernbert(model_for_phase(recipe, "phase1", tokenizer, out).config)
    config.sparse_prediction = True  # transformers' option: the head runs on masked tokens only (same math)
    torch.manual_seed(recipe.seed)
    model = ModernBertForMaskedLM(config)
    batch = phase.batch_size
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=len(dataset) // batch,  # whole batches of the budget's rows: one pass, no repeats
        per_device_train_batch_size=phase.micro_batch_size,
        gradient_accumulation_steps=batch // (phase.micro_batch_size * process_state().num_processes),
        learning_rate=settings.lr or phase.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_fraction,  # a float < 1 is a ratio of the steps
        lr_scheduler_type="linear",
        optim="adamw_torch",
        max_grad_norm=settings.max_grad_norm,
        logging_steps=phase.logging_steps,
        save_steps=phase.save_steps,
        save_total_limit=1,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=use_bf16(recipe.trainer),
        use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding",
        dataloader_drop_last=True,
        report_to=[],
        disable_tqdm=False,
    )
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=settings.mlm_probability, seed=recipe.seed
    )
    from training.progress import quiet_trainer

    trainer = Trainer(
        model=model, args=args, data_collator=collator, train_dataset=dataset, processing_class=tokenizer
    )
    return quiet_trainer(trainer)  # as RexBERT's arms: the loss in the bar, no dict per logging step


def train_baseline(recipe: Recipe, settings: BaselineConfig) -> tuple[Path, dict]:
    """Train (or resume, or keep) the plain arm; returns its final folder (a plain ModernBERT folder) and
    its record: steps, tokens the Trainer counted, loss log."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(recipe.output_dir)
    final, record_path = out / "final", out / "final" / "baseline_record.json"
    if record_path.is_file():
        return final, json.loads(record_path.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(recipe, settings, out)
    checkpoints = out / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    record = {
        "phase": "hf_mlm",
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen),
        "loss": [[e["step"], e["loss"]] for e in logs],
        "optimizer": _qualified_name(getattr(trainer.optimizer, "optimizer", trainer.optimizer)),
        "scheduler": _qualified_name(trainer.lr_scheduler),
        "collator": _qualified_name(trainer.data_collator),
        "model_class": _qualified_name(trainer.model),
    }
    tmp = out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    (tmp / "baseline_record.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final, record


def _qualified_name(obj) -> str:
    """``module.Class`` of an object (the record says which implementation trained the arm)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
