"""One executor layer for every corpus-scale stage (curation and training-data preparation).

A job is a list of :class:`Stage` s -- each a datatrove pipeline split into ``tasks`` ranks, with its own
folder of outputs, logs and completion markers, and the resources one of its tasks needs -- run on
datatrove's ``LocalPipelineExecutor``, ``RayPipelineExecutor`` or ``SlurmPipelineExecutor`` from one
:class:`ExecutorConfig`. Local and Ray run the stages one after the other and stop at the first stage with a
failed task (:func:`run_stages`); Slurm submits the chain of dependent job arrays and returns.

Resources per stage: the job declares a default for each of its stages (``Stage.resources``, derived from
its measured per-document costs); the config overrides them per kind and stage::

    executor:
      slurm:
        partition: cpu
        stages:
          cluster: {cpus: 4, mem: 120, time: "48:00:00"}    # mem: GiB per task

Per field, the first that is set wins: ``executor.<kind>.stages.<stage>``, then the kind-wide datatrove
options (``cpus_per_task``, ``mem_per_cpu_gb``, ``time``), then the job's default, then 1 CPU / 2 GiB / 24 h.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexbert_common.config import ConfigError, checked, config_from_dict
from rexbert_common.errors import UserError

KINDS = ("local", "ray", "slurm")
_LEGACY = ("cpus_per_task", "mem_per_cpu_gb", "time")  # datatrove's own per-task options, kind-wide
_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2}):(\d{2})$")


def time_seconds(value: str | int) -> int:
    """Slurm's ``[D-]HH:MM:SS`` (or a number of seconds) as seconds."""
    if isinstance(value, int):
        return value
    match = _TIME.match(str(value).strip())
    if not match:
        raise ValueError(f"time {value!r} is not [D-]HH:MM:SS")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclass
class StageResources:
    """What one task of a stage asks the scheduler for (None: not set here).

    Args:
    cpus: CPU cores per task.
    mem: memory per task, GiB.
    time: wall-time limit per task, ``[D-]HH:MM:SS``.
    """

    cpus: int | None = checked(None, ge=1)
    mem: float | None = checked(None, gt=0)
    time: str | None = None

    def __post_init__(self):
        if self.time is not None:
            time_seconds(self.time)

    def over(self, base: StageResources) -> StageResources:
        """These values where set, ``base``'s elsewhere."""
        pick = lambda mine, theirs: theirs if mine is None else mine
        return StageResources(
            pick(self.cpus, base.cpus), pick(self.mem, base.mem), pick(self.time, base.time)
        )


BUILTIN = StageResources(cpus=1, mem=2.0, time="24:00:00")


@dataclass
class ExecutorConfig:
    """Args:
    kind: ``local``, ``ray`` or ``slurm`` (datatrove's executors; the pipeline is the same for all three).
    tasks: units of work of the sharded stages. The output does not depend on it; changing it recomputes
        the sharded stages.
    workers: tasks running at once; -1 = as many as fit (local: cores // the stage's cpus; Ray / Slurm: as
        many as the cluster allows).
    local / slurm / ray: ``stages: {<stage>: {cpus, mem, time}}`` overrides the job's per-stage resources;
        slurm / ray also take extra SlurmPipelineExecutor / RayPipelineExecutor arguments (partition,
        venv_path, sbatch_args, ...). Locally only ``cpus`` matters (it limits how many tasks run at once).
    """

    kind: str = checked("local", choices=KINDS)
    tasks: int = checked(4, ge=1)
    workers: int = checked(-1, ge=-1)
    local: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.workers == 0:
            raise ValueError("executor.workers must be >= 1 or -1 (all cores)")
        if unknown := sorted(set(self.local) - {"stages"}):
            raise ValueError(f"executor.local takes only 'stages', got {unknown}")
        for kind in KINDS:  # validated at load time, not when the stage starts
            self.stage_overrides(kind)
            _legacy_time(self.options(kind).get("time"))

    def options(self, kind: str | None = None) -> dict[str, Any]:
        return getattr(self, kind or self.kind)

    def stage_overrides(self, kind: str | None = None) -> dict[str, StageResources]:
        kind = kind or self.kind
        stages = self.options(kind).get("stages") or {}
        if not isinstance(stages, dict):
            raise ValueError(f"executor.{kind}.stages must be a mapping of stage names, got {stages!r}")
        parsed = {}
        for name, value in stages.items():
            try:
                parsed[name] = config_from_dict(
                    StageResources, value, source="", prefix=f"executor.{kind}.stages.{name}"
                )
            except ConfigError as error:
                raise ValueError(str(error).removeprefix(": ")) from None
        return parsed

    def resources(self, stage: Stage) -> StageResources:
        """The resolved resources of one task of ``stage`` on this config's executor."""
        options = self.options()
        override = self.stage_overrides().get(stage.name, StageResources())
        legacy = StageResources(cpus=options.get("cpus_per_task"), time=_legacy_time(options.get("time")))
        chosen = override.over(legacy.over(stage.resources.over(BUILTIN)))
        if override.mem is None and options.get("mem_per_cpu_gb") is not None:
            chosen.mem = float(options["mem_per_cpu_gb"]) * chosen.cpus
        return chosen


def _legacy_time(value: Any) -> str | None:
    if value is None:
        return None
    seconds = time_seconds(value)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Stage:
    """One datatrove pipeline of a job: ``tasks`` ranks writing under ``dir`` (``dir/logs`` holds datatrove's
    logs and completion markers; ``fingerprint`` names the inputs the outputs depend on; ``resources`` is
    the job's default request for one task, which the config may override)."""

    name: str
    tasks: int
    pipeline: list
    dir: Path
    fingerprint: str
    resources: StageResources = field(default_factory=StageResources)

    @property
    def logging_dir(self) -> str:
        return str(self.dir / "logs")

    def done(self) -> bool:
        completions = self.dir / "logs" / "completions"
        return completions.is_dir() and len(list(completions.iterdir())) >= self.tasks


def add_executor_arguments(parser, config_key: str) -> None:
    """``--executor``, ``--tasks`` and ``--workers`` of a command whose config holds an
    :class:`ExecutorConfig` at ``config_key`` (see :func:`executor_overrides`)."""
    parser.add_argument(
        "--executor",
        choices=("local", "ray", "slurm"),
        default=None,
        help=f"overrides {config_key}.kind (slurm submits the chain of dependent jobs and returns)",
    )
    parser.add_argument(
        "--tasks", type=int, default=None, help=f"overrides {config_key}.tasks (units of work)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help=f"overrides {config_key}.workers (-1 = all cores)"
    )


def executor_overrides(args, config_key: str) -> list[str]:
    """The ``--set``-style overrides of the flags :func:`add_executor_arguments` added."""
    flags = (("executor", "kind"), ("tasks", "tasks"), ("workers", "workers"))
    return [
        f"{config_key}.{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None
    ]


def _slurm_executor_class():
    from datatrove.executor import SlurmPipelineExecutor

    class ChunkedSlurmExecutor(SlurmPipelineExecutor):
        """datatrove's Slurm executor, with every array chunk a dependency of the next stage.

        Over ``max_array_size`` tasks datatrove submits several array jobs (each ``afterany`` on the previous
        chunk) and a dependent stage waits for the last one only: a failed earlier chunk would let the next
        stage start on missing input. Here every submitted chunk id is recorded and the next stage waits
        ``afterok`` on all of them.
        """

        @property
        def job_id(self):
            return self.__dict__.get("_job_id")

        @job_id.setter
        def job_id(self, value):
            self.__dict__["_job_id"] = value
            if value not in (None, -1):
                self.__dict__.setdefault("chunk_job_ids", []).append(str(value))

        def launch_job(self):
            if self.depends:
                if not self.depends.job_id:
                    self.depends.launch_job()
                chunks = self.depends.__dict__.get("chunk_job_ids", [])
                if chunks:
                    self.depends_job_id = ":".join(chunks)  # afterok:<id>:<id>:... waits for every chunk
                self.depends = None
            super().launch_job()

    return ChunkedSlurmExecutor


VERBOSE_ENV = "REXBERT_VERBOSE"  # set by the CLI (rexbert_cli.logs): "1" with --verbose


class _TaskConsole:
    """Without ``--verbose`` a task's datatrove log goes to its log file only (the console gets errors).

    datatrove's own switch: a task run with a ``local_rank`` other than 0 logs to its file and shows only
    errors on the console (``local_rank`` is used for nothing else). Its worker processes start with loguru
    enabled, so the worker's own lines after a task ("k/N tasks completed") are disabled here too; each task
    re-enables datatrove's logger so that its log file keeps everything."""

    console_logs = True

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        if self.console_logs:
            return super()._run_for_rank(rank, local_rank, node_rank)
        from loguru import logger

        logger.enable("datatrove")
        try:
            return super()._run_for_rank(rank, local_rank or 1, node_rank)
        finally:
            logger.disable("datatrove")


class _DiesWithJob:
    """For datatrove's local executor: its processes die with the job. A job killed with SIGKILL cannot stop
    them, and its pool workers would go on writing beside its rerun (its manager process, idle, would stay
    forever)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner_pid = os.getpid()

    def run(self):
        import multiprocess

        start_manager, multiprocess.Manager = multiprocess.Manager, _manager_that_dies_with_its_job
        try:  # datatrove calls multiprocess.Manager() once per run, in this thread
            return super().run()
        finally:
            multiprocess.Manager = start_manager

    def _launch_run_for_rank(self, rank, *args, **kwargs):
        if os.getpid() != self.owner_pid:  # in a pool worker (its parent is the forkserver)
            from rexbert_common.signals import exit_with_parent

            exit_with_parent(self.owner_pid)
        return super()._launch_run_for_rank(rank, *args, **kwargs)


def _quiet(executor_class) -> type:
    """``executor_class`` with :class:`_TaskConsole` (and :class:`_DiesWithJob` for the local executor),
    importable as ``rexbert_common.executors.Quiet<Name>`` (workers unpickle the executor by that name)."""
    name = f"Quiet{executor_class.__name__}"
    if name not in globals():
        local = executor_class.__name__ == "LocalPipelineExecutor"
        bases = (_TaskConsole, _DiesWithJob, executor_class) if local else (_TaskConsole, executor_class)
        globals()[name] = type(name, bases, {"__module__": __name__})
    return globals()[name]


def __getattr__(name: str):
    """``Quiet<datatrove executor>`` classes are built on first use (datatrove is imported when needed)."""
    if name.startswith("Quiet") and name.endswith("PipelineExecutor"):
        import datatrove.executor

        return _quiet(getattr(datatrove.executor, name.removeprefix("Quiet")))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_executor(stage: Stage, config: ExecutorConfig, depends=None, job_prefix: str = "rexbert"):
    """The datatrove executor of ``stage`` (completed tasks are skipped on rerun)."""
    kind, workers = config.kind, config.workers
    res = config.resources(stage)
    common = {
        "pipeline": stage.pipeline,
        "tasks": stage.tasks,
        "logging_dir": stage.logging_dir,
        "depends": depends,
        "skip_completed": True,
    }
    console_logs = os.environ.get(VERBOSE_ENV) == "1"
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        n = workers if workers > 0 else max(1, (os.cpu_count() or 1) // res.cpus)
        executor = _quiet(LocalPipelineExecutor)(**common, workers=min(n, stage.tasks))
        executor.console_logs = console_logs
        return executor
    extra = {k: v for k, v in config.options().items() if k not in (*_LEGACY, "stages")}
    per_cpu_gb = res.mem / res.cpus
    if kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        executor = _quiet(RayPipelineExecutor)(
            **common,
            workers=workers,
            cpus_per_task=res.cpus,
            mem_per_cpu_gb=per_cpu_gb,
            time=time_seconds(res.time),
            **extra,
        )
        executor.console_logs = console_logs
        return executor
    options = {"partition": "cpu", **extra}
    # sbatch takes whole units: MiB per CPU, rounded up so a task never gets less than asked
    sbatch = {**options.pop("sbatch_args", {}), "mem-per-cpu": f"{math.ceil(per_cpu_gb * 1024)}M"}
    return _slurm_executor_class()(
        **common,
        workers=workers,
        job_name=f"{job_prefix}_{stage.name}",
        cpus_per_task=res.cpus,
        mem_per_cpu_gb=math.ceil(per_cpu_gb),
        time=res.time,
        sbatch_args=sbatch,
        **options,
    )


def _manager_that_dies_with_its_job():
    """``multiprocess.Manager()`` whose server process (a fork of the job) dies with the job."""
    import multiprocess
    from multiprocess.managers import SyncManager

    from rexbert_common.signals import exit_with_parent

    manager = SyncManager(ctx=multiprocess.get_context())
    manager.start(initializer=exit_with_parent)
    return manager


def build_executors(stages: list[Stage], config: ExecutorConfig, job_prefix: str = "rexbert") -> list:
    """One executor per stage. On Slurm each depends on the previous one (the chain of job arrays); local
    and Ray stages are run one after the other by :func:`run_stages` instead: a datatrove ``depends`` there
    would pickle every finished upstream executor -- with the models its steps loaded -- into the next
    stage's worker pool or Ray tasks."""
    executors, previous = [], None
    for stage in stages:
        depends = previous if config.kind == "slurm" else None
        previous = make_executor(stage, config, depends=depends, job_prefix=job_prefix)
        executors.append(previous)
    return executors


def check_ray_capacity(config: ExecutorConfig, stages: list[Stage] | None = None) -> None:
    """Refuse a Ray run with a stage whose per-task request no node of the cluster can hold: Ray would keep
    the placement group pending forever instead of failing."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)  # RAY_ADDRESS selects a cluster
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for stage in stages or [Stage("tasks", 1, [], Path("."), "")]:
        res = config.resources(stage)
        memory = res.mem * 2**30
        if any(node.get("CPU", 0) >= res.cpus and node.get("memory", 0) >= memory for node in nodes):
            continue
        largest = max(nodes, key=lambda node: node.get("memory", 0), default={})
        has_cpus, has_gib = largest.get("CPU", 0), largest.get("memory", 0) / 2**30
        raise UserError(
            f"stage {stage.name!r} asks {res.cpus:g} CPU and {res.mem:.2f} GiB per task on Ray, but the "
            f"largest Ray node has {has_cpus:g} CPU and {has_gib:.2f} GiB of Ray 'memory': lower "
            f"executor.ray.stages.{stage.name}.cpus / mem or add nodes"
        )


_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Missing|Missed)\w*): (.+)$")


def task_error(logging_dir, rank: int) -> str | None:
    """The last exception line ``Type: message`` in a task's datatrove log, if any."""
    name = f"logs/task_{rank:05d}.log"
    try:
        if not logging_dir.exists(name):
            return None
        with logging_dir.open(name, "r") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = _RAISED.match(line.strip())
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return None


def run_stage(executor, name: str, job: str = "curation") -> None:
    """Run one stage to the end and refuse to go on when any of its tasks failed. datatrove's Ray executor
    gives up on a task after a few retries and its dependant then waits for it forever; here the run stops
    with the stage, the failed ranks, the first task's error and where their logs are -- one line, also when
    the executor re-raised the task's exception (local runs), whose traceback stays in the task's log."""
    raised = None
    try:
        executor.run()
    except Exception as error:  # noqa: BLE001 - reported below with the rank and its log
        raised = error
    if isinstance(raised, OSError):  # a full disk or a read-only folder met by a task run in this process
        from rexbert_common.files import output_error

        converted = output_error(raised, raised.filename or executor.logging_dir.path)
        if converted is not raised:
            raise converted from raised
    failed = executor.get_incomplete_ranks(skip_completed=True)
    error = task_error(executor.logging_dir, failed[0]) if failed else None
    if raised is not None and (not failed or (error is None and not isinstance(raised, UserError))):
        raise raised  # not a task's reported failure (e.g. the pool could not start): keep the traceback
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (" ..." if len(failed) > 10 else "")
        if error is None and raised is not None:
            error = f"{type(raised).__name__}: {raised}"
        raise UserError(
            f"{job} stage {name!r}: {len(failed)} of {executor.world_size} tasks did not complete "
            f"(ranks {shown}){f'; rank {failed[0]}: {error}' if error else ''}; see "
            f"{executor.logging_dir.path}/logs — rerun to retry only those tasks"
        ) from raised


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
        check_ray_capacity(config, stages)
    for stage, executor in zip(stages, executors):
        start = time.perf_counter()
        run_stage(executor, stage.name, job)
        tasks = f"{stage.tasks} task{'s' if stage.tasks != 1 else ''}"
        print(f"[{job}] {stage.name}: {tasks} done in {time.perf_counter() - start:.0f} s", flush=True)
    return True
