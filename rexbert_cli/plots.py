"""The main job's PNG figures: training loss per phase and the phase 1 / phase 3 comparison on unseen
products. The domain distribution and the ESCI chart are drawn by their own stages (curation report,
``rexbert eval esci``); :func:`experiment_plots` lists them beside these."""

from __future__ import annotations

import json
from pathlib import Path

from curation.io_utils import atomic_write

PHASES = ("phase1", "phase2", "phase3")


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)
    return path


def loss_curves(training_dir: Path, path: Path) -> Path | None:
    """Training loss (and masked-token accuracy) against tokens seen, the three phases end to end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset, drawn = 0, False
    for phase in PHASES:
        summary_path = training_dir / phase / "final" / "phase_summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        history = summary["log_history"]
        tokens_per_step = summary["phase_config"]["tokens"] / max(summary["steps"], 1)
        x = [offset + e["step"] * tokens_per_step / 1e6 for e in history]
        loss_axis.plot(x, [float(e["loss"]) for e in history], label=phase)
        if all("masked_accuracy" in e for e in history):
            accuracy_axis.plot(x, [100 * float(e["masked_accuracy"]) for e in history], label=phase)
        offset = x[-1] if x else offset
        drawn = drawn or bool(history)
    if not drawn:
        plt.close(figure)
        return None
    loss_axis.set(xlabel="tokens seen (M)", ylabel="training loss (masked tokens)", title="MLM loss")
    accuracy_axis.set(xlabel="tokens seen (M)", ylabel="%", title="masked-token accuracy (training batches)")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, path)


def unseen_products_chart(unseen_json: Path, path: Path) -> Path | None:
    """Bar chart: masked-token top-1 of each model on the held-out products."""
    if not unseen_json.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = json.loads(unseen_json.read_text(encoding="utf-8"))["scores"]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    names = list(scores)
    values = [100 * scores[n]["accuracy"] for n in names]
    bars = axis.bar(names, values, color=["#9aa5b1", "#2f6fb0"][: len(names)])
    axis.bar_label(bars, fmt="%.1f%%")
    axis.set(ylabel="masked-token top-1 (%)", title="Unseen products (title + description)", ylim=(0, 100))
    return _save(figure, path)


def experiment_plots(out: Path, results: list[Path]) -> dict[str, Path]:
    """Draw the experiment's figures into ``out/plots`` and list every figure of the run by subject."""
    plots = out / "plots"
    found = {
        "loss curves": loss_curves(out / "training", plots / "loss_curves.png"),
        "unseen products (phase 1 vs phase 3)": unseen_products_chart(
            out / "eval" / "unseen_products.json", plots / "unseen_products.png"
        ),
        "domain distribution (curation)": out / "curation" / "report" / "domain_distribution.png",
        "ESCI similarity": next((p.with_suffix(".png") for p in results if p.stem == "esci"), None),
    }
    return {name: p for name, p in found.items() if p is not None and Path(p).is_file()}
