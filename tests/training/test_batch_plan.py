import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rexbert_common import UserError
from training.batch_plan import EqualRows, StepSampler, WorldSizeError, plan_batches
from training.recipe import PHASES, PhaseConfig, load_recipe


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


# -- the shipped recipes on cluster sizes ----------------------------------------------------------------
RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"
GPU_COUNTS = (8, 16, 32, 64, 128)


def _plans(phase, lengths, counts):
    plans = {n: plan_batches(lengths, phase, n) for n in counts}
    first = plans[counts[0]]
    for n, plan in plans.items():
        np.testing.assert_array_equal(plan.rows, first.rows, err_msg=f"{n} processes")
        np.testing.assert_array_equal(plan.starts, first.starts, err_msg=f"{n} processes")
    return first


@pytest.mark.parametrize("name", ["micro", "mini", "base", "large"])
def test_paper_recipes_plan_the_same_steps_on_8_to_128_gpus(name, monkeypatch):
    """Every phase at its full token budget (rows of equal length), then with real-looking row lengths
    through a warmup scaled down to ~10 full steps: identical steps on 8..128 processes, a batch warmup of
    several sizes in phase 1, every rank's share of a step whole micro-batches."""
    monkeypatch.setenv("REXBERT_DATA_DIR", "/data")
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    for phase_name in PHASES:
        phase = recipe.phase(phase_name)
        rows = EqualRows(
            count=int(phase.tokens / (0.99 * phase.max_seq_len)), tokens=0.99 * phase.max_seq_len
        )
        plan = _plans(phase, rows, GPU_COUNTS)
        assert plan.planned_rows * 0.99 * phase.max_seq_len >= 0.999 * phase.tokens
        sizes = sorted(set(plan.rows.tolist()))
        assert sizes[-1] == phase.batch_size
        if phase.batch_warmup_tokens:
            assert len(sizes) >= 4, sizes  # the ramp, on 128 GPUs as on 8
        lengths = np.random.default_rng(0).integers(
            phase.max_seq_len // 2, phase.max_seq_len + 1, 40 * phase.batch_size
        )
        # a warmup of ~10 full steps, so that the 40 steps of rows reach the full batch
        scaled = dataclasses.replace(
            phase,
            batch_warmup_tokens=min(phase.batch_warmup_tokens, 10 * phase.batch_size * phase.max_seq_len),
        )
        plan = _plans(scaled, lengths, GPU_COUNTS)
        assert len(set(plan.rows.tolist())) == len(sizes)
        for n in GPU_COUNTS:
            for step in range(0, plan.steps, max(1, plan.steps // 7)):
                share = plan.rows[step] // n
                assert share % phase.micro_batch_size == 0


def test_tiny_recipe_warms_its_batch_up_on_two_processes(monkeypatch):
    monkeypatch.setenv("REXBERT_DATA_DIR", "/data")
    phase = load_recipe(RECIPES / "tiny.yaml").phase1
    lengths = np.random.default_rng(0).integers(60, 129, 400)
    plan = _plans(phase, lengths, (1, 2))
    assert plan.rows[0] < phase.batch_size and plan.rows[-1] == phase.batch_size
