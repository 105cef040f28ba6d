"""The same pipeline on Slurm: the generated sbatch submissions, checked without a cluster."""

from __future__ import annotations

import re

import pytest

from curation.pipeline import STAGES, build_stages, run_pipeline
from tests.curation.conftest import curation_config


@pytest.fixture()
def sbatch(monkeypatch):
    """Records every sbatch script instead of submitting it; job ids 1001, 1002, ..."""
    import datatrove.executor.slurm as slurm

    submitted = []

    def fake_launch(contents, job_id_retriever, *args):
        submitted.append((contents, args))
        return str(1000 + len(submitted))

    monkeypatch.setattr(slurm, "launch_slurm_job", fake_launch)
    return submitted


def test_slurm_submits_every_stage_as_a_dependent_job_array(sbatch, small_corpus, tmp_path):
    config = curation_config(
        tmp_path,
        [{"path": str(small_corpus)}],
        **{
            "executor.kind": "slurm",
            "executor.tasks": 8,
            "executor.slurm": {
                "partition": "cpu-long",
                "time": "12:00:00",
                "cpus_per_task": 2,
                "venv_path": "/opt/venv/bin/activate",
            },
        },
    )
    assert run_pipeline(config) is None  # submitted, not run
    jobs = [(c, a) for c, a in sbatch if "launch_pickled_pipeline" in c]  # the rest merge each stage's stats
    names = [re.search(r"#SBATCH --job-name=(\S+)", c).group(1) for c, _ in jobs]
    assert names == [f"rexbert_{stage}" for stage in STAGES]
    arrays = [re.search(r"#SBATCH --array=(\S+)", c).group(1) for c, _ in jobs]
    stages = build_stages(config)
    assert arrays == [f"0-{s.tasks - 1}%1" for s in stages]  # %1: executor.workers=1 tasks at once
    tasks = {s.name: s.tasks for s in stages}
    assert (tasks["prepare"], tasks["fetch"], tasks["label"], tasks["buckets"]) == (8, 8, 8, 14)
    assert tasks["train"] == 2 and tasks["sample"] == tasks["audit"] == tasks["cluster"] == 1  # per domain
    for k, (contents, args) in enumerate(jobs):
        assert "#SBATCH --partition=cpu-long" in contents and "#SBATCH --time=12:00:00" in contents
        assert "#SBATCH --cpus-per-task=2" in contents and "source /opt/venv/bin/activate" in contents
        assert str(stages[k].dir / "logs") in contents  # every job runs its own stage's pickled executor
        if k:  # each stage waits for the previous one to succeed
            previous_id = str(1001 + [i for i, (c, _) in enumerate(sbatch) if c == jobs[k - 1][0]][0])
            assert f"afterok:{previous_id}" in contents + " ".join(args)
    assert all((s.dir / "logs" / "executor.pik").exists() for s in stages)


def test_each_stage_asks_for_its_own_resources(sbatch, small_corpus, tmp_path):
    """The one-task cluster stage is sized from the expected corpus (250 B per duplicated document + 8 B per
    document); prepare keeps the small default; a per-stage override wins."""
    config = curation_config(
        tmp_path,
        [{"path": str(small_corpus)}],
        **{
            "executor.kind": "slurm",
            "executor.tasks": 4,
            "input.expected_documents": 1.3e9,
            "executor.slurm": {"partition": "cpu", "stages": {"label": {"cpus": 2, "time": "06:00:00"}}},
        },
    )
    run_pipeline(config)
    jobs = {
        re.search(r"#SBATCH --job-name=(\S+)", c).group(1): c
        for c, _ in sbatch
        if "launch_pickled_pipeline" in c
    }

    def directive(stage, name):
        return re.search(rf"#SBATCH --{name}=(\S+)", jobs[f"rexbert_{stage}"]).group(1)

    cluster_gib = int(directive("cluster", "mem-per-cpu").removesuffix("M")) / 1024
    # 1.3 B documents x (30% duplicated x 600 B + 9 B) = 229 GiB, + 2 GiB base (bench_curation's costs)
    assert 225 < cluster_gib < 240 and directive("cluster", "time") == "48:00:00"
    assert int(directive("prepare", "mem-per-cpu").removesuffix("M")) <= 4 * 1024
    assert (directive("label", "cpus-per-task"), directive("label", "time")) == ("2", "06:00:00")
