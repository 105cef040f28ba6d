"""One launch of several processes: they share one lock (held by the main process), agree on when to stop
(SIGTERM to the launcher, a non-finite loss on one rank only), and die with their launcher."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from scripts.chaos import launch_command
from tests.training._tiny import args

REPO = Path(__file__).resolve().parents[2]
LONGER = ["--phase", "1", "--set", "phase1.tokens=12000", "--set", "phase1.save_steps=4"]
# a rank that adds NaN to its loss at one step, then runs training/run.py as accelerate launch would
SPOIL_ONE_RANK = """
import math, os, sys
sys.path.insert(0, {repo!r})
from modeling_rexbert import RexBertForMaskedLM
from training import trainer as module
from training.run import script_main

step = {{"now": 0}}
original_step, original_forward = module.RexBertTrainer.training_step, RexBertForMaskedLM.forward

def training_step(self, model, inputs, num_items_in_batch=None):
    step["now"] = self.state.global_step + 1
    return original_step(self, model, inputs, num_items_in_batch)

def forward(self, *args, **kwargs):
    out = original_forward(self, *args, **kwargs)
    if self.training and step["now"] == {step} and os.environ["RANK"] == "1":
        out.loss = out.loss + math.nan
    return out

module.RexBertTrainer.training_step, RexBertForMaskedLM.forward = training_step, forward
sys.exit(script_main(sys.argv[1:]))
"""


def _launch(script, *script_args) -> subprocess.Popen:
    """A 2-process launch; its stderr goes to a file (``.log``), read by :func:`_finish` (a pipe nobody
    reads would fill up and stall the launch)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tempfile.NamedTemporaryFile(prefix="launch-", suffix=".err", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        launch_command(script, *script_args, processes=2),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    process.log = Path(log.name)
    return process


def _finish(process: subprocess.Popen, timeout: float = 900) -> str:
    """Wait for the launch to end; its stderr."""
    process.wait(timeout=timeout)
    return process.log.read_text(errors="replace")


def _wait_for(predicate, seconds=600, what="the condition"):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def _ranks(launcher: subprocess.Popen) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(launcher.pid).children(recursive=True) if "run.py" in " ".join(p.cmdline())
    ]


def _our_lines(text: str) -> list[str]:
    """What the ranks printed as their one line (the launcher -- torch elastic -- adds its own report of
    the failed ranks after it, with a traceback of its own code, which no option turns off)."""
    lines = text.replace("\r", "\n").splitlines()
    return [line for line in lines if line.startswith(("rexbert train: error:", "stopped by"))]


def _traceback_from_our_code(text: str) -> bool:
    return (
        re.search(r'File "[^"]*/(training|rexbert_common|rexbert_cli|curation|evaluation)/', text) is not None
    )


def _same_weights(a, b):
    first, second = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_a_launch_holds_one_lock_stops_on_sigterm_and_its_ranks_die_with_it(tmp_path, data_dir):
    """Acceptance (items 3, 4, 7): while a 2-process launch trains, a second launch on the same folder
    refuses at once naming the first's main process; SIGTERM to the first launcher checkpoints and stops it
    with one line and no traceback; a SIGKILLed launcher leaves no rank behind; resumed, the run ends on the
    uninterrupted 2-process run's weights, bit for bit."""
    run_py = REPO / "training" / "run.py"
    reference = tmp_path / "reference"
    done = _launch(run_py, *args(reference, *LONGER))
    text = _finish(done)
    assert done.returncode == 0, text[-3000:]

    out = tmp_path / "run"
    first = _launch(run_py, *args(out, *LONGER))
    _wait_for(lambda: (out / "phase1" / "checkpoint-4").exists(), what="the first checkpoint")
    ranks = _ranks(first)
    assert len(ranks) == 2
    for rank in ranks:  # hold the first launch mid-phase (its lock held) for as long as the second needs
        rank.suspend()
    second = _launch(run_py, *args(out, *LONGER, "--resume"))
    text = _finish(second, timeout=300)
    lines = _our_lines(text)
    assert second.returncode != 0 and len(lines) == 1 and not _traceback_from_our_code(text), text[-3000:]
    main_rank = next(p.pid for p in ranks if p.environ().get("RANK") == "0")
    assert lines[0].startswith(f"rexbert train: error: {out.resolve()} is in use by pid {main_rank} on ")
    assert first.poll() is None  # the first launch trains on

    first.send_signal(signal.SIGTERM)  # a scheduler's pre-emption notice: the launcher forwards it
    time.sleep(2)
    for rank in ranks:  # the ranks wake up with SIGTERM pending, mid-phase
        rank.resume()
    text = _finish(first, timeout=300)
    assert first.returncode != 0 and not _traceback_from_our_code(text), text[-3000:]
    pattern = r"stopped by SIGTERM; saved (\S+) at step (\d+) of (\d+): resume with --resume"
    lines = _our_lines(text)
    stopped = re.fullmatch(pattern, lines[0]) if len(lines) == 1 else None
    assert stopped, text[-3000:]
    checkpoint, step, _ = stopped.groups()
    assert (
        checkpoint == str(out / "phase1" / f"checkpoint-{step}") and not (out / "phase1" / "final").exists()
    )

    killed = _launch(run_py, *args(out, *LONGER, "--resume"))
    _wait_for(lambda: len(_ranks(killed)) == 2, what="the ranks")
    ranks = _ranks(killed)
    time.sleep(15)  # mid-training or mid-start-up: either way the ranks must go with the launcher
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    _, alive = psutil.wait_procs(ranks, timeout=15)
    for orphan in alive:
        orphan.kill()
    assert not alive, "ranks outlived their launcher"

    resumed = _launch(run_py, *args(out, *LONGER, "--resume"))
    text = _finish(resumed)
    assert resumed.returncode == 0, text[-3000:]
    assert _same_weights(out / "phase1" / "final", reference / "phase1" / "final")


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, data_dir):
    script = tmp_path / "spoil_rank.py"
    script.write_text(SPOIL_ONE_RANK.format(repo=str(REPO), step=5))
    out = tmp_path / "run"
    launch = _launch(script, *args(out, "--phase", "1", "--set", "phase1.save_steps=4"))
    text = _finish(launch)
    assert launch.returncode != 0 and not _traceback_from_our_code(text), text[-3000:]
    assert _our_lines(text) == [
        "rexbert train: error: phase1: training diverged at step 5: a non-finite loss or gradient norm "
        f"(gradient norm nan); nothing after it was saved; resume from {out / 'phase1' / 'checkpoint-4'} "
        "with --resume -- "
        "lower the LR, or set trainer.skip_nonfinite_steps to skip a few such steps"
    ]
    assert sorted(p.name for p in (out / "phase1").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (out / "phase1" / "final").exists()
