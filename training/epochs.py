"""How many epochs of each source a phase will draw: printed before any build, so an over-repeated
small source (e.g. Wikipedia sampled dozens of times) is seen before days of preparation."""

from __future__ import annotations

import numpy as np

from training.data import LoadedSource, source_files
from training.mixture import cumulative_domain_share, temperature_weights
from training.recipe import PhaseConfig

SAMPLE_DOCS = 256


def _mean_chars(source: LoadedSource) -> float:
    sample = list(source.sample(SAMPLE_DOCS, np.random.default_rng(0)))
    return sum(len(t) for t in sample) / max(1, len(sample))


def source_documents(source: LoadedSource) -> int | None:
    """Documents in the source without reading it: in memory, or rows in the footers of streaming
    parquet files (other streams, e.g. json/text files or Hub datasets, are not sized: None)."""
    if source.texts is not None:
        return len(source.texts)
    files = source_files(source.config)
    if not files or not all(f.lower().endswith(".parquet") for f in files):
        return None
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return rows if source.config.max_docs is None else min(rows, source.config.max_docs)


def epoch_report(
    general, domain, phase: PhaseConfig, temperature: float, chars_per_token: dict
) -> list[dict]:
    """Per source: expected tokens drawn by the phase, estimated source tokens, and their ratio (epochs).

    The groups split the phase's tokens by the integral of the domain schedule and a source takes its
    normalised ``weight^(1/T)`` of its group's tokens (``mixture.MixtureSampler``).
    """
    report = []
    domain_share = cumulative_domain_share(phase.mixture, 1.0)
    groups = [(general, 1 - domain_share, False), (domain, domain_share, True)]
    if not general or not domain:  # the only group gets every token
        groups = [(g or [], 1.0, d) for g, _, d in groups if g]
    for group, share, is_domain in groups:
        doc_tokens = np.array([_mean_chars(s) / chars_per_token[is_domain] for s in group])
        weights = temperature_weights([s.config.weight for s in group], temperature)
        for source, w, per_doc in zip(group, weights, doc_tokens):
            drawn = phase.tokens * share * w
            docs = source_documents(source)
            size = None if docs is None else docs * per_doc
            report.append(
                {
                    "source": source.config.name,
                    "drawn_tokens": drawn,
                    "source_tokens": size,
                    "epochs": None if not size else drawn / size,
                }
            )
    return report


def format_report(phase_name: str, report: list[dict]) -> str:
    parts = []
    for r in report:
        if r["epochs"] is None:
            parts.append(f"{r['source']} ≈{r['drawn_tokens']:.3g} tokens (size unknown: not counted)")
        else:
            drawn, size = f"{r['drawn_tokens']:.3g}", f"{r['source_tokens']:.3g}"
            parts.append(f"{r['source']} ≈{r['epochs']:.3g} epochs (≈{drawn} of ≈{size} tokens)")
    return f"{phase_name}: " + "; ".join(parts)
