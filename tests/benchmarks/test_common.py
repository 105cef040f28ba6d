"""benchmarks/_common.py: the foreign-load meter that decides whether a scaling ratio is measurable."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Run in a fresh interpreter: the meter makes its process a child subreaper, not something for pytest's.
SCRIPT = """
import json, subprocess, sys, time
from benchmarks._common import ForeignLoad

BUSY = "import time\\nend = time.process_time() + {seconds}\\nwhile time.process_time() < end: pass"
with ForeignLoad() as own:  # a second of CPU in a child: this benchmark's own work
    subprocess.run([sys.executable, "-c", BUSY.format(seconds=1.0)], check=True)
with ForeignLoad() as orphan:  # a second in a grandchild its parent never waits for (a pool's worker)
    subprocess.run(["sh", "-c", f'{sys.executable} -c "{BUSY.format(seconds=1.0)}" & exit 0'], check=True)
    time.sleep(1.5)
other = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=3.0)])  # started before, still running
with ForeignLoad() as foreign:
    time.sleep(1.5)
other.wait()
print(json.dumps([own.cores, orphan.cores, foreign.cores]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat (Linux)")
def test_own_descendants_do_not_count_and_other_work_does():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    own, orphan, foreign = json.loads(done.stdout.strip().splitlines()[-1])
    assert own < 0.4 and orphan < 0.4 < foreign, (own, orphan, foreign)
