"""Metrics via scipy / sklearn (``evaluate.load`` fetches scripts from the Hub and fails offline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def correlations(predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (scipy)."""
    from scipy.stats import pearsonr, spearmanr

    predictions, references = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    if len(predictions) < 2:
        raise ValueError("correlations need at least two pairs")
    return {
        "pearson": float(pearsonr(predictions, references)[0]),
        "spearman": float(spearmanr(predictions, references)[0]),
    }


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(references, predictions))


def topk_accuracy(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of targets whose rank (entries strictly above them) is below k, for each k."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("top-k accuracy of zero masked targets is undefined")
    return {k: float((ranks < k).mean()) for k in ks}


def group_ranks(ranks: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    """Rank of a unit (word) = max rank of its tokens: the word is correct at k iff all tokens are."""
    ranks, groups = np.asarray(ranks), np.asarray(groups)
    if ranks.size == 0:
        return ranks
    _, inverse = np.unique(groups, return_inverse=True)
    out = np.zeros(inverse.max() + 1, dtype=ranks.dtype)
    np.maximum.at(out, inverse, ranks)
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
