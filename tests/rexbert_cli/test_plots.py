"""The main job's figures are drawn from the files the stages write."""

from __future__ import annotations

import json

from rexbert_cli.plots import experiment_plots, loss_curves


def _phase(training, name, steps, tokens, losses):
    folder = training / name / "final"
    folder.mkdir(parents=True)
    history = [
        {"step": s, "loss": str(v), "masked_accuracy": "0.1"} for s, v in zip(range(1, steps + 1), losses)
    ]
    summary = {"steps": steps, "phase_config": {"tokens": tokens}, "log_history": history}
    (folder / "phase_summary.json").write_text(json.dumps(summary))


def test_loss_curves_need_a_logged_phase(tmp_path):
    assert loss_curves(tmp_path / "training", tmp_path / "loss.png") is None
    _phase(tmp_path / "training", "phase1", 2, 1000, [])
    assert loss_curves(tmp_path / "training", tmp_path / "loss.png") is None  # nothing logged yet
    _phase(tmp_path / "training", "phase3", 3, 3000, [7.0, 6.0, 5.0])
    path = loss_curves(tmp_path / "training", tmp_path / "loss.png")
    assert path == tmp_path / "loss.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_plots_list_only_existing_figures(tmp_path):
    _phase(tmp_path / "training", "phase1", 2, 1000, [7.0, 6.0])
    (tmp_path / "curation" / "report").mkdir(parents=True)
    (tmp_path / "curation" / "report" / "domain_distribution.png").write_bytes(b"png")
    found = experiment_plots(tmp_path, [tmp_path / "eval" / "esci.json"])
    assert found == {
        "loss curves": tmp_path / "plots" / "loss_curves.png",
        "domain distribution (curation)": tmp_path / "curation" / "report" / "domain_distribution.png",
    }
