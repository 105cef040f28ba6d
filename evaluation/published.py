"""Published GLUE dev figures, shown beside measured ones in reports -- never mixed with them.

Every figure is copied from a paper table and carries that citation; reports print them in their own,
labelled columns. Only figures that could be read in the source are listed: ModernBERT's and Ettin's own
papers report further GLUE numbers, but their tables could not be retrieved to check here, so they are
not quoted (see docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

REXBERT_TABLE4 = (
    "RexBERT paper (Bajaj & Garg), Table 4 'GLUE benchmark results', dev sets; "
    "STS-B's correlation type is not stated there"
)


@dataclass(frozen=True)
class PublishedScore:
    """One published figure.

    Args:
        model: the model as the source names it.
        size: RexBERT size category the source compares it in (micro / mini / base / large).
        task: GLUE task (``sst2``, ``qnli``, ``qqp``, ``mnli``, ``stsb``).
        metric: ``accuracy``, or ``correlation`` where the source does not say Pearson or Spearman.
        value: fraction in [0, 1] (the source's percentage / 100).
        source: exact citation.
    """

    model: str
    size: str
    task: str
    metric: str
    value: float
    source: str


def _table4() -> tuple[PublishedScore, ...]:
    columns = (  # (model, size) in Table 4's column order
        ("RexBERT-large", "large"),
        ("ModernBERT-large", "large"),
        ("RexBERT-base", "base"),
        ("ModernBERT-base", "base"),
        ("RexBERT-mini", "mini"),
        ("DistilBERT", "mini"),
        ("RexBERT-micro", "micro"),
        ("ettin-17m", "micro"),
    )
    rows = {  # task: (metric, percentages in column order)
        "sst2": ("accuracy", (95.76, 96.67, 94.27, 94.72, 92.78, 89.23, 90.37, 88.42)),
        "qnli": ("accuracy", (94.00, 94.82, 92.75, 90.88, 91.51, 87.99, 85.59, 85.30)),
        "qqp": ("accuracy", (89.84, 89.73, 89.28, 89.26, 88.52, 87.42, 85.90, 85.54)),
        "mnli": ("accuracy", (92.06, 90.14, 87.23, 88.71, 85.23, 80.75, 78.26, 77.66)),
        "stsb": ("correlation", (91.80, 91.33, 89.55, 85.92, 88.53, 84.84, 83.00, 82.62)),
    }
    return tuple(
        PublishedScore(model, size, task, metric, round(value / 100.0, 6), REXBERT_TABLE4)
        for task, (metric, values) in rows.items()
        for (model, size), value in zip(columns, values, strict=True)
    )


PUBLISHED_GLUE = _table4()


def published_glue(sizes: set[str] | None = None) -> list[PublishedScore]:
    """The published GLUE figures of the given size categories (None: all)."""
    return [s for s in PUBLISHED_GLUE if sizes is None or s.size in sizes]
