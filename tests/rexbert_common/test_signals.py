"""Stopping cleanly: deferred SIGTERM/SIGINT inside a training loop, Stopped outside it, and children that
die with the process that started them (parent-death signal; pidfd watch for another ancestor)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rexbert_common.signals import Stopped, deferred_stop, install_stop_handlers, stop_requested

REPO = Path(__file__).resolve().parents[2]
# middle process: starts a child that calls exit_with_parent(<arg>), prints the child's pid, then waits
MIDDLE = (
    "import subprocess, sys, time\n"
    "code = 'import sys, time\\nfrom rexbert_common.signals import exit_with_parent\\n' \\\n"
    "       'exit_with_parent(' + sys.argv[1] + ')\\nprint(\"ready\", flush=True)\\ntime.sleep(120)\\n'\n"
    "child = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)\n"
    "assert child.stdout.readline().strip() == 'ready'\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("watched", ["None", "WATCHED"], ids=["parent-death-signal", "pidfd-watch"])
def test_a_child_dies_with_the_process_it_watches(watched):
    """SIGKILL the middle process (as a pre-emption kills a launcher): its child must not live on."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    argument = str(sleeper.pid) if watched == "WATCHED" else "None"
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, argument], stdout=subprocess.PIPE, text=True, env=env
    )
    child = int(middle.stdout.readline())
    try:
        assert psutil.pid_exists(child)
        victim = sleeper if watched == "WATCHED" else middle  # the watched ancestor / the parent
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert _gone_within(child, 10), "the child outlived the process it watched"
    finally:
        for process in (middle, sleeper):
            if process.poll() is None:
                process.kill()
            process.wait()
        if psutil.pid_exists(child):
            os.kill(child, signal.SIGKILL)


@pytest.fixture
def stop_handlers():
    """Python's own handlers first (an earlier test in the session may have left SIGINT ignored)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install_stop_handlers()
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)


def test_inside_a_training_loop_a_signal_only_requests_a_stop(stop_handlers):
    with deferred_stop():
        assert stop_requested() is None
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before the next bytecode
        assert stop_requested() == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C is a request too ...
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # ... a second one stops at once
            time.sleep(1)
    with pytest.raises(Stopped) as stopped:  # outside the loop SIGTERM stops the stage like Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stopped.value.exit_status == 143
    assert str(stopped.value) == (
        "stopped by SIGTERM; finished work is kept: rerun the same command to resume from it"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
