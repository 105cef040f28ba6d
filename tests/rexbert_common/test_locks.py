"""One run per output folder: a second run refuses at once naming the holder; a dead holder's lock is taken
over. The holders here are real processes (POSIX locks exclude other processes, not threads)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rexbert_common.locks import FolderBusy, lock_paths, output_lock, read_holder

REPO = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time\n"
    "from rexbert_common.locks import output_lock\n"
    "with output_lock(sys.argv[1], command='rexbert train --recipe r.yaml'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def _holder(folder):
    """A process that holds ``folder``'s lock until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.fixture
def holder(tmp_path):
    children = []

    def start(folder):
        children.append(_holder(folder))
        return children[-1]

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_second_run_refuses_at_once_naming_the_holder(tmp_path, holder):
    folder = tmp_path / "training"
    child = holder(folder)
    started = time.monotonic()
    with pytest.raises(FolderBusy) as busy, output_lock(folder, command="rexbert train --resume"):
        pytest.fail("two runs held one folder")
    assert time.monotonic() - started < 5  # at once, not after a timeout
    message = str(busy.value)
    assert message.startswith(f"{folder} is in use by pid {child.pid} on {socket.gethostname()} ")
    assert "`rexbert train --recipe r.yaml`" in message and "\n" not in message
    assert not folder.exists()  # the lock lives beside the folder: the refusal creates nothing


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, holder):
    folder = tmp_path / "curation"
    child = holder(folder)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    lock_file, info = lock_paths(folder)
    assert lock_file.exists() and read_holder(folder).pid == child.pid  # what the killed run left
    said = []
    with output_lock(folder, command="rexbert curate", log=said.append) as me:
        assert me.pid == os.getpid() and read_holder(folder).pid == os.getpid()
    assert len(said) == 1 and said[0].endswith(", which is no longer running")
    assert said[0].startswith(
        f"{folder.resolve()}: took over the lock of pid {child.pid} on {socket.gethostname()} "
        "(`rexbert train --recipe r.yaml`, since "
    )
    assert not info.exists()  # released: no holder recorded


def test_a_recorded_holder_that_still_runs_is_never_taken_over(tmp_path):
    """The kernel lock is free (a filesystem that ignores locks, or a lock dropped by mistake) but the record
    names a live process on this machine: refuse. A recycled pid (another start time) is taken over."""
    folder = tmp_path / "eval"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {
            "pid": sleeper.pid,
            "host": socket.gethostname(),
            "command": "rexbert eval esci",
            "started": "2025-01-01T00:00:00Z",
            "process_start": psutil.Process(sleeper.pid).create_time(),
        }
        lock_paths(folder)[1].write_text(json.dumps(record))
        with pytest.raises(FolderBusy, match=f"in use by pid {sleeper.pid} on "), output_lock(folder):
            pass
        lock_paths(folder)[1].write_text(
            json.dumps({**record, "process_start": record["process_start"] - 3600})
        )
        with output_lock(folder):  # same pid, another process: the record is stale
            pass
    finally:
        sleeper.kill()
        sleeper.wait()


def test_nested_locks_in_one_process_keep_the_outer_lock(tmp_path):
    """POSIX locks belong to the process: a nested acquisition must not release the outer one on exit."""
    folder = tmp_path / "demo"
    probe = (
        "import sys\nfrom rexbert_common.locks import FolderBusy, output_lock\n"
        "try:\n    with output_lock(sys.argv[1]):\n        print('free')\n"
        "except FolderBusy:\n    print('busy')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def seen_from_outside():
        done = subprocess.run(
            [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, env=env
        )
        return done.stdout.strip()

    with output_lock(folder):
        with output_lock(folder):
            pass
        assert seen_from_outside() == "busy"
    assert seen_from_outside() == "free"


@pytest.mark.parametrize("stage", ["curate", "train", "eval", "demo"])
def test_every_stage_refuses_a_folder_another_run_holds(tmp_path, holder, stage, capsys):
    """Each CLI locks its output (the training folder, the curation folder, an evaluation's results, the
    demo folder) before it writes anything: a second run refuses at once with the holder's line, exit 2."""
    from rexbert_cli.main import main
    from tests.training._tiny import RECIPE

    out = tmp_path / "out"
    argv = {
        "curate": ["curate", "--output-dir", str(out)],
        "train": ["train", "--recipe", RECIPE, "--output-dir", str(out)],
        "eval": ["eval", "mlm", str(tmp_path / "model"), "--output-dir", str(out)],
        "demo": ["demo", "--output-dir", str(out)],
    }[stage]
    locked = out.with_name("out.mlm") if stage == "eval" else out
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # passes the evaluator's checks before its lock
    child = holder(locked)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    named = f"{out / 'mlm.json'}" if stage == "eval" else f"{out.resolve()}"
    command = "eval mlm" if stage == "eval" else stage
    assert err[-1].startswith(f"rexbert {command}: error: {named} is in use by pid {child.pid} on "), err
    assert not out.exists()
