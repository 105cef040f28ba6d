"""The study's report: mean ± sd and a 95% t-interval over seeds, paired differences, JSON and plots.

``report.md`` (one table of every arm, one of differences to the reference arm paired by seed),
``report.json`` (every statistic and every cell's numbers) and two PNGs: the loss curves of all arms on
one plot, and top-1 accuracy bars with their 95% intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ablation.grid import write_json_atomic

# (metric key, column title, shown as a percentage)
TABLE_METRICS = (
    ("product_title_collator_top1", "title top-1 (collator)", True),
    ("product_description_collator_top1", "description top-1 (collator)", True),
    ("general_collator_top1", "general top-1 (collator)", True),
    ("entity_top1", "entity top-1", True),
    ("product_title_span_top1", "title top-1 (span)", True),
    ("product_description_span_top1", "description top-1 (span)", True),
    ("general_span_top1", "general top-1 (span)", True),
    ("esci_spearman", "ESCI Spearman", False),
    ("final_train_loss", "final train loss", False),
)
BAR_METRICS = (
    "product_title_collator_top1",
    "product_description_collator_top1",
    "general_collator_top1",
    "entity_top1",
    "product_title_span_top1",
    "product_description_span_top1",
    "general_span_top1",
)


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """n, mean, sample sd and the ``confidence`` t-interval of the mean (None where n < 2)."""
    from scipy import stats

    values = [float(v) for v in values if v is not None]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci": None}
    mean = sum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if sd == 0:
        return {"n": n, "mean": mean, "sd": 0.0, "ci": [mean, mean]}
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return {"n": n, "mean": mean, "sd": sd, "ci": [float(low), float(high)]}


def aggregate(results: list[dict], arms: list[str], reference: str) -> dict:
    """Per arm and metric: the seeds' summary; per arm and metric: the difference to ``reference`` over the
    seeds both finished (paired: the RexBERT arms of a seed share phases 1-2 and data order)."""
    by_arm: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for result in results:
        by_arm.setdefault(result["variant"], {})[result["seed"]] = result["metrics"]
    metrics = sorted({m for r in results for m in r["metrics"]})
    summary = {
        arm: {m: summarize([cell[m] for cell in seeds.values() if m in cell]) for m in metrics}
        for arm, seeds in by_arm.items()
    }
    differences = {}
    for arm, seeds in by_arm.items():
        if arm == reference:
            continue
        shared = sorted(set(seeds) & set(by_arm.get(reference, {})))
        differences[arm] = {
            m: summarize(
                [
                    seeds[s][m] - by_arm[reference][s][m]
                    for s in shared
                    if seeds[s].get(m) is not None and by_arm[reference][s].get(m) is not None
                ]
            )
            for m in metrics
        }
    return {"reference": reference, "arms": summary, "differences_to_reference": differences}


def _cell(stat: dict, percent: bool) -> str:
    if not stat or stat["mean"] is None:
        return "–"
    scale = 100 if percent else 1
    text = f"{stat['mean'] * scale:.2f}"
    if stat["sd"] is not None:
        text += f" ± {stat['sd'] * scale:.2f}"
    if stat["ci"] is not None:
        text += f" [{stat['ci'][0] * scale:.2f}, {stat['ci'][1] * scale:.2f}]"
    return text


def _difference_cell(stat: dict, percent: bool) -> str:
    text = _cell(stat, percent)
    if stat and stat["ci"] is not None and (stat["ci"][0] > 0 or stat["ci"][1] < 0):
        text += " *"
    return text


def _copy_row(notes: dict | None) -> list[str]:
    """The copy baseline's row of the arms table (masked-token columns only; "–" elsewhere)."""
    scores = (notes or {}).get("copy_baseline")
    if not scores:
        return []
    cells = [
        f"{scores[key] * 100:.2f}" if key in scores and percent else "–" for key, _, percent in TABLE_METRICS
    ]
    return ["| " + " | ".join(["copy (model-free baseline)", "–", *cells]) + " |"]


def _notes_lines(notes: dict | None) -> list[str]:
    if not notes:
        return []
    lines = [
        "",
        "## Evaluation texts",
        "",
        "Held-out texts scored per field: "
        + ", ".join(f"{k} {v}" for k, v in notes["scored_texts"].items())
        + f"; entity texts {notes['entity_texts']}. Dropped from the distinct held-out candidates because a "
        "line occurs verbatim in a training document, or nearly repeats a training line or paragraph (word "
        "Jaccard >= 0.8, MinHash):",
        "",
        "| field | candidates | verbatim | near-duplicate | near-duplicate share |",
        "|---|---|---|---|---|",
    ]
    for name, row in notes["heldout_filter"].items():
        share = f"{row['near_duplicate_share'] * 100:.1f}%"
        lines.append(
            f"| {name} | {row['candidates']} | {row['verbatim']} | {row['near_duplicate']} | {share} |"
        )
    if any(notes.get("validation_texts", {}).values()):
        lines += [
            "",
            "Validation texts (after the scored ones, never scored): "
            + ", ".join(f"{k} {v}" for k, v in notes["validation_texts"].items())
            + ".",
        ]
    lines += [
        "",
        "The copy baseline predicts a masked token by copying, from the same block, the token that follows "
        "its left context elsewhere (no model): an arm is only worth its distance above that row.",
    ]
    return lines


def _sweep_lines(sweep: dict | None) -> list[str]:
    if not sweep:
        return []
    lines = [
        "",
        "## Plain arm (d): AdamW peak learning rate",
        "",
        f"Each rate trained the plain arm once (seed {sweep['points'][0]['seed']}, the full budget) and was "
        f"scored on the validation texts ({sweep['criterion']}); the best trains every seed.",
        "",
        "| peak LR | validation top-1 (mean, %) | chosen |",
        "|---|---|---|",
    ]
    for point in sweep["points"]:
        chosen = "✓" if point["lr"] == sweep["chosen"] else ""
        lines.append(f"| {point['lr']:g} | {point['score'] * 100:.2f} | {chosen} |")
    return lines


def markdown(
    stats: dict,
    results: list[dict],
    command: str,
    settings: dict,
    notes: dict | None = None,
    sweep: dict | None = None,
) -> str:
    arms = list(stats["arms"])
    header = ["arm", "seeds", *(title for _, title, _ in TABLE_METRICS)]
    lines = [
        "# Ablation report",
        "",
        f"Command: `{command}`",
        "",
        f"Tokens per cell: {settings['budget']} (consumed: {settings['consumed']}); "
        f"seeds: {settings['seeds']}.",
        "Accuracies in %; each cell is mean ± sd [95% t-interval of the mean] over seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for arm in arms:
        row = stats["arms"][arm]
        seeds = max((s["n"] for s in row.values()), default=0)
        cells = [_cell(row.get(key), percent) for key, _, percent in TABLE_METRICS]
        lines.append("| " + " | ".join([arm, str(seeds), *cells]) + " |")
    lines += _copy_row(notes)
    reference = stats["reference"]
    lines += [
        "",
        f"## Difference to `{reference}` (paired by seed)",
        "",
        "Mean difference ± sd [95% t-interval]; `*` marks an interval that excludes 0.",
        "",
        "| arm | " + " | ".join(title for _, title, _ in TABLE_METRICS) + " |",
        "|---|" + "---|" * len(TABLE_METRICS),
    ]
    for arm, row in stats["differences_to_reference"].items():
        cells = [_difference_cell(row.get(key), percent) for key, _, percent in TABLE_METRICS]
        lines.append("| " + " | ".join([arm, *cells]) + " |")
    lines += _sweep_lines(sweep) + _notes_lines(notes)
    lines += ["", "![loss curves](loss_curves.png)", "", "![top-1 accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def plot_loss_curves(results: list[dict], arms: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    colours = plt.get_cmap("tab10")
    for i, arm in enumerate(arms):
        for j, result in enumerate(r for r in results if r["variant"] == arm):
            x = [p[0] / 1e6 for p in result["loss_curve"]]
            y = [p[1] for p in result["loss_curve"]]
            axis.plot(x, y, color=colours(i % 10), alpha=0.8, linewidth=1, label=arm if j == 0 else None)
    axis.set_xlabel("tokens (millions)")
    axis.set_ylabel("training loss (masked-token CE)")
    axis.set_title("Training loss of every arm and seed (masking rates differ between arms and phases)")
    axis.title.set_fontsize(9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_accuracy(stats: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = list(stats["arms"])
    width = 0.8 / max(1, len(arms))
    figure, axis = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(BAR_METRICS))
    for i, arm in enumerate(arms):
        means, errors = [], [[], []]
        for metric in BAR_METRICS:
            stat = stats["arms"][arm].get(metric) or {"mean": None}
            mean = (stat["mean"] or 0.0) * 100
            low, high = stat.get("ci") or [stat["mean"] or 0.0] * 2
            means.append(mean)
            errors[0].append(mean - low * 100)
            errors[1].append(high * 100 - mean)
        axis.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=errors, capsize=3, label=arm)
    labels = [m.replace("_top1", "").replace("product_", "").replace("_", "\n") for m in BAR_METRICS]
    axis.set_xticks(x, labels, fontsize=8)
    axis.set_ylabel("top-1 accuracy (%), 95% t-interval over seeds")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(
    results: list[dict],
    arms: list[str],
    reference: str,
    folder: Path,
    command: str,
    notes: dict | None = None,
    sweep: dict | None = None,
) -> Path:
    """Write report.md, report.json, loss_curves.png and accuracy.png into ``folder``; returns report.md.

    ``notes``: the study's evaluation texts in numbers (``grid.evaluation_notes``); ``sweep``: the plain
    arm's LR sweep (``sweep.sweep_summary``)."""
    folder.mkdir(parents=True, exist_ok=True)
    stats = aggregate(results, arms, reference)
    settings = {
        "budget": sorted({r["tokens"]["budget"] for r in results}),
        "consumed": sorted({r["tokens"]["consumed"] for r in results}),
        "seeds": sorted({r["seed"] for r in results}),
    }
    cells = [{k: v for k, v in r.items() if k != "loss_curve"} for r in results]
    document = {"command": command, **settings, **stats, "evaluation_texts": notes, "lr_sweep": sweep}
    write_json_atomic(folder / "report.json", {**document, "cells": cells})
    plot_loss_curves(results, arms, folder / "loss_curves.png")
    plot_accuracy(stats, folder / "accuracy.png")
    path = folder / "report.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(markdown(stats, results, command, settings, notes, sweep), encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["aggregate", "summarize", "write_report"]
