"""The training loss figure: loss and masked-token accuracy against tokens trained, phases end to end,
drawn from the ``phase_summary.json`` each finished phase writes (training draws it after every phase;
the main job's report reuses it)."""

from __future__ import annotations

import json
from pathlib import Path

PHASES = ("phase1", "phase2", "phase3")
LOSS_PLOT = "loss_curves.png"  # in the run's output folder, beside recipe.json


def loss_curves(training_dir: Path, path: Path) -> Path | None:
    """Draw the finished phases under ``training_dir`` into ``path`` (PNG); None when none logged a loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curation.io_utils import atomic_write

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset, drawn = 0, False
    for phase in PHASES:
        summary_path = Path(training_dir) / phase / "final" / "phase_summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        history = summary["log_history"]
        # tokens trained (older summaries: the phase's budget) spread evenly over its steps
        tokens = summary.get("trained_tokens") or summary["phase_config"]["tokens"]
        tokens_per_step = tokens / max(summary["steps"], 1)
        x = [offset + e["step"] * tokens_per_step / 1e6 for e in history]
        loss_axis.plot(x, [float(e["loss"]) for e in history], label=phase)
        if all("masked_accuracy" in e for e in history):
            accuracy_axis.plot(x, [100 * float(e["masked_accuracy"]) for e in history], label=phase)
        offset = x[-1] if x else offset
        drawn = drawn or bool(history)
    if not drawn:
        plt.close(figure)
        return None
    loss_axis.set(xlabel="tokens trained (M)", ylabel="training loss (masked tokens)", title="MLM loss")
    accuracy_axis.set(
        xlabel="tokens trained (M)", ylabel="%", title="masked-token accuracy (training batches)"
    )
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)
    return Path(path)
