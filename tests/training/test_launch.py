"""One launch of several processes: they share one lock (held by the main process), agree on when to stop
(SIGTERM to the launcher, a non-finite loss on one rank only), and die with their launcher."""

from __future__ import annotations

import os
import re
import signal
import subprocess
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


def _launch(script, *script_args):
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = launch_command(script, *script_args, processes=2)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate, seconds=600, what="the condition"):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def _ranks(launcher: subprocess.Popen) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(launcher.pid).children(recursive=True) if "run.py" in " ".join(p.cmdline())
    ]


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
    assert done.wait(timeout=900) == 0, done.stderr.read().decode()[-3000:]

    out = tmp_path / "run"
    first = _launch(run_py, *args(out, *LONGER))
    _wait_for(lambda: (out / "phase1" / "checkpoint-4").exists(), what="the first checkpoint")
    ranks = _ranks(first)
    assert len(ranks) == 2
    second = _launch(run_py, *args(out, *LONGER, "--resume"))
    _, err = second.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, err.decode()[-3000:]
    main_rank = next(p.pid for p in ranks if p.environ().get("RANK") == "0")
    assert lines[0].startswith(f"error: {out.resolve()} is in use by pid {main_rank} on ")

    first.send_signal(signal.SIGTERM)  # a scheduler's pre-emption notice: the launcher forwards it
    _, err = first.communicate(timeout=300)
    text = err.decode()
    assert first.returncode != 0 and "Traceback" not in text, text[-3000:]
    stopped = re.findall(
        r"stopped by SIGTERM at step (\d+) of (\d+), saved (\S+): resume with --resume", text
    )
    assert len(stopped) == 1, text[-3000:]
    step, _, checkpoint = stopped[0]
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
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read().decode()[-3000:]
    assert _same_weights(out / "phase1" / "final", reference / "phase1" / "final")


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, data_dir):
    script = tmp_path / "spoil_rank.py"
    script.write_text(SPOIL_ONE_RANK.format(repo=str(REPO), step=5))
    out = tmp_path / "run"
    launch = _launch(script, *args(out, "--phase", "1", "--set", "phase1.save_steps=4"))
    _, err = launch.communicate(timeout=900)
    text = err.decode()
    assert launch.returncode != 0 and "Traceback" not in text, text[-3000:]
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert lines == [
        "error: phase1: training diverged at step 5: a non-finite loss or gradient norm (gradient norm "
        f"nan); nothing after it was saved; resume from {out / 'phase1' / 'checkpoint-4'} with --resume -- "
        "lower the LR, or set trainer.skip_nonfinite_steps to skip a few such steps"
    ]
    assert sorted(p.name for p in (out / "phase1").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (out / "phase1" / "final").exists()
