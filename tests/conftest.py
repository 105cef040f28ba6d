"""Shared fixtures.

Real data lives outside the repository (``../shared/data``); ``make test`` points
``REXBERT_DATA_DIR`` at it. Tests that need it skip -- saying why -- only when the
variable is unset, never when a file is missing (that is a failure).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _data_root() -> Path | None:
    value = os.environ.get("REXBERT_DATA_DIR", "").strip()
    return Path(value) if value else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("REXBERT_DATA_DIR is unset: real-data test skipped (make test sets it to ../shared/data)")
    if not root.is_dir():
        raise FileNotFoundError(f"REXBERT_DATA_DIR={root} is not a directory")
    return root


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Keep tests single-threaded-deterministic and fast on the 2-core CI machine."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    torch.manual_seed(0)
    yield
