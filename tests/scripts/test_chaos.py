"""scripts/chaos.py: the comparison it ends with, its kill plan, and -- slow -- the main job and a
2-process training launch killed at random moments, rerun, and identical to an uninterrupted run."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import save_file

from scripts import chaos


def _run_folder(root, value=1.0, created="2025-01-01T00:00:00Z", runtime=1.0):
    """The artefacts compare() reads, for a train-mode run folder."""
    for phase in ("phase1", "phase2", "phase3"):
        final = root / phase / "final"
        final.mkdir(parents=True)
        save_file({"w": torch.full((4,), value)}, str(final / "model.safetensors"))
        (final / "config.json").write_text(json.dumps({"model_type": "modernbert"}))
        summary = {"train": {"train_runtime": runtime, "train_loss": 2.5}, "resumed_from": str(root / "x")}
        (final / "phase_summary.json").write_text(json.dumps({**summary, "path": str(final), "t": created}))
    return root


def test_compare_ignores_volatile_fields_and_run_paths_but_not_a_weight(tmp_path):
    reference = _run_folder(tmp_path / "a")
    same = _run_folder(tmp_path / "b", runtime=9.0)  # another duration, another folder, resumed elsewhere
    assert chaos.compare(reference, same, "train") == []
    other = _run_folder(tmp_path / "c", value=1.0 + 2**-20)  # one ulp-sized change in a weight
    assert chaos.compare(reference, other, "train") == [
        f"{p}/final/model.safetensors" for p in ("phase1", "phase2", "phase3")
    ]
    (same / "phase2" / "final" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert chaos.compare(reference, same, "train") == ["phase2/final/config.json"]


def test_the_precision_probes_timing_is_not_compared_but_the_choice_is():
    """``mixed_precision: auto`` records the matmul race it timed: another speed-up is not a difference,
    another precision is."""

    def summary(choice: str, speedup: str) -> dict:
        reason = f"auto: CPU (AVX512) with native bf16, bf16 matmul {speedup}x fp32 at 4096x256x768"
        return {"precision": {"precision": choice, "reason": reason}}

    normalised = lambda value: chaos._normalised(value, ("/run",))  # noqa: E731
    assert normalised(summary("bf16", "5.61")) == normalised(summary("bf16", "10.98"))
    assert normalised(summary("bf16", "5.61")) != normalised(summary("fp32", "5.61"))


def test_the_kill_plan_covers_every_stage_in_order():
    reference = chaos.Run(stages=[(name, 10.0 * i) for i, (name, _) in enumerate(chaos.DEMO_STAGES)])
    plan = chaos.plan_demo_kills(reference, 20, random.Random(0))
    order = [name for name, _ in chaos.DEMO_STAGES]
    stages = [kill.stage for kill in plan]
    assert stages == sorted(stages, key=order.index) and set(stages) == set(order) - {"finish"}
    assert all(0 < kill.delay < 10 for kill in plan)
    for stage in set(stages):  # two kills in one stage: the second waits for the rest of its aim
        assert sum(k.delay for k in plan if k.stage == stage) <= 0.95 * 10 + 0.5
    assert [k.stage for k in chaos.plan_demo_kills(reference, 3, random.Random(0))] == [
        k.stage for k in chaos.plan_demo_kills(reference, 3, random.Random(0))
    ]  # the seed reproduces the plan


@pytest.mark.slow
def test_the_demo_killed_anywhere_ends_on_the_uninterrupted_artefacts(tmp_path, data_dir):
    """Acceptance (item 1): `rexbert experiment` (the demo's stages at test size) SIGKILLed at 3 random
    moments, rerun each time: no process of a killed run survives it, and the curated dataset, every phase's
    final folder, the evaluation results and the card equal the uninterrupted run's."""
    report = chaos.chaos("demo", kills=3, seed=2, work=tmp_path / "chaos", log=print)
    assert report["orphans"] == [] and report["differences"] == [], report
    assert sum(not k["landed"].startswith("not killed") for k in report["kills"]) == 3, report


@pytest.mark.slow
def test_a_two_process_training_launch_killed_at_random_steps_ends_on_the_same_weights(tmp_path, data_dir):
    """Acceptance (item 2): the launcher of a 2-process `accelerate launch` SIGKILLed at 3 random steps of
    the three phases, resumed each time: its ranks die with it, and every phase's final weights are
    bit-identical to an uninterrupted 2-process run's."""
    report = chaos.chaos("train", kills=3, seed=3, work=tmp_path / "chaos", processes=2, log=print)
    assert report["orphans"] == [] and report["differences"] == [], report
    assert sum(not k["landed"].startswith("not killed") for k in report["kills"]) == 3, report


def test_a_kill_lands_in_its_stage_or_at_the_start_of_the_next():
    """An attempt faster than the reference must not run past the aimed stage to the end of the job."""
    order = [name for name, _ in chaos.DEMO_STAGES]
    kill = chaos.Kill("curate", delay=300.0)
    run = chaos.Run(stages=[("curate", 1.0)])
    assert not kill.due(run, order, now=100.0) and kill.due(run, order, now=301.0)
    run.stages.append(("tokenizer", 50.0))  # curation finished early: die as the next stage starts
    assert kill.due(run, order, now=50.1)
    resumed = chaos.Run(
        stages=[("train-phase1", 2.0)]
    )  # an attempt resumed past the aim starts the delay there
    assert not kill.due(resumed, order, now=100.0)
