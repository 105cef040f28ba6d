"""The local executor's worker processes die with the job: a SIGKILLed `rexbert curate` leaves no worker
writing beside its rerun."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

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


def test_workers_die_with_a_killed_job(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, cwd=tmp_path)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"beats-{r}").exists() for r in (0, 1)):
            assert time.monotonic() < deadline and job.poll() is None, "the workers never started"
            time.sleep(0.1)
        workers = [int((tmp_path / f"pid-{r}").read_text()) for r in (0, 1)]
        assert all(psutil.pid_exists(pid) for pid in workers) and os.getpid() not in workers
        job.send_signal(signal.SIGKILL)
        job.wait()
        time.sleep(3)
        alive = [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        assert not alive, f"workers {alive} outlived the job"
        sizes = [(tmp_path / f"beats-{r}").stat().st_size for r in (0, 1)]
        time.sleep(1)
        assert [(tmp_path / f"beats-{r}").stat().st_size for r in (0, 1)] == sizes  # nobody writes
    finally:
        if job.poll() is None:
            job.kill()
        for pid in workers:  # orphans are not our children any more
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
