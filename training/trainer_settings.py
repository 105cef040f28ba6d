"""``TrainingArguments`` for one phase: the phase's optimisation numbers + the recipe's trainer settings.

The phase owns what defines the run (steps, batch, LR, checkpoint cadence); ``recipe.trainer`` owns how
it runs (trackers, data-loader workers, DDP timeout, compile, gradient checkpointing, precision).
``trainer.extra`` passes any other ``TrainingArguments`` field through, but never one of the two groups
above: the recipe must have one place for each setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from rexbert_common.precision import Precision, resolve_precision
from training.recipe import PhaseConfig, Recipe, RecipeError, TrainerSettings

# Fields RexBERT computes from the phase (or fixes): setting them through trainer.extra would silently
# disagree with the recipe.
_OWNED = frozenset(
    {
        "output_dir",
        "max_steps",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "optim",
        "lr_scheduler_type",
        "warmup_steps",
        "warmup_ratio",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "seed",
        "data_seed",
        "use_cpu",
        "remove_unused_columns",
        "resume_from_checkpoint",
        "ddp_find_unused_parameters",
        "group_by_length",
    }
)
_SETTINGS = frozenset(f.name for f in dataclasses.fields(TrainerSettings)) - {"extra", "mixed_precision"}
_ALIASES = {
    "gradient_checkpointing": "activation_checkpointing",
    "fp16": "mixed_precision",
    "bf16": "mixed_precision",
}


def check_extra_arguments(extra: dict, source: str) -> None:
    """Refuse ``trainer.extra`` keys that are not TrainingArguments fields or that the recipe owns."""
    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in extra:
        if key in _OWNED:
            raise RecipeError(
                f"{source}: trainer.extra.{key} is set by the phase (see PhaseConfig): set it there"
            )
        if key in _SETTINGS or key in _ALIASES:
            raise RecipeError(f"{source}: trainer.extra.{key}: use trainer.{_ALIASES.get(key, key)} instead")
        if key not in known:
            raise RecipeError(f"{source}: trainer.extra.{key} is not a TrainingArguments field")


def check_report_to(report_to: list[str]) -> None:
    """Every tracker in ``trainer.report_to`` is one transformers knows and is installed -- checked before
    any data is built, not when the Trainer starts."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    installed = set(get_available_reporting_integrations())
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(
                f"trainer.report_to: {name!r} is not a tracker transformers knows "
                f"({', '.join(INTEGRATION_TO_CALLBACK)})"
            )
        if name not in installed:
            raise RecipeError(
                f"trainer.report_to: {name!r} is not installed (pip install {name}), or remove it"
            )


def training_precision(settings: TrainerSettings, log: Callable[[str], None] | None = print) -> Precision:
    """``trainer.mixed_precision`` on this process's device (``rexbert_common.precision``: ``auto`` is bf16
    autocast where the device computes bf16 natively and faster). Every process of a distributed run uses
    rank 0's choice: a timed CPU probe could land on both sides of its threshold on different ranks."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(settings.mixed_precision, device, log=log)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        chosen = [precision]
        torch.distributed.broadcast_object_list(chosen, src=0)
        precision = chosen[0]
    return precision


def use_bf16(settings: TrainerSettings) -> bool:
    """Whether training runs under bf16 autocast (see :func:`training_precision`)."""
    return training_precision(settings).bf16


def training_arguments(
    recipe: Recipe, phase_name: str, phase_dir: Path, steps: int, precision: Precision | None = None
):
    """The phase's ``TrainingArguments``; an invalid combination is a one-line :class:`RecipeError`.
    ``precision``: the run's (default: :func:`training_precision` of the recipe's trainer settings)."""
    from transformers import TrainingArguments

    phase: PhaseConfig = recipe.phase(phase_name)
    settings = recipe.trainer
    check_report_to(settings.report_to)
    bf16 = (precision or training_precision(settings)).bf16
    try:
        return TrainingArguments(
            output_dir=str(phase_dir),
            max_steps=steps,
            per_device_train_batch_size=phase.micro_batch_size,
            gradient_accumulation_steps=1,  # the trainer accumulates each planned step's micro-batches
            learning_rate=phase.lr,
            weight_decay=phase.weight_decay,
            max_grad_norm=0.0,  # StableAdamW's update clipping replaces gradient clipping
            logging_steps=phase.logging_steps,
            save_steps=phase.save_steps,
            save_total_limit=phase.save_total_limit,
            seed=recipe.seed,
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),
            remove_unused_columns=False,
            ddp_find_unused_parameters=False,
            disable_tqdm=False,
            report_to=list(settings.report_to),
            run_name=settings.run_name or f"{recipe.name}-{phase_name}",
            dataloader_num_workers=settings.dataloader_num_workers,
            dataloader_pin_memory=settings.dataloader_pin_memory,
            dataloader_persistent_workers=settings.dataloader_persistent_workers,
            dataloader_prefetch_factor=settings.dataloader_prefetch_factor,
            ddp_timeout=settings.ddp_timeout,
            torch_compile=settings.torch_compile,
            activation_checkpointing=settings.activation_checkpointing,
            **settings.extra,
        )
    except (ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        raise RecipeError(f"trainer settings for {phase_name}: {message}") from None
