"""Learning-rate and batch-size schedules.

* Warmup–stable–decay (trapezoid): transformers' ``get_wsd_schedule`` -- linear warmup to the peak,
  constant, then a ``1-sqrt`` (ModernBERT) or linear decay to ``alpha_f · peak``
  (``alpha_f + (1 - alpha_f)(1 - sqrt(progress))``). :class:`WSDSchedule` holds and checks the settings.
* Batch-size warmup driven by tokens seen: the batch grows in ``increment`` steps from ``start`` rows
  to the full batch over the first ``warmup_tokens`` tokens. Written here: no library schedules the
  batch size by tokens seen (the Trainer's batch size is fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

DECAY_SHAPES = ("1-sqrt", "linear")


@dataclass
class WSDSchedule:
    """A warmup–stable–decay learning-rate multiplier over optimizer steps.

    Args:
        total_steps: steps in the phase.
        warmup_steps: steps of linear warmup (0 = start at the peak, e.g. phase 3 restarts).
        decay_steps: steps of the final decay (0 = no decay).
        decay_shape: "1-sqrt" (ModernBERT) or "linear".
        alpha_f: multiplier at the end of the decay (transformers' ``min_lr_ratio``, which is also where
            its warmup starts: ``alpha_f + (1 - alpha_f) · step / warmup_steps``).
    """

    total_steps: int
    warmup_steps: int = 0
    decay_steps: int = 0
    decay_shape: str = "1-sqrt"
    alpha_f: float = 0.0

    def __post_init__(self) -> None:
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {self.decay_shape!r}")
        if min(self.total_steps, self.warmup_steps, self.decay_steps) < 0:
            raise ValueError("schedule steps must be >= 0")
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) + decay_steps ({self.decay_steps}) exceed "
                f"total_steps ({self.total_steps})"
            )
        if not 0.0 <= self.alpha_f <= 1.0:
            raise ValueError(f"alpha_f must be in [0, 1], got {self.alpha_f}")


def wsd_scheduler(optimizer: torch.optim.Optimizer, schedule: WSDSchedule) -> LambdaLR:
    """transformers' ``get_wsd_schedule`` with ``schedule``'s settings (a ``LambdaLR``: the Trainer
    checkpoints and resumes it)."""
    from transformers import get_wsd_schedule

    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=schedule.warmup_steps,
        num_decay_steps=schedule.decay_steps,
        num_training_steps=schedule.total_steps,
        warmup_type="linear",
        decay_type=schedule.decay_shape,
        min_lr_ratio=schedule.alpha_f,
    )


@dataclass
class BatchSizeWarmup:
    """Rows per optimizer step as a function of tokens already seen.

    Args:
        full_batch: rows per step after warmup.
        warmup_tokens: tokens over which the batch grows (0 = always full).
        start: rows per step at the beginning.
        increment: the batch grows in multiples of this (e.g. the micro-batch size).
    """

    full_batch: int
    warmup_tokens: int = 0
    start: int = 1
    increment: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.full_batch or self.increment < 1:
            raise ValueError(
                f"batch warmup needs 1 <= start ({self.start}) <= full_batch ({self.full_batch}) "
                f"and increment >= 1 ({self.increment})"
            )

    def __call__(self, tokens_seen: int) -> int:
        if self.warmup_tokens <= 0 or tokens_seen >= self.warmup_tokens:
            return self.full_batch
        raw = self.start + (self.full_batch - self.start) * tokens_seen / self.warmup_tokens
        stepped = self.start + int((raw - self.start) // self.increment) * self.increment
        return max(self.start, min(self.full_batch, stepped))
