"""Per-task memory of the stages after prepare (sample, fetch, audit, label, train) is O(sample): flat from
1x to 10x input at a fixed per-domain sample, and from 1 to 8 tasks (measured).

Each task runs in a fresh process (a forkserver child) exactly as an executor runs it; its peak is
tracemalloc's plus the Arrow pool's (``benchmarks.bench_curation._measure_task`` says why these and not
RSS). Of the 8-task run the task with the most sampled documents is measured; ``python -m
benchmarks.bench_curation --sections memory`` measures every task of the full grid (docs/curation.md).
The labelers are OpenAI-compatible stubs on 127.0.0.1: the production labeler's code path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_curation import (
    GRID,
    SAMPLE_STAGES,
    StubEndpoint,
    run_measured,
    stage_config,
    synthetic_input,
)

FILES, PER_FILE, PER_DOMAIN = 16, 20, 100  # 1x: 320 documents, ~107 per domain


def _peaks(tmp_path: Path, endpoint: str, copies: int, tasks: int) -> dict[str, int]:
    source = synthetic_input(tmp_path / f"in-{copies}x", FILES, PER_FILE * copies)
    config = stage_config(source, tmp_path / f"out-{copies}x-{tasks}", endpoint, tasks, PER_DOMAIN, **GRID)
    measured = run_measured(config, SAMPLE_STAGES, until="train")
    return {stage: runs[0]["traced"] for stage, runs in measured.items()}


@pytest.mark.slow
def test_stage_memory_is_flat_in_input_and_task_count(tmp_path):
    """A stage that held O(input) -- fetch keeping every record of its input files, the sample merge keeping
    every task's keys -- grows 3-10x (input) or 1.6-8x (tasks) here; allowed: +25% and 64 KiB of noise."""
    with StubEndpoint() as endpoint:
        base = _peaks(tmp_path, endpoint, copies=1, tasks=1)
        more_input = _peaks(tmp_path, endpoint, copies=10, tasks=1)
        more_tasks = _peaks(tmp_path, endpoint, copies=10, tasks=8)
    table = {stage: (base[stage], more_input[stage], more_tasks[stage]) for stage in SAMPLE_STAGES}
    for stage, (one, ten, eight) in table.items():
        assert ten <= 1.25 * one + 65_536, (stage, "1x -> 10x input", table)
        assert eight <= 1.25 * ten + 65_536, (stage, "1 -> 8 tasks", table)
