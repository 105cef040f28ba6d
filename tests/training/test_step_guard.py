"""The step guard: a non-finite step is recorded on the device and reaches the host two steps later (no
synchronisation of its own); a save checks it at once; stop votes arrive one step late."""

import math

import pytest
import torch

from training.step_guard import Diverged, StepGuard


def _steps(guard, norms, votes=None):
    """The trainer's order each step: exchange (end of training_step), then the step's gradient norm."""
    seen = []
    for step, norm in enumerate(norms, 1):
        seen.append(guard.exchange(torch.tensor(float((votes or {}).get(step, 0)))))
        guard.observe(step, torch.tensor(norm))
    return seen


def test_a_non_finite_step_is_raised_two_steps_later_naming_it():
    guard = StepGuard("cpu")
    _steps(guard, [1.0, 2.0, 3.0, 4.0, math.nan, math.inf])  # step 6 (also bad) hands over "step 5 was"
    with pytest.raises(Diverged) as raised:
        guard.exchange(torch.tensor(0.0))  # step 7 reads it
    assert raised.value.step == 5 and math.isnan(raised.value.norm)  # the first bad step, not the last


def test_a_save_checks_at_once():
    guard = StepGuard("cpu")
    _steps(guard, [1.0, 2.0])
    guard.check_before_save()
    guard.observe(3, torch.tensor(math.inf))
    with pytest.raises(Diverged) as raised:
        guard.check_before_save()
    assert raised.value.step == 3 and raised.value.norm == math.inf


def test_stop_votes_arrive_one_step_late():
    assert _steps(StepGuard("cpu"), [1.0] * 5, votes={3: 2}) == [0.0, 0.0, 0.0, 2.0, 0.0]
