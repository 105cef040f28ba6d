"""The per-step guard of a training run: non-finite steps and stop requests, read without synchronising.

A non-finite loss on any process turns its gradients non-finite (``RexBertTrainer.compute_loss``), and
DDP's gradient all-reduce carries that to every process, so the gradient norm the Trainer computes each
step is one flag that every process sees the same. Stop requests (SIGTERM, Ctrl-C) ride in the step's
label-count all-reduce. Both stay on the device; :class:`StepGuard` hands them to the host one step late
(:class:`HostCopy`), after the Trainer's own synchronisation on each step's loss, so the guard costs no
synchronisation of its own: a non-finite step t is seen at the end of step t+2 (every process at the same
step); a save before then checks the flag itself (:meth:`StepGuard.check_before_save`, one
synchronisation per save), so nothing a non-finite step produced is ever saved.
"""

from __future__ import annotations

import torch

from rexbert_common.errors import UserError


class TrainingDiverged(UserError):
    """A non-finite loss or gradient norm stopped the run (the message names the step and what to do)."""


class Diverged(Exception):
    """Raised inside the training loop at a non-finite step (the trainer turns it into
    :class:`TrainingDiverged`, naming the checkpoint to resume from)."""

    def __init__(self, step: int, norm: float, reason: str) -> None:
        super().__init__(reason)
        self.step, self.norm, self.reason = step, norm, reason


class HostCopy:
    """Small device values read on the host one step late, without a synchronisation of their own.

    :meth:`exchange` starts copying this step's values into page-locked host memory and returns the
    previous step's. By then the copy has long finished: the Trainer synchronises the host with the device
    on every step's loss (``logging_nan_inf_filter``); a CUDA event makes the read safe when it does not.
    """

    def __init__(self) -> None:
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None] | None = None

    def exchange(self, values: torch.Tensor) -> list[float] | None:
        previous = None
        if self._pending is not None:
            host, done = self._pending
            if done is not None:
                done.synchronize()  # returns at once when the copy is complete
            previous = host.tolist()
        if values.is_cuda:
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = values.clone(), None
        self._pending = (host, done)
        return previous


REASON = "a non-finite loss or gradient norm"


class StepGuard:
    """Device-side record of the first non-finite step, and the one-step-late host view of it and of the
    stop votes."""

    def __init__(self, device: torch.device | str) -> None:
        self._bad = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite step so far
        self._first = torch.full((2,), -1.0, dtype=torch.float64, device=device)  # its step, its norm
        self._host = HostCopy()

    def observe(self, step: int, norm: torch.Tensor | float) -> None:
        """Record step ``step``'s gradient norm (on the device: no synchronisation)."""
        device = self._bad.device
        norm = torch.as_tensor(norm, device=device).detach().double()
        bad = ~torch.isfinite(norm)
        now = torch.stack([torch.full((), float(step), dtype=torch.float64, device=device), norm])
        self._first = torch.where(bad & ~self._bad, now, self._first)
        self._bad = self._bad | bad

    def exchange(self, stop_votes: torch.Tensor) -> float:
        """Hand this step's values to the host; raise :class:`Diverged` when the previous step's show a
        non-finite step. Returns the previous step's stop votes (0 on the first step)."""
        values = torch.cat([torch.stack([stop_votes.double(), self._bad.double()]), self._first])
        votes, bad, step, norm = self._host.exchange(values) or (0.0, 0.0, 0.0, 0.0)
        if bad:
            raise Diverged(int(step), norm, REASON)
        return votes

    def check_before_save(self) -> None:
        """Raise :class:`Diverged` when any step so far was non-finite (one synchronisation)."""
        if self._bad:
            step, norm = self._first.tolist()
            raise Diverged(int(step), norm, REASON)
