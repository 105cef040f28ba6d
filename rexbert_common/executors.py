"""One executor layer for every corpus-scale stage (curation and training-data preparation).

A job is a list of :class:`Stage` s -- each a datatrove pipeline split into ``tasks`` ranks, with its own
folder of outputs, logs and completion markers -- run on datatrove's ``LocalPipelineExecutor``,
``RayPipelineExecutor`` or ``SlurmPipelineExecutor`` from one :class:`ExecutorConfig`. Local and Ray run
the stages one after the other and stop at the first stage with a failed task (:func:`run_stages`); Slurm
submits the chain of dependent job arrays and returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexbert_common.config import checked
from rexbert_common.errors import UserError


@dataclass
class ExecutorConfig:
    """Args:
    kind: ``local``, ``ray`` or ``slurm`` (datatrove's executors; the pipeline is the same for all three).
    tasks: units of work of the sharded stages. The output does not depend on it; changing it recomputes
        the sharded stages.
    workers: tasks running at once; -1 = one per CPU core (local) / as many as the cluster allows.
    slurm: extra SlurmPipelineExecutor arguments (partition, time, cpus_per_task, mem_per_cpu_gb, ...).
    ray: extra RayPipelineExecutor arguments (cpus_per_task, mem_per_cpu_gb, ...).
    """

    kind: str = checked("local", choices=("local", "ray", "slurm"))
    tasks: int = checked(4, ge=1)
    workers: int = checked(-1, ge=-1)
    slurm: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.workers == 0:
            raise ValueError("executor.workers must be >= 1 or -1 (all cores)")


@dataclass
class Stage:
    """One datatrove pipeline of a job: ``tasks`` ranks writing under ``dir`` (``dir/logs`` holds datatrove's
    logs and completion markers; ``fingerprint`` names the inputs the outputs depend on)."""

    name: str
    tasks: int
    pipeline: list
    dir: Path
    fingerprint: str

    @property
    def logging_dir(self) -> str:
        return str(self.dir / "logs")

    def done(self) -> bool:
        completions = self.dir / "logs" / "completions"
        return completions.is_dir() and len(list(completions.iterdir())) >= self.tasks


def make_executor(stage: Stage, config: ExecutorConfig, depends=None, job_prefix: str = "rexbert"):
    """The datatrove executor of ``stage`` (completed tasks are skipped on rerun)."""
    kind, workers = config.kind, config.workers
    common = {
        "pipeline": stage.pipeline,
        "tasks": stage.tasks,
        "logging_dir": stage.logging_dir,
        "depends": depends,
        "skip_completed": True,
    }
    if kind == "local":
        n = workers if workers > 0 else (os.cpu_count() or 1)
        return _local_executor_class()(**common, workers=min(n, stage.tasks))
    if kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(**common, workers=workers, **config.ray)
    from datatrove.executor import SlurmPipelineExecutor

    options = {"time": "24:00:00", "partition": "cpu", "cpus_per_task": 1, **config.slurm}
    return SlurmPipelineExecutor(**common, workers=workers, job_name=f"{job_prefix}_{stage.name}", **options)


def _local_executor_class():
    from datatrove.executor import LocalPipelineExecutor

    class LocalExecutor(LocalPipelineExecutor):
        """datatrove's local executor whose pool workers die with the process that runs the job: killed
        with SIGKILL, it cannot stop them, and they would go on writing beside its rerun."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.owner_pid = os.getpid()

        def _launch_run_for_rank(self, rank, *args, **kwargs):
            if os.getpid() != self.owner_pid:  # in a pool worker (its parent is the forkserver)
                from rexbert_common.signals import exit_with_parent

                exit_with_parent(self.owner_pid)
            return super()._launch_run_for_rank(rank, *args, **kwargs)

    return LocalExecutor


def build_executors(stages: list[Stage], config: ExecutorConfig, job_prefix: str = "rexbert") -> list:
    """One executor per stage, each depending on the previous one."""
    executors, previous = [], None
    for stage in stages:
        previous = make_executor(stage, config, depends=previous, job_prefix=job_prefix)
        executors.append(previous)
    return executors


def check_ray_capacity(config: ExecutorConfig) -> None:
    """Refuse a Ray run whose per-task request no node of the cluster can hold: Ray would keep the placement
    group pending forever instead of failing."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)  # RAY_ADDRESS selects a cluster
    options = config.ray
    cpus = float(options.get("cpus_per_task", 1))
    memory = float(options.get("mem_per_cpu_gb", 2)) * cpus * 2**30
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not any(res.get("CPU", 0) >= cpus and res.get("memory", 0) >= memory for res in nodes):
        largest = max(nodes, key=lambda res: res.get("memory", 0), default={})
        has_cpus, has_gib = largest.get("CPU", 0), largest.get("memory", 0) / 2**30
        raise UserError(
            f"executor.ray asks {cpus:g} CPU and {memory / 2**30:.2f} GiB per task, but the largest Ray node "
            f"has {has_cpus:g} CPU and {has_gib:.2f} GiB of Ray 'memory': "
            "lower executor.ray.cpus_per_task / mem_per_cpu_gb or add nodes"
        )


def run_stage(executor, name: str, job: str = "curation") -> None:
    """Run one stage to the end and refuse to go on when any of its tasks failed. datatrove's Ray executor
    gives up on a task after a few retries and its dependant then waits for it forever; here the run stops
    with the stage, the failed ranks and where their logs are."""
    executor.run()
    failed = executor.get_incomplete_ranks(skip_completed=True)
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (" ..." if len(failed) > 10 else "")
        raise UserError(
            f"{job} stage {name!r}: {len(failed)} of {executor.world_size} tasks did not complete "
            f"(ranks {shown}); see {executor.logging_dir.path}/logs — rerun to retry only those tasks"
        )


def run_stages(
    stages: list[Stage], config: ExecutorConfig, job: str = "curation", job_prefix: str = "rexbert"
) -> bool:
    """Run (or resume) ``stages`` in order. Returns True when they ran here (local, Ray), False when Slurm
    took the chain of dependent jobs (named ``<job_prefix>_<stage>``)."""
    executors = build_executors(stages, config, job_prefix=job_prefix)
    if config.kind == "slurm":
        executors[-1].run()
        return False
    if config.kind == "ray":
        check_ray_capacity(config)
    for stage, executor in zip(stages, executors):
        run_stage(executor, stage.name, job)
    return True
