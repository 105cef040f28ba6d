"""The training loss figure is drawn from the phase summaries training writes."""

from __future__ import annotations

import json

from training.loss_plot import loss_curves


def _phase(training, name, steps, tokens, losses, **extra):
    folder = training / name / "final"
    folder.mkdir(parents=True)
    history = [
        {"step": s, "loss": str(v), "masked_accuracy": "0.1"} for s, v in zip(range(1, steps + 1), losses)
    ]
    summary = {"steps": steps, "phase_config": {"tokens": tokens}, "log_history": history, **extra}
    (folder / "phase_summary.json").write_text(json.dumps(summary))


def test_loss_curves_need_a_logged_phase(tmp_path):
    assert loss_curves(tmp_path / "training", tmp_path / "loss.png") is None
    _phase(tmp_path / "training", "phase1", 2, 1000, [])
    assert loss_curves(tmp_path / "training", tmp_path / "loss.png") is None  # nothing logged yet
    _phase(tmp_path / "training", "phase3", 3, 3000, [7.0, 6.0, 5.0])
    path = loss_curves(tmp_path / "training", tmp_path / "loss.png")
    assert path == tmp_path / "loss.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_x_axis_is_tokens_trained_not_the_budget(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, **kw: drawn.append(list(x)))
    _phase(tmp_path, "phase1", 2, 1_000_000, [7.0, 6.0], trained_tokens=500_000)
    _phase(tmp_path, "phase2", 1, 9_000_000, [5.0])  # an older summary: its budget
    loss_curves(tmp_path, tmp_path / "loss.png")
    assert drawn[0] == [0.25, 0.5] and drawn[2] == [9.5]
