"""The phase's optimizer steps over its packed rows: batch-size warmup by gradient accumulation.

Every forward pass sees a full device micro-batch (``micro_batch_size`` rows); batch-size warmup varies
how MANY micro-batches make an optimizer step, so the hardware runs at capacity from step 1. A step's
global row count is a multiple of the warmup quantum ``q`` (``phase.batch_warmup_step_rows``, default
``micro_batch_size × processes``); it grows linearly in tokens seen from ``q`` to ``batch_size``.

The plan is a function of the row lengths, the phase and ``q`` only: with the same ``q`` a run on 1, 2
or 8 processes trains the same rows in the same optimizer steps (each process takes a contiguous,
equal share of every step, cut into micro-batches). Rows after the last full step are not planned;
every planned row is trained exactly once.

We do not use Accelerate's ``BatchSamplerShard``: it yields only batches of one fixed size and silently
drops the others, which is exactly what a variable number of rows per step is. Each process instead
reads its own share through :class:`StepSampler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rexbert_common import UserError
from training.schedules import BatchSizeWarmup


class WorldSizeError(UserError, ValueError):
    """The process count does not fit the recipe's batch sizes (raised before anything is built)."""


def warmup_quantum(phase, world_size: int) -> int:
    """Rows by which the global batch grows during batch-size warmup (``q`` above)."""
    return phase.batch_warmup_step_rows or phase.micro_batch_size * world_size


def check_world_size(phase, world_size: int, name: str = "phase") -> None:
    """Fail fast when ``world_size`` processes cannot run ``phase`` with full micro-batches."""
    per_pass = phase.micro_batch_size * world_size
    q = warmup_quantum(phase, world_size)
    if phase.batch_size % per_pass:
        raise WorldSizeError(
            f"{name}.batch_size ({phase.batch_size}) must be a multiple of {name}.micro_batch_size × "
            f"processes ({phase.micro_batch_size} × {world_size}): change the batch size or the process count"
        )
    if q % per_pass or phase.batch_size % q:
        raise WorldSizeError(
            f"{name}.batch_warmup_step_rows ({q}) must be a multiple of micro_batch_size × processes "
            f"({phase.micro_batch_size} × {world_size}) and divide batch_size ({phase.batch_size})"
        )


@dataclass(frozen=True)
class BatchPlan:
    """Optimizer step ``s`` trains rows ``[starts[s], starts[s] + rows[s])``.

    Process ``p`` of ``world_size`` takes the ``p``-th contiguous share of ``rows[s] / world_size`` rows,
    in micro-batches of ``micro_batch_size`` consecutive rows.
    """

    starts: np.ndarray  # (steps,) int64
    rows: np.ndarray  # (steps,) int64, multiples of micro_batch_size × world_size
    micro_batch_size: int
    world_size: int

    @property
    def steps(self) -> int:
        return int(self.rows.size)

    @property
    def planned_rows(self) -> int:
        return int(self.rows.sum())

    def micro_batches_per_process(self, step: int) -> int:
        return int(self.rows[step]) // (self.micro_batch_size * self.world_size)

    def process_rows(self, step: int, rank: int) -> range:
        """Row indices process ``rank`` trains in optimizer step ``step``."""
        share = int(self.rows[step]) // self.world_size
        first = int(self.starts[step]) + rank * share
        return range(first, first + share)


@dataclass(frozen=True)
class EqualRows:
    """``count`` rows of ``tokens`` real tokens each: the lengths a plan is made of before the rows exist
    (``rexbert plan``, the tests of a recipe's plan at paper scale without billions of lengths in memory)."""

    count: int
    tokens: float


def _length_reader(lengths) -> tuple[int, Callable[[int, int], int]]:
    """(number of rows, tokens in rows [a, b)) for an array of lengths, an Arrow column or EqualRows."""
    if isinstance(lengths, EqualRows):
        return lengths.count, lambda a, b: round((b - a) * lengths.tokens)
    if hasattr(lengths, "slice"):  # Arrow (chunked) array: read only the slices asked for
        return len(lengths), lambda a, b: int(np.asarray(lengths.slice(a, b - a).to_numpy(), np.int64).sum())
    lengths = np.asarray(lengths, dtype=np.int64)
    return len(lengths), lambda a, b: int(lengths[a:b].sum())


def plan_batches(lengths, phase, world_size: int) -> BatchPlan:
    """The phase's steps for ``world_size`` processes.

    ``lengths``: tokens per packed row (numpy array, list, an Arrow column such as ``PhaseRows.lengths``,
    or :class:`EqualRows`). Only the warmup's rows are read: after it every step has ``batch_size`` rows.
    """
    check_world_size(phase, world_size)
    q = warmup_quantum(phase, world_size)
    n_rows, tokens_in = _length_reader(lengths)
    # the ramp counts quanta: 1 quantum at the start, batch_size / q once warmup_tokens are seen
    warmup = BatchSizeWarmup(full_batch=phase.batch_size // q, warmup_tokens=phase.batch_warmup_tokens)
    starts: list[int] = []
    sizes: list[int] = []
    tokens_seen, index = 0, 0
    while True:
        size = warmup(tokens_seen) * q
        if size == phase.batch_size:  # warmup over: the rest are full steps
            full_steps = (n_rows - index) // size
            starts.extend(range(index, index + full_steps * size, size))
            sizes.extend([size] * full_steps)
            break
        if index + size > n_rows:
            break
        starts.append(index)
        sizes.append(size)
        tokens_seen += tokens_in(index, index + size)
        index += size
    if not sizes:
        raise UserError(
            f"the phase produced {n_rows} rows, fewer than one batch ({phase.batch_size}): "
            "raise tokens or lower batch_size"
        )
    return BatchPlan(
        np.array(starts, np.int64), np.array(sizes, np.int64), phase.micro_batch_size, world_size
    )


class StepSampler(torch.utils.data.Sampler):
    """Yields, per optimizer step, the row indices this process trains (a DataLoader ``batch_sampler``:
    the collator cuts them into micro-batches). Resuming skips whole steps (one item per step)."""

    def __init__(self, plan: BatchPlan, rank: int) -> None:
        if not 0 <= rank < plan.world_size:
            raise ValueError(f"rank {rank} outside the plan's {plan.world_size} processes")
        self.plan = plan
        self.rank = rank

    def __iter__(self):
        for step in range(self.plan.steps):
            yield list(self.plan.process_rows(step, self.rank))

    def __len__(self) -> int:
        return self.plan.steps
