"""A separate virtual environment with transformers 4.57 (the last 4.x), for tests that load what we publish
the way a user on a 4.x stack does: optimum-onnx, and with it sentence-transformers' ONNX backend, still
pins transformers < 4.58.

Built on first use at ``<repo>/.venv457`` (git-ignored; about a minute from PyPI, reused afterwards), with
the torch version of the running interpreter (the CPU wheel from ``/opt/wheels`` where that folder exists,
as the Makefile does). The interpreter runs with a clean environment (no ``PYTHONPATH``): it cannot import
this repository, like a user who only downloaded the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = ROOT / ".venv457"
PACKAGES = (
    "transformers==4.57.*",
    "tokenizers",
    "safetensors",
    "optimum-onnx",
    "onnxruntime",
    "sentence-transformers",
)
WHEELS = Path("/opt/wheels")


def _torch_requirement() -> str:
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def _stamp() -> Path:
    digest = hashlib.sha1(json.dumps([_torch_requirement(), *PACKAGES]).encode()).hexdigest()[:10]
    return ENV_DIR / f".installed-{digest}"


def python() -> Path:
    """The environment's interpreter, building the environment first when needed (one builder at a time)."""
    import fasteners

    interpreter = ENV_DIR / "bin" / "python"
    if _stamp().exists():
        return interpreter
    with fasteners.InterProcessLock(str(ROOT / ".venv457.lock")):
        if _stamp().exists():  # another test process built it meanwhile
            return interpreter
        if not interpreter.exists():
            venv.create(ENV_DIR, with_pip=True)
        pip = [str(interpreter), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        links = ["--find-links", str(WHEELS)] if WHEELS.is_dir() else []
        # torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build
        subprocess.run([*pip, *links, _torch_requirement()], check=True)
        subprocess.run([*pip, *links, _torch_requirement(), *PACKAGES], check=True)
        for old in ENV_DIR.glob(".installed-*"):
            old.unlink()
        _stamp().touch()
    return interpreter


def run(script: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``script`` (Python source) in the 4.57 environment, offline, without this repository importable."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith("REXBERT")
    }
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(python()), "-c", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-6000:])
    return result
