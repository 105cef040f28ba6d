"""Kill the main job anywhere, rerun it, and check that it ends where an uninterrupted run ends.

    python scripts/chaos.py demo --kills 20 [--seed 0] [--work outputs/chaos]
    python scripts/chaos.py train --kills 5 [--processes 2] [--seed 0] [--work outputs/chaos-train]

``demo``: ``rexbert experiment`` with the test-sized ``scripts/chaos_experiment.yaml`` (every stage of
``rexbert demo``: curation, data preparation, the three training phases, evaluation, model card) runs once
uninterrupted -- the reference, which also times its stages -- then again in another folder, where it is
killed with SIGKILL ``--kills`` times at random moments spread over those stages and rerun after each kill,
then run to completion. ``train``: the same for ``training/run.py --resume-or-start`` under
``accelerate launch`` with ``--processes`` CPU processes, the *launcher* killed at random training steps
(its ranks must die with it). Both then compare the artefacts with the reference's (:func:`compare`), and
check after every kill that no process of the killed run is left.

The kill moments come from ``--seed`` and are printed with the stage each kill landed in, so a failure
reproduces (up to the machine's speed: a kill aims at a fraction of a stage's reference duration). This is
a script, not a benchmark: its result is pass/fail, not a number; ``tests/scripts/test_chaos.py`` runs it
with a few kills.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "scripts" / "chaos_experiment.yaml"
RECIPE = REPO / "scripts" / "chaos_recipe.yaml"

# stdout/stderr lines that open a stage of the demo (the first match wins; order = the stages' order)
DEMO_STAGES = (
    ("curate", re.compile(r"^\[curate\] \.\.\.")),
    ("tokenizer", re.compile(r"^\[train\] \.\.\.")),
    ("prepare-phase1", re.compile(r"phase1: building")),
    ("train-phase1", re.compile(r"phase1: .* steps training")),
    ("prepare-phase2", re.compile(r"phase2: building")),
    ("train-phase2", re.compile(r"phase2: .* steps training")),
    ("prepare-phase3", re.compile(r"phase3: building")),
    ("train-phase3", re.compile(r"phase3: .* steps training")),
    ("evaluate", re.compile(r"^\[(check-unseen-products|eval-mlm|eval-esci)\] \.\.\.")),
    ("card", re.compile(r"^\[card\] \.\.\.")),
    ("finish", re.compile(r"^\[plots\] \.\.\.")),
)
TRAIN_PHASE = re.compile(r"(phase\d): .* (\d+) steps training")
PROGRESS = re.compile(r"(\d+)/(\d+) \[")  # the Trainer's progress bar
# Fields that record when or how long, or the path of the run folder's resumes: excluded from the
# comparison, everything else must be equal.
VOLATILE = frozenset(
    {
        "created_utc",  # evaluation results: when they were written
        "resumed_from",  # phase summary: the checkpoint this attempt resumed from
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "tokens_per_second",
        "mfu",
    }
)

# the auto precision's reason quotes its matmul race (a timing): "bf16 matmul 5.61x fp32"
TIMED_PROBE = re.compile(r"(bf16 matmul )[\d.]+(x fp32)")


@dataclass
class Run:
    """One attempt: its output lines as they came, with the stage they belong to."""

    returncode: int | None = None
    lines: list[str] = field(default_factory=list)
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, seconds since start)
    step: tuple[str, int] | None = None  # train mode: (phase, last step shown by the progress bar)
    killed_in: str | None = None
    orphans: list[str] = field(default_factory=list)  # "pid command" of the processes that survived


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ACCELERATE_USE_CPU": "true",
    }


def _follow(process: subprocess.Popen, run: Run, stages, started: float, log) -> None:
    """Read the process's merged output (lines end in \\n or, for progress bars, \\r)."""
    buffer = b""
    phase = steps = None
    while chunk := process.stdout.read1(65536):
        buffer += chunk
        *complete, buffer = re.split(rb"[\r\n]", buffer)
        for raw in complete:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            run.lines.append(line)
            log.write(line + "\n")
            for name, marker in stages:
                if marker.search(line):
                    run.stages.append((name, time.monotonic() - started))
                    break
            if match := TRAIN_PHASE.search(line):
                phase, steps = match.group(1), match.group(2)
            match = PROGRESS.search(line)
            if phase and match and match.group(2) == steps:  # the Trainer's bar, not another one
                run.step = (phase, int(match.group(1)))


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except Exception:  # gone meanwhile, or a zombie
        return ["?"]


def attempt(command: list[str], log_path: Path, stages, kill_when=None) -> Run:
    """Run ``command`` to its end, or SIGKILL it (the process itself, nothing else) as soon as
    ``kill_when(run, seconds)`` says so; then check that none of its descendants survives it."""
    import psutil

    run = Run()
    started = time.monotonic()
    with log_path.open("a", encoding="utf-8", buffering=1) as log:
        log.write(f"\n$ {' '.join(command)}\n")
        process = subprocess.Popen(
            command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        reader = threading.Thread(target=_follow, args=(process, run, stages, started, log), daemon=True)
        reader.start()
        while process.poll() is None:
            if kill_when is not None and kill_when(run, time.monotonic() - started):
                descendants = psutil.Process(process.pid).children(recursive=True)
                run.killed_in = run.stages[-1][0] if run.stages else "start-up"
                process.send_signal(signal.SIGKILL)
                process.wait()
                _, alive = psutil.wait_procs(descendants, timeout=15)
                run.orphans = [f"{p.pid} {' '.join(_cmdline(p))[:200]}" for p in alive]
                for orphan in alive:  # do not leave them running, but report them
                    orphan.kill()
                break
            time.sleep(0.02)
        reader.join(timeout=30)
        run.returncode = process.returncode
    return run


# -- comparison ---------------------------------------------------------------------------------


def _normalised(value, roots: tuple[str, ...]):
    """JSON value with the run folder's paths replaced and volatile fields dropped."""
    if isinstance(value, dict):
        return {k: _normalised(v, roots) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_normalised(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<run>")
        value = TIMED_PROBE.sub(r"\1<timed>\2", value)
    return value


def _text(path: Path, roots: tuple[str, ...]) -> str:
    text = path.read_text(encoding="utf-8")
    for root in roots:
        text = text.replace(root, "<run>")
    return text


def _roots(folder: Path) -> tuple[str, ...]:
    return tuple(dict.fromkeys([str(folder.resolve()), str(folder)]))


def _same_file(a: Path, b: Path, roots_a, roots_b) -> bool:
    if a.suffix == ".json":
        return _normalised(json.loads(a.read_text()), roots_a) == _normalised(
            json.loads(b.read_text()), roots_b
        )
    if a.suffix in (".md", ".txt"):
        return _text(a, roots_a) == _text(b, roots_b)
    return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def _compare_folder(reference: Path, other: Path, roots_a, roots_b, label: str) -> list[str]:
    if not other.is_dir():
        return [f"{label}: missing"]
    names_a = sorted(p.name for p in reference.iterdir() if p.is_file())
    names_b = sorted(p.name for p in other.iterdir() if p.is_file())
    if names_a != names_b:
        return [f"{label}: files differ ({names_a} vs {names_b})"]
    return [f"{label}/{n}" for n in names_a if not _same_file(reference / n, other / n, roots_a, roots_b)]


def _compare_dataset(reference: Path, other: Path) -> list[str]:
    import pyarrow.parquet as pq

    files_a = sorted(p.relative_to(reference) for p in reference.rglob("*.parquet"))
    files_b = sorted(p.relative_to(other) for p in other.rglob("*.parquet"))
    if files_a != files_b:
        return [f"curated dataset: files differ ({files_a} vs {files_b})"]
    if not files_a:
        return ["curated dataset: no parquet file"]
    return [
        f"curated dataset: {name} differs"
        for name in files_a
        if not pq.read_table(reference / name).equals(pq.read_table(other / name))
    ]


def compare(reference: Path, other: Path, mode: str) -> list[str]:
    """The differences between two runs' final artefacts (empty: identical). Demo: the curated dataset
    (rows, in order) and its card, each phase's final folder (weights byte for byte; config, tokenizer,
    phase summary, model card), the evaluation results; train: each phase's final folder."""
    roots_a, roots_b = _roots(reference), _roots(other)
    training = ("training",) if mode == "demo" else ()
    differences = []
    for phase in ("phase1", "phase2", "phase3"):
        a, b = reference.joinpath(*training, phase, "final"), other.joinpath(*training, phase, "final")
        differences += _compare_folder(a, b, roots_a, roots_b, f"{phase}/final")
    if mode == "demo":
        dataset_a, dataset_b = reference / "curation" / "dataset", other / "curation" / "dataset"
        differences += _compare_dataset(dataset_a, dataset_b)
        differences += [
            f"curated dataset/{d}" for d in _compare_folder(dataset_a, dataset_b, roots_a, roots_b, "card")
        ]
        eval_a, eval_b = reference / "eval", other / "eval"
        names = sorted(p.name for p in eval_a.glob("*.json"))
        if names != sorted(p.name for p in eval_b.glob("*.json")) or not names:
            differences.append(f"evaluation results differ: {names}")
        differences += [
            f"eval/{n}"
            for n in names
            if (eval_b / n).exists() and not _same_file(eval_a / n, eval_b / n, roots_a, roots_b)
        ]
    return differences


# -- the two modes ------------------------------------------------------------------------------------


def _demo_command(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rexbert_cli.main",
        "experiment",
        "--config",
        str(EXPERIMENT),
        "--output-dir",
        str(out),
    ]


def launch_command(script: str | Path, *script_args: str, processes: int = 2) -> list[str]:
    """``accelerate launch`` of ``script`` on ``processes`` CPU processes of this machine."""
    accelerate = Path(sys.executable).with_name("accelerate")
    options = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        options += ["--multi_gpu", "--num_processes", str(processes)]
    return [str(accelerate), "launch", *options, str(script), *script_args]


def _train_command(out: Path, processes: int) -> list[str]:
    return launch_command(
        REPO / "training" / "run.py", "--recipe", str(RECIPE), "--output-dir", str(out), "--resume-or-start",
        processes=processes,
    )  # fmt: skip


@dataclass
class Kill:
    """Where a kill aims: ``delay`` seconds into ``stage`` (demo), or ``step`` of phase ``stage`` (train)."""

    stage: str
    delay: float = 0.0
    step: int = 0

    def due(self, run: Run, order: list[str], now: float) -> bool:
        if self.step:  # train mode: the launcher dies once the progress bar reaches the step
            return run.step is not None and (
                order.index(run.step[0]) > order.index(self.stage)
                or (run.step[0] == self.stage and run.step[1] >= self.step)
            )
        reached = [(order.index(n), t) for n, t in run.stages if order.index(n) >= order.index(self.stage)]
        if not reached:
            return False
        # the delay runs from the first stage at or after the aim; if the attempt moves on to a later stage
        # first (it is faster than the reference, or resumed past the aim), it dies at that stage's start
        moved_on = reached[-1][0] > reached[0][0]
        return moved_on or now - reached[0][1] >= self.delay


def plan_demo_kills(reference: Run, kills: int, rng: random.Random) -> list[Kill]:
    """``kills`` moments spread over the stages the reference went through (every stage once before any
    twice), in the stages' order. The kills of one stage aim at increasing random fractions of it; each
    attempt resumes roughly where the previous one was killed, so a kill waits for the part of the stage
    between the previous aim and its own."""
    starts: dict[str, float] = {}
    for name, t in reference.stages:  # a stage's first marker (evaluation has three)
        starts.setdefault(name, t)
    names = [name for name in starts if name != "finish"]
    ends = [starts[n] for n in list(starts)[1:]] + [reference.stages[-1][1]]
    durations = {name: max(0.5, end - starts[name]) for name, end in zip(names, ends)}
    chosen = (
        [names[i % len(names)] for i in range(kills)] if kills >= len(names) else rng.sample(names, kills)
    )
    order = [n for n, _ in DEMO_STAGES]
    chosen.sort(key=order.index)
    fractions = {name: sorted(rng.uniform(0.05, 0.95) for _ in range(chosen.count(name))) for name in names}
    plan = []
    for name in dict.fromkeys(chosen):
        previous = 0.0
        for fraction in fractions[name]:
            plan.append(Kill(name, delay=round(max(0.5, (fraction - previous) * durations[name]), 2)))
            previous = fraction
    return plan


def plan_train_kills(reference: Run, kills: int, rng: random.Random) -> list[Kill]:
    """``kills`` random steps of the phases (the reference's step counts), in training order."""
    steps = {m.group(1): int(m.group(2)) for line in reference.lines if (m := TRAIN_PHASE.search(line))}
    chosen = [rng.choice(sorted(steps)) for _ in range(kills)]
    return sorted(
        (Kill(p, step=rng.randint(1, steps[p] - 1)) for p in chosen), key=lambda k: (k.stage, k.step)
    )


def chaos(mode: str, kills: int, seed: int, work: Path, processes: int = 2, log=print) -> dict:
    """Reference run, ``kills`` killed attempts and a final one in ``work/chaos``; returns the report."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    transcript = work / "transcript.log"
    reference_dir, chaos_dir = work / "reference", work / "chaos"
    command = (
        (lambda out: _demo_command(out)) if mode == "demo" else (lambda out: _train_command(out, processes))
    )
    stages = DEMO_STAGES if mode == "demo" else ()
    order = [n for n, _ in DEMO_STAGES] if mode == "demo" else ["phase1", "phase2", "phase3"]
    log(f"chaos {mode}: seed {seed}, {kills} kills; reference run in {reference_dir}")
    started = time.monotonic()
    reference = attempt(command(reference_dir), transcript, stages)
    if reference.returncode != 0:
        raise SystemExit(f"the reference run failed (exit {reference.returncode}); see {transcript}")
    timeline = [(name, round(t)) for name, t in reference.stages]
    log(f"reference: {time.monotonic() - started:.0f} s, stages (name, start s) {timeline}")
    rng = random.Random(seed)
    plan = (
        plan_demo_kills(reference, kills, rng) if mode == "demo" else plan_train_kills(reference, kills, rng)
    )
    report = {"mode": mode, "seed": seed, "kills": [], "orphans": [], "differences": []}
    for i, kill in enumerate(plan, 1):
        aim = f"{kill.stage} +{kill.delay:.2f} s" if mode == "demo" else f"{kill.stage} step {kill.step}"
        run = attempt(command(chaos_dir), transcript, stages, lambda r, now, k=kill: k.due(r, order, now))
        landed = (
            run.killed_in
            if mode == "demo"
            else (f"{run.step[0]} step {run.step[1]}" if run.step else "start-up")
        )
        if run.killed_in is None:
            landed = f"not killed: the run ended first (exit {run.returncode})"
            if run.returncode != 0:
                report["differences"].append(f"attempt {i} failed with exit status {run.returncode}")
        log(
            f"kill {i}/{len(plan)}: aimed at {aim}, landed in {landed}"
            + (f"; ORPHANS {run.orphans}" if run.orphans else "")
        )
        report["kills"].append({"aimed": aim, "landed": landed})
        report["orphans"] += run.orphans
    final = attempt(command(chaos_dir), transcript, stages)
    if final.returncode != 0:
        report["differences"].append(f"the final rerun failed (exit {final.returncode}); see {transcript}")
    else:
        report["differences"] += compare(reference_dir, chaos_dir, mode)
    report["identical"] = not report["differences"] and not report["orphans"]
    report["seconds"] = round(time.monotonic() - started)
    (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    verdict = (
        "IDENTICAL to the uninterrupted run" if report["identical"] else f"DIFFERENT: {report['differences']}"
    )
    log(f"chaos {mode} (seed {seed}, {len(plan)} kills, {report['seconds']} s): {verdict}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("demo", "train"))
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument(
        "--seed", type=int, default=0, help="draws the kill moments (printed; reproduces them)"
    )
    parser.add_argument("--processes", type=int, default=2, help="train mode: processes of the launch")
    parser.add_argument("--work", type=Path, default=None, help="default: outputs/chaos-<mode>")
    args = parser.parse_args(argv)
    work = args.work or REPO / "outputs" / f"chaos-{args.mode}"
    report = chaos(args.mode, args.kills, args.seed, work, args.processes)
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
