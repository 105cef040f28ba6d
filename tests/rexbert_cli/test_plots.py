"""The main job's figures are drawn from the files the stages write."""

from __future__ import annotations

from rexbert_cli.plots import experiment_plots
from tests.training.test_loss_plot import _phase


def test_experiment_plots_list_only_existing_figures(tmp_path):
    _phase(tmp_path / "training", "phase1", 2, 1000, [7.0, 6.0])
    (tmp_path / "curation" / "report").mkdir(parents=True)
    (tmp_path / "curation" / "report" / "domain_distribution.png").write_bytes(b"png")
    found = experiment_plots(tmp_path, [tmp_path / "eval" / "esci.json"])
    assert found == {
        "loss curves": tmp_path / "plots" / "loss_curves.png",
        "domain distribution (curation)": tmp_path / "curation" / "report" / "domain_distribution.png",
    }
