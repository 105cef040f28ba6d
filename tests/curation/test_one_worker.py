"""One task or one worker works like any other split: datatrove deep-copies a pipeline per task when one
worker runs the tasks, and pickles the earlier stages' executors (through ``depends``) to a pool's workers;
steps that loaded a model must survive both (they load it again where it is used)."""

from __future__ import annotations

import copy
import pickle

import pytest
import yaml

from curation.config import config_to_dict
from curation.filters import LanguageFilter, RelevanceFilter
from tests.curation.conftest import curation_config, dataset_rows
from tests.curation.test_pipeline import _sources


def test_a_step_that_loaded_its_model_can_still_be_copied_and_pickled(data_dir, tmp_path):
    from datatrove.data import Document

    config = curation_config(tmp_path, [{"path": str(tmp_path)}])
    step = LanguageFilter(config.cleaning.lid, str(config.resolved_lid_path()))
    step.judge_batch([Document(text="This is an English sentence about shoes.", id="0")])
    assert "lid" in step._loaded.models  # the fastText model is loaded (and cannot be pickled)
    for clone in (copy.deepcopy(step), pickle.loads(pickle.dumps(step))):
        assert clone._loaded.models == {}  # copied empty: the copy loads its own
        kept = clone.judge_batch([Document(text="Ceci est une phrase en français.", id="1")])
        assert kept == [(False, "language")]
    relevance = RelevanceFilter(str(tmp_path))
    relevance._loaded.models["fashion"] = object()
    assert copy.deepcopy(relevance)._loaded.models == {}


@pytest.mark.slow
@pytest.mark.parametrize("split", [["--tasks", "1"], ["--workers", "1"]])
def test_curate_runs_with_one_task_or_one_worker(small_corpus, tmp_path, split):
    """`rexbert curate --tasks 1` crashed (a loaded fastText model pickled to the MinHash pool) and must give
    the dataset of the default split."""
    from rexbert_cli.main import main

    config = curation_config(
        tmp_path / "out", _sources(small_corpus), **{"executor.tasks": 3, "executor.workers": 2}
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert main(["curate", "--config", str(path), *split]) == 0
    reference = tmp_path / "reference"
    assert main(["curate", "--config", str(path), "--output-dir", str(reference)]) == 0
    assert dataset_rows(tmp_path / "out") == dataset_rows(reference)
