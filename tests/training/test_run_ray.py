"""docs/training.md's Ray example: the training entry point under Ray Train's ``TorchTrainer``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
import sys
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from tests.training._tiny import args

out, storage = sys.argv[1], sys.argv[2]

def train(config):
    from training.run import main
    main(args(out, "--phase", "1", "--resume-or-start"))

ray.init(num_cpus=2, include_dashboard=False)
result = TorchTrainer(
    train,
    scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
    run_config=RunConfig(storage_path=storage, name="tiny"),
).fit()
sys.exit(1 if result.error else 0)
"""


@pytest.mark.slow
def test_ray_train_runs_the_recipe_on_two_workers(tmp_path, data_dir):
    """Two Ray Train workers are two processes of one run: the planned steps, every row trained once."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["REXBERT_DATA_DIR"] = str(data_dir)
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", _SCRIPT, str(out), str(tmp_path / "ray")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "phase1" / "final" / "phase_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_step"] == summary["steps"]
    planned = summary["planned_rows"]
    assert (
        summary["trained_rows"] == planned and summary["trained_row_id_sum"] == planned * (planned - 1) // 2
    )
