"""The main job's PNG figures: training loss per phase (:mod:`training.loss_plot`) and the phase 1 /
phase 3 comparison on unseen products. The domain distribution and the ESCI chart are drawn by their own
stages (curation report, ``rexbert eval esci``); :func:`experiment_plots` lists them beside these."""

from __future__ import annotations

import json
from pathlib import Path

from curation.io_utils import atomic_write
from training.loss_plot import loss_curves


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)
    return path


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
