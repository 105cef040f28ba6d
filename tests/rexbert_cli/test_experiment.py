"""The experiment config (the main job as data) and the CLI wiring."""

from __future__ import annotations

import pytest

from rexbert_cli.experiment import DEFAULT_CONFIG, ExperimentConfig, load_experiment
from rexbert_cli.main import build_parser


def test_embedded_default_loads_into_dataclasses():
    config = load_experiment(None)
    assert isinstance(config, ExperimentConfig)
    assert config.training.recipe == "training/recipes/tiny.yaml" and config.training.anneal_on_curated
    assert config.evaluation.esci.folds == 2 and config.evaluation.mlm.block_sizes == [128]
    assert config.push_to is None


def test_unknown_field_is_named_with_its_path(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(DEFAULT_CONFIG.read_text().replace("max_pairs:", "max_pair:"))
    with pytest.raises(ValueError, match=r"exp.yaml.evaluation.esci: unknown field\(s\) \['max_pair'\]"):
        load_experiment(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_experiment(tmp_path / "nope.yaml")


def test_every_stage_is_a_subcommand():
    parser = build_parser()
    for argv in (["curate", "--help"], ["train", "--help"], ["eval", "mlm", "--help"], ["card", "--help"],
                 ["push", "--help"], ["experiment", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 0
