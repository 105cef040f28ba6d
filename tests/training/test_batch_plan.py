import numpy as np
import pytest

from rexbert_common import UserError
from training.batch_plan import StepSampler, WorldSizeError, plan_batches
from training.recipe import PhaseConfig


def _phase(**kw):
    base = dict(batch_size=16, micro_batch_size=2, batch_warmup_tokens=4000, batch_warmup_step_rows=4)
    return PhaseConfig(**{**base, **kw})


def test_warmup_ramp_shape_and_full_steps_after():
    lengths = np.full(400, 100)  # 100 tokens per row
    plan = plan_batches(lengths, _phase(), world_size=1)
    rows = plan.rows.tolist()
    # quanta of 4 rows grow linearly in tokens seen: 1 + 3 · seen / 4000 quanta (floored)
    assert rows[:4] == [4, 4, 4, 4]  # 0..1200 tokens seen → still 1 quantum
    seen = np.concatenate([[0], np.cumsum(rows)]) * 100
    expected = [4 * (1 + int(3 * s / 4000)) if s < 4000 else 16 for s in seen[: len(rows)]]
    assert rows == expected
    mid = next(i for i, s in enumerate(seen) if s >= 2000)  # half-way through the warmup tokens
    assert rows[mid] == 8  # 1 + 3 · 0.5 = 2.5 → 2 quanta
    assert rows[-1] == 16 and rows.count(16) == len(rows) - rows.index(16)
    np.testing.assert_array_equal(plan.starts, np.concatenate([[0], np.cumsum(rows)[:-1]]))
    assert plan.planned_rows == sum(rows) <= 400


@pytest.mark.parametrize("world_size", [1, 2])
def test_every_process_gets_full_micro_batches_and_each_planned_row_once(world_size):
    lengths = np.random.default_rng(0).integers(20, 128, size=300)
    plan = plan_batches(lengths, _phase(), world_size)
    seen = []
    for rank in range(world_size):
        per_rank = list(StepSampler(plan, rank))
        assert len(per_rank) == plan.steps
        for step, rows in enumerate(per_rank):
            # this rank's share is a whole number of full micro-batches; the count varies in warmup
            assert len(rows) == plan.micro_batches_per_process(step) * 2
            seen.extend(rows)
    assert sorted(seen) == list(range(plan.planned_rows))
    assert len({plan.micro_batches_per_process(s) for s in range(plan.steps)}) > 1


def test_same_steps_for_any_process_count_dividing_the_quantum():
    lengths = np.random.default_rng(1).integers(20, 128, size=300)
    one, two = plan_batches(lengths, _phase(), 1), plan_batches(lengths, _phase(), 2)
    np.testing.assert_array_equal(one.rows, two.rows)
    np.testing.assert_array_equal(one.starts, two.starts)
    # the union of both ranks' rows of a step is the single process's rows of that step
    for step in range(one.steps):
        assert list(one.process_rows(step, 0)) == [*two.process_rows(step, 0), *two.process_rows(step, 1)]


def test_errors():
    with pytest.raises(WorldSizeError, match="batch_warmup_step_rows"):
        plan_batches(np.full(100, 10), _phase(), world_size=4)  # 4 rows cannot feed 4 × 2
    with pytest.raises(UserError, match="fewer than one batch"):
        plan_batches(np.full(3, 10), _phase(batch_warmup_tokens=0), world_size=1)
    with pytest.raises(ValueError, match="rank 2"):
        StepSampler(plan_batches(np.full(100, 10), _phase(), 2), rank=2)
