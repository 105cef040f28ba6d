"""How many epochs of each source a phase will draw: printed before any build, so an over-repeated small
source (e.g. Wikipedia sampled dozens of times) is seen before days of preparation."""

from __future__ import annotations

from training.mixture import MixturePlan


def epoch_report(plan: MixturePlan, sources: list[dict]) -> list[dict]:
    """Per source (``sources``: the setup's measured ``documents`` and ``mean_tokens``, in the plan's
    order): tokens the phase draws, tokens the source holds, and their ratio -- how many epochs of it the
    phase repeats (each in a new order)."""
    report = []
    for number, measured in enumerate(sources):
        drawn = plan.due(number, 1.0)
        size = measured["documents"] * measured["mean_tokens"]
        report.append(
            {"source": measured["name"], "drawn_tokens": drawn, "source_tokens": size, "epochs": drawn / size}
        )
    return report


def format_report(phase_name: str, report: list[dict]) -> str:
    parts = [
        f"{r['source']} ≈{r['epochs']:.3g} epochs "
        f"(≈{r['drawn_tokens']:.3g} of ≈{r['source_tokens']:.3g} tokens)"
        for r in report
        if r["drawn_tokens"] > 0
    ]
    return f"{phase_name}: " + "; ".join(parts)
