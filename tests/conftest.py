"""Shared fixtures.

Real-data tests read ``REXBERT_DATA_DIR``. When it is unset (a fresh clone), it points at the embedded
sample (``sample_data/``: the same folders and file names as the full local data, subset rows), so every
real-data test runs everywhere; ``make test`` / CI point it at the full data (``../shared/data``) and then
the ``full_data`` fixture turns on the larger variants.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rexbert_common.data import DATA_ENV, is_sample
from rexbert_common.data import data_dir as _resolved_data_dir


def pytest_configure(config):
    # set before any test (and the subprocesses tests start) reads it
    os.environ[DATA_ENV] = str(_resolved_data_dir())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = _resolved_data_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"{DATA_ENV}={root} is not a directory")
    return root


@pytest.fixture(scope="session")
def full_data(data_dir) -> bool:
    """True when the tests run on the full local data rather than the embedded sample."""
    return not is_sample(data_dir)


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
