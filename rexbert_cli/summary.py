"""SUMMARY.md of the main job: where every artefact is, what was measured, and what it means."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from rexbert_common.files import write_json_atomic, write_text_atomic


def write_json(path: Path, data: dict) -> Path:
    return write_json_atomic(path, data, indent=1, ensure_ascii=False)


def _machine() -> str:
    import torch

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{os.cpu_count()} CPU cores ({torch.backends.cpu.get_cpu_capability()}), {platform.machine()}, "
        f"torch {torch.__version__}; load average (1/5/15 min) at the end: {load}"
    )


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _unseen_section(unseen_path: Path) -> list[str]:
    if not unseen_path.is_file():
        return []
    unseen = json.loads(unseen_path.read_text(encoding="utf-8"))
    protocol = unseen["protocol"]
    lines = [
        "## What the model learned (products it never saw)",
        "",
        f"Held-out Icecat products (`{unseen['heldout_file']}`): title + short description, truncated to "
        f"{protocol['max_length']} tokens, {protocol['mask_share']:.0%} of the tokens masked one at a time; "
        "top-1 = the model's first guess is the original token."
        + (f" Computed in {protocol['precision']['precision']}." if "precision" in protocol else ""),
        "",
        "| model | masked-token top-1 | masked tokens | products |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | **{s['accuracy']:.1%}** | {s['masked_tokens']:,} | {s['texts']} |"
        for name, s in unseen["scores"].items()
    ]
    fill = unseen["fill_mask"]
    if fill["prompts"]:
        lines += ["", "Fill-mask on unseen product titles (top-3 answers with probabilities):", ""]
        names = list(fill["answers"])
        lines += ["| title | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for i, prompt in enumerate(fill["prompts"]):
            cells = [
                ", ".join(f"`{_cell(token)}` {p:.2f}" for token, p in fill["answers"][n][i]) for n in names
            ]
            lines.append(f"| {_cell(prompt)} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_summary(
    out: Path,
    config,
    timings: dict[str, float],
    models: dict[str, str],
    results: list[Path],
    unseen_path: Path,
    plots: dict[str, Path],
) -> Path:
    from evaluation.reports import markdown_report, read_results
    from rexbert_common.data import data_dir

    curation = out / "curation"
    lines = [
        "# RexBERT main job",
        "",
        f"Data: `{data_dir()}`. Config: the experiment below, recipe `{config.training.recipe}`.",
        "",
        "## Where everything is",
        "",
        f"- held-out / training product files: `{out / 'data'}`",
        f"- curated corpus: `{curation / 'dataset'}` (report: `{curation / 'report' / 'report.md'}`)",
    ]
    lines += [f"- model after {name}: `{path}`" for name, path in models.items()]
    lines += [
        f"- model card: `{Path(list(models.values())[-1]) / 'README.md'}` (Hub-ready folder; "
        "`rexbert push` uploads it)",
        f"- evaluation results: `{out / 'eval'}`",
    ]
    lines += [f"- plot, {name}: `{path}`" for name, path in plots.items()]
    lines += [""] + _unseen_section(unseen_path)
    records = read_results([p for p in results if p.is_file()]) if results else []
    if records:
        lines += ["## Evaluations", "", markdown_report(records), ""]
    lines += ["## Time", "", "| stage | seconds (this invocation) |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    lines += [f"| **total** | **{sum(timings.values()):.0f}** |", "", f"Machine: {_machine()}.", ""]
    path = out / "SUMMARY.md"
    return write_text_atomic(path, "\n".join(lines) + "\n")
