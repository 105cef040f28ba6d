"""The shared executor layer: per-stage resources (job defaults, config overrides), the sbatch scripts they
produce (checked without Slurm), every Slurm array chunk a dependency of the next stage, a failed task
reported in one line with its error, and local workers that die with a SIGKILLed job (none left writing
beside its rerun)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rexbert_common.config import ConfigError, config_from_dict
from rexbert_common.errors import UserError
from rexbert_common.executors import (
    ExecutorConfig,
    Stage,
    StageResources,
    build_executors,
    make_executor,
    run_stage,
    run_stages,
    time_seconds,
)


def _noop(data, rank: int = 0, world_size: int = 1):
    yield from data or ()


def _stages(tmp_path: Path, tasks=(4, 1), defaults=(None, None)) -> list[Stage]:
    names = ("shard", "merge")
    return [
        Stage(name, n, [_noop], tmp_path / name, "fp", resources=res or StageResources())
        for name, n, res in zip(names, tasks, defaults)
    ]


def _config(kind: str = "slurm", **options) -> ExecutorConfig:
    return config_from_dict(ExecutorConfig, {"kind": kind, kind: options}, "test.yaml", prefix="executor")


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


def _directive(script: str, name: str) -> str:
    return re.search(rf"#SBATCH --{name}=(\S+)", script).group(1)


def test_resources_take_the_stage_override_then_kind_wide_options_then_the_job_default(tmp_path):
    stage = _stages(tmp_path, defaults=(StageResources(cpus=2, mem=8, time="02:00:00"), None))[0]
    assert _config().resources(stage) == StageResources(2, 8.0, "02:00:00")  # the job's default
    kind_wide = _config(time="12:00:00", mem_per_cpu_gb=3)
    assert kind_wide.resources(stage) == StageResources(2, 6.0, "12:00:00")  # mem per CPU x the stage's CPUs
    override = _config(time="12:00:00", mem_per_cpu_gb=3, stages={"shard": {"mem": 100, "cpus": 4}})
    assert override.resources(stage) == StageResources(4, 100.0, "12:00:00")
    other = _stages(tmp_path)[1]  # no job default, no override: the built-in request
    assert _config().resources(other) == StageResources(1, 2.0, "24:00:00")


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"stages": {"shard": {"cpus": 0}}},
            r"test\.yaml: executor: executor\.slurm\.stages\.shard\.cpus = 0 must",
        ),
        ({"stages": {"shard": {"memory": 4}}}, r"unknown field executor\.slurm\.stages\.shard\.memory"),
        ({"stages": {"shard": {"time": "tomorrow"}}}, r"time 'tomorrow' is not \[D-\]HH:MM:SS"),
        ({"stages": ["shard"]}, r"executor\.slurm\.stages must be a mapping"),
    ],
)
def test_bad_stage_resources_fail_at_load_naming_the_field(options, message):
    with pytest.raises(ConfigError, match=message):
        _config(**options)


def test_time_strings():
    assert time_seconds("1-02:03:04") == ((24 + 2) * 60 + 3) * 60 + 4
    assert time_seconds("00:30:00") == 1800 and time_seconds(90) == 90


def test_slurm_scripts_carry_each_stages_resources(sbatch, tmp_path):
    stages = _stages(tmp_path, defaults=(StageResources(cpus=1, mem=3), StageResources(cpus=4, mem=100)))
    config = _config(partition="big", stages={"merge": {"time": "48:00:00"}})
    assert run_stages(stages, config, job="test", job_prefix="job") is False  # submitted, not run
    jobs = {_directive(c, "job-name"): c for c, _ in sbatch if "launch_pickled_pipeline" in c}
    shard, merge = jobs["job_shard"], jobs["job_merge"]
    assert (_directive(shard, "cpus-per-task"), _directive(shard, "mem-per-cpu")) == ("1", "3072M")
    assert (_directive(merge, "cpus-per-task"), _directive(merge, "mem-per-cpu")) == ("4", "25600M")
    assert _directive(shard, "time") == "24:00:00" and _directive(merge, "time") == "48:00:00"
    assert _directive(merge, "partition") == "big" and _directive(shard, "array") == "0-3"


def test_every_array_chunk_is_a_dependency_of_the_next_stage(sbatch, tmp_path):
    """2,500 tasks over datatrove's 1,001-task arrays: three chunks; the next stage waits for all three."""
    stages = _stages(tmp_path, tasks=(2500, 1))
    run_stages(stages, _config(), job_prefix="job")
    launches = [(i, c, a) for i, (c, a) in enumerate(sbatch) if "launch_pickled_pipeline" in c]
    chunks = [str(1001 + i) for i, c, _ in launches if _directive(c, "job-name") == "job_shard"]
    assert len(chunks) == 3
    (merge_args,) = [a for _, c, a in launches if _directive(c, "job-name") == "job_merge"]
    dependency = next(arg for arg in merge_args if arg.startswith("--dependency="))
    assert dependency == f"--dependency=afterok:{':'.join(chunks)}"


def test_local_workers_follow_the_stages_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    stage = _stages(tmp_path, tasks=(16, 1), defaults=(StageResources(cpus=4), None))[0]
    assert make_executor(stage, _config("local")).workers == 2  # 8 cores // 4 per task
    assert make_executor(stage, _config("local", stages={"shard": {"cpus": 1}})).workers == 8
    explicit = config_from_dict(ExecutorConfig, {"kind": "local", "workers": 3})
    assert make_executor(stage, explicit).workers == 3
    with pytest.raises(ConfigError, match="executor.local takes only 'stages'"):
        _config("local", partition="x")


class _FailOn:
    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        if rank == self.rank:
            raise UserError(f"labels cover 3 of 10 documents on rank {rank}")
        yield from data or ()


def test_a_failed_task_stops_the_stage_in_one_line_with_its_error(tmp_path):
    stage = Stage("label", 3, [_FailOn(1)], tmp_path / "label", "fp")
    config = config_from_dict(ExecutorConfig, {"kind": "local", "workers": 1})
    (executor,) = build_executors([stage], config)
    with pytest.raises(UserError) as caught:  # workers=1: datatrove re-raises; rank 2 never ran
        run_stage(executor, "label", "test")
    message = str(caught.value)
    assert "\n" not in message
    assert "stage 'label': 2 of 3 tasks did not complete (ranks 1, 2)" in message
    assert "rank 1: UserError: labels cover 3 of 10 documents on rank 1" in message


class _Model:
    def __reduce__(self):
        raise TypeError("cannot pickle a loaded model")


class _LoadsAModel:
    """A step that keeps an unpicklable object once it has run in-process (as a loaded fastText does)."""

    def __init__(self):
        self.model = None

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        self.model = _Model()
        yield from data or ()


def test_a_stage_that_ran_in_process_is_not_pickled_into_the_next_stages_workers(tmp_path):
    """One task in-process (a loaded model stays on the step), then a stage with a worker pool: the pool
    must not receive the first executor (`rexbert curate --num-tasks 1` crashed that way)."""
    stages = [
        Stage("one", 1, [_LoadsAModel()], tmp_path / "one", "fp"),
        Stage("many", 2, [_noop], tmp_path / "many", "fp"),
    ]
    config = config_from_dict(ExecutorConfig, {"kind": "local", "workers": 2})
    assert run_stages(stages, config, job="test") is True
    assert all(stage.done() for stage in stages)


REPO = Path(__file__).resolve().parents[2]
JOB = """
import os, sys, time
from pathlib import Path
from rexbert_common.executors import ExecutorConfig, Stage, make_executor

def task(data, rank=0, world_size=1):
    out = Path(sys.argv[1])
    (out / f"pid-{rank}").write_text(str(os.getpid()))
    for i in range(600):
        with open(out / f"beats-{rank}", "a") as handle:
            handle.write(f"{i}\\n")
        time.sleep(0.1)
    return iter(())

if __name__ == "__main__":
    stage = Stage("slow", 2, [task], Path(sys.argv[1]) / "stage", "fp")
    make_executor(stage, ExecutorConfig(kind="local", tasks=2, workers=2)).run()
"""


def test_no_process_of_a_killed_job_survives_it(tmp_path):
    """SIGKILL the job while its two tasks run in datatrove's pool: its workers (children of datatrove's
    forkserver), the forkserver, the manager and the resource tracker all end, and no task writes on."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, cwd=tmp_path)
    descendants = []
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"beats-{r}").exists() for r in (0, 1)):
            assert time.monotonic() < deadline and job.poll() is None, "the workers never started"
            time.sleep(0.1)
        descendants = psutil.Process(job.pid).children(recursive=True)
        workers = {int((tmp_path / f"pid-{r}").read_text()) for r in (0, 1)}
        assert workers <= {p.pid for p in descendants} and len(descendants) >= 4  # + manager, forkserver
        job.send_signal(signal.SIGKILL)
        job.wait()
        _, alive = psutil.wait_procs(descendants, timeout=10)
        assert not alive, f"{[' '.join(p.cmdline())[:80] for p in alive]} outlived the job"
        sizes = [(tmp_path / f"beats-{r}").stat().st_size for r in (0, 1)]
        time.sleep(1)
        assert [(tmp_path / f"beats-{r}").stat().st_size for r in (0, 1)] == sizes  # nobody writes
    finally:
        for process in descendants:  # orphans are not our children any more
            if process.is_running():
                process.kill()


@pytest.mark.parametrize("verbose", [False, True])
def test_task_logs_reach_the_console_only_with_verbose_and_their_files_always(tmp_path, verbose):
    """datatrove prints each task's INFO log (pipeline, stats, "k/N tasks completed") from its worker
    processes; without --verbose the console shows one line per stage, and every task's log file keeps all."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rexbert_cli.logs import quiet_libraries\n"
        "from rexbert_common.config import config_from_dict\n"
        "from rexbert_common.executors import ExecutorConfig, Stage, run_stages\n"
        "from tests.rexbert_common.test_executors import _noop\n"
        "if __name__ == '__main__':\n"
        "    quiet_libraries(verbose=sys.argv[2] == 'True')\n"
        "    stages = [Stage('shard', 2, [_noop], Path(sys.argv[1]), 'fp')]\n"
        "    config = config_from_dict(ExecutorConfig, {'kind': 'local', 'workers': 2})  # a worker pool\n"
        "    assert run_stages(stages, config, job='test')\n"
    )
    script = tmp_path / "run.py"
    script.write_text(code)
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "shard"), str(verbose)],
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},  # the script imports this test module
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\[test\] shard: 2 tasks done in \d+ s\n", result.stdout)
    for line in ("Processing done for rank", "tasks completed", "PIPELINE"):
        assert (line in result.stderr) is verbose, line
    for rank in (0, 1):
        log = (tmp_path / "shard" / "logs" / "logs" / f"task_{rank:05d}.log").read_text()
        assert "PIPELINE" in log and f"Processing done for rank={rank}" in log
