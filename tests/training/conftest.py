"""Fixtures shared by the preparation tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory):
    """Index and setup (tokenizer, miner, the sources' sizes) of the tiny test recipe
    (``_tiny.prepare_recipe``), prepared once for the session."""
    from rexbert_common.executors import ExecutorConfig
    from tests.training._tiny import prepare_recipe
    from training.prepare import run_prepare

    out = tmp_path_factory.mktemp("tiny_setup")
    run_prepare(prepare_recipe(out), [], ExecutorConfig(tasks=1, workers=1))
    return out


def copy_setup(setup, out):
    """``out`` holding a prepared index, setup and tokenizer: a test then runs only the phase's stages."""
    for name in ("prepare", "tokenizer"):
        shutil.copytree(setup / name, out / name)
    return out
