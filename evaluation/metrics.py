"""Metrics via scipy / sklearn (``evaluate.load`` fetches scripts from the Hub and fails offline).

Written here only where no library computes it: the expectation over the orders of tied scores (top-k
hits, reciprocal rank), which sklearn / pytrec_eval / MTEB resolve by an arbitrary order instead.
"""

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


def topk_hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N, 2) ``[above, tied]`` -> (N,) probability that the target is in the top k.

    Under a uniformly random order of the ``tied + 1`` equal entries, the target takes each of the
    positions ``above .. above + tied`` with equal probability, so it is in the top k with probability
    ``clip((k - above) / (tied + 1), 0, 1)``: 1 or 0 without ties, k/V for constant logits.
    """
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1, 2)
    above, tied = ranks[:, 0], ranks[:, 1]
    return np.clip((k - above) / (tied + 1.0), 0.0, 1.0)


def topk_accuracy(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Expected top-k accuracy (tie-aware, see :func:`topk_hits`) of (N, 2) ``[above, tied]`` ranks."""
    ranks = np.asarray(ranks).reshape(-1, 2)
    if ranks.shape[0] == 0:
        raise ValueError("top-k accuracy of zero masked targets is undefined")
    return {k: float(topk_hits(ranks, k).mean()) for k in ks}


def group_topk_accuracy(ranks: np.ndarray, groups: Sequence[int], ks: Sequence[int]) -> dict[int, float]:
    """Top-k accuracy of units (words): a unit is recovered at k iff every one of its tokens is.

    Ties are broken independently at each position, so a unit's hit probability is the product of its
    tokens' (:func:`topk_hits`).
    """
    groups = np.asarray(groups)
    if groups.size == 0:
        raise ValueError("top-k accuracy of zero masked words is undefined")
    _, inverse = np.unique(groups, return_inverse=True)
    out = {}
    for k in ks:
        hits = np.ones(inverse.max() + 1)
        np.multiply.at(hits, inverse, topk_hits(ranks, k))
        out[k] = float(hits.mean())
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# ESCI's graded gains for ranking metrics (Reddy et al. 2022, the KDD Cup task 1 nDCG).
ESCI_GAINS = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}


def expected_reciprocal_rank(scores: np.ndarray, relevant: np.ndarray) -> float:
    """1 / rank of the first relevant document, averaged over the orders of tied scores.

    The best relevant score ``m`` has ``above`` documents strictly higher and ``t`` documents (``r`` of them
    relevant) tied at ``m``; under a uniformly random order of the tied ones the first relevant document
    lands ``j`` places into the tie with probability ``C(t - j, r - 1) / C(t, r)``.
    """
    from math import comb

    best = scores[relevant].max()
    above = int((scores > best).sum())
    tied = scores == best
    t, r = int(tied.sum()), int((tied & relevant).sum())
    return sum(comb(t - j, r - 1) / comb(t, r) / (above + j) for j in range(1, t - r + 2))


def expected_average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Average precision averaged over the orders of tied scores (McSherry & Najork, ECIR 2008).

    A run of ``t`` tied documents holding ``r`` relevant ones, after ``n`` documents (``r0`` of them relevant)
    ranked strictly higher: a relevant document of the run lands at tie position ``j`` (1..t) with
    probability 1/t, and then has ``(j - 1)(r - 1)/(t - 1)`` other relevant documents of the run above it
    on average, so the run adds ``r/t * sum_j (r0 + 1 + (j - 1)(r - 1)/(t - 1)) / (n + j)`` to the sum of
    precisions at the relevant documents. Without ties this is scikit-learn's ``average_precision_score``
    (which instead counts a tie as one threshold, i.e. every tied document at the tie's last rank).
    """
    scores, relevant = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=bool)
    total = int(relevant.sum())
    if total == 0:
        raise ValueError("average precision needs a relevant document")
    values, run_sizes = np.unique(-scores, return_counts=True)  # runs of equal scores, best first
    run_relevant = np.bincount(np.searchsorted(values, -scores[relevant]), minlength=len(values))
    precision_sum, above, relevant_above = 0.0, 0, 0
    for t, r in zip(run_sizes.tolist(), run_relevant.tolist()):
        if r:
            j = np.arange(1, t + 1)
            others = (j - 1) * (r - 1) / (t - 1) if t > 1 else 0.0
            precision_sum += r / t * float(np.sum((relevant_above + 1 + others) / (above + j)))
        above, relevant_above = above + t, relevant_above + r
    return precision_sum / total


def ranking_metrics(
    query_ids: Sequence,
    scores: Sequence[float],
    gains: Sequence[float],
    k: int = 10,
    relevant_min_gain: float = 1.0,
) -> dict[str, float]:
    """Per-query retrieval metrics, averaged over queries.

    Args:
        query_ids: (N,) query of each (query, document) pair.
        scores: (N,) model score of each pair (higher = ranked first).
        gains: (N,) graded relevance (ESCI: :data:`ESCI_GAINS`).
        relevant_min_gain: a document is *relevant* for MAP / MRR when its gain is at least this; the
            default 1.0 counts Exact matches only. MTEB (``pytrec_eval``) counts every positive gain
            (E, S and C): pass the smallest positive gain to compute its definition.

    Returns:
        ``ndcg@k`` (scikit-learn's ``ndcg_score`` with the gains as relevance: tied documents share their
        expected gain), ``map`` (:func:`expected_average_precision`) and ``mrr``
        (:func:`expected_reciprocal_rank`): all three are expectations over the orders of tied scores, so
        no tie is won or lost by the order of the input. Also the number of queries behind each: nDCG skips
        queries with a single document or no positive gain, MAP / MRR queries with no relevant document.
        MTEB (``pytrec_eval``) orders tied scores by document id instead, so the two differ only on queries
        with exactly tied scores.
    """
    from sklearn.metrics import ndcg_score

    frame_ids, scores, gains = np.asarray(query_ids), np.asarray(scores, float), np.asarray(gains, float)
    ndcg, ap, rr = [], [], []
    for query in dict.fromkeys(frame_ids.tolist()):
        rows = frame_ids == query
        s, g = scores[rows], gains[rows]
        if len(s) > 1 and g.max() > 0:
            ndcg.append(ndcg_score(g[None, :], s[None, :], k=k))
        relevant = g >= relevant_min_gain
        if relevant.any():
            ap.append(expected_average_precision(s, relevant))
            rr.append(expected_reciprocal_rank(s, relevant))
    if not ndcg and not ap:
        raise ValueError("ranking metrics need a query with a positive gain")
    return {
        f"ndcg@{k}": float(np.mean(ndcg)) if ndcg else float("nan"),
        "map": float(np.mean(ap)) if ap else float("nan"),
        "mrr": float(np.mean(rr)) if rr else float("nan"),
        "ndcg_queries": len(ndcg),
        "map_queries": len(ap),
    }
