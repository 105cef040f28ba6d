"""Span masking for MLM: Poisson-length spans, document-aware, 80/10/10, plus Guided MLM.

Every row of a packed batch is masked independently with its own ``numpy`` generator, so a row's
mask is a pure function of ``(seed, row id)``: identical across resumes and process counts.

Algorithm for one row (target ratio ``r`` over the ``n`` maskable tokens, i.e. not special, not pad):
  budget = stochastic_round(r * n)
  guided rows: mined spans (shuffled) are masked first, whole or truncated to the budget;
  then repeat: pick a random unmasked maskable start, draw a length L ~ Poisson(λ) conditioned on
  L >= 1, extend right while the token is maskable, unmasked, in the same document and within budget.
Each selected token then becomes [MASK] (80%), a random non-special token (10%) or stays (10%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = -100


@dataclass
class MaskingConfig:
    """How tokens are selected and corrupted.

    Args:
        mlm_probability: fraction of maskable tokens selected per row (ModernBERT: 0.30 beats 0.15;
            RexBERT phase 3 uses 0.10-0.15).
        span_lambda: λ of the Poisson span length (conditioned on >= 1, so the expected drawn span is
            λ / (1 - exp(-λ))); 1.0 with ``span_lambda <= 0`` means single-token masking.
        mask_replace_prob: share of selected tokens replaced by [MASK].
        random_replace_prob: share replaced by a random non-special token (the rest stay unchanged).
        guided_fraction: share of the sequences in each batch masked on mined spans first (Guided MLM;
            the paper uses ~5% in phase 3, 0 elsewhere).
    """

    mlm_probability: float = 0.30
    span_lambda: float = 3.0
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    guided_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"masking.mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if (
            self.mask_replace_prob < 0
            or self.random_replace_prob < 0
            or (self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9)
        ):
            raise ValueError(
                "masking.mask_replace_prob + random_replace_prob must be within [0, 1], got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}"
            )
        if not 0.0 <= self.guided_fraction <= 1.0:
            raise ValueError(f"masking.guided_fraction must be in [0, 1], got {self.guided_fraction}")

    @property
    def expected_span_length(self) -> float:
        """Mean of the drawn span length (zero-truncated Poisson)."""
        lam = self.span_lambda
        return 1.0 if lam <= 0 else lam / (1.0 - math.exp(-lam))


@dataclass
class MaskingStats:
    """Counts for logging (summed over a batch)."""

    maskable: int = 0
    selected: int = 0
    spans: int = 0
    guided_sequences: int = 0
    guided_spans: int = 0
    span_lengths: list[int] = field(default_factory=list)


class SpanMasker:
    """Applies :class:`MaskingConfig` to token rows.

    Args:
        config: the masking configuration.
        mask_token_id: id of [MASK].
        special_token_ids: ids never masked (cls, sep, pad, ...).
        vocab_size: random replacements are drawn from ``[0, vocab_size)`` minus the special ids.
    """

    def __init__(
        self, config: MaskingConfig, mask_token_id: int, special_token_ids: Sequence[int], vocab_size: int
    ) -> None:
        self.config = config
        self.mask_token_id = int(mask_token_id)
        self.special_ids = np.asarray(sorted(set(int(i) for i in special_token_ids)), dtype=np.int64)
        self.random_pool = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), self.special_ids)

    # -- one row ---------------------------------------------------------------------------------
    def select_row(
        self,
        ids: np.ndarray,
        doc_ids: np.ndarray | None,
        valid: np.ndarray,
        rng: np.random.Generator,
        guided_spans: Sequence[tuple[int, int]] = (),
        stats: MaskingStats | None = None,
    ) -> np.ndarray:
        """Boolean selection mask for one row.

        Args:
            ids: (S,) token ids.  doc_ids: (S,) document id per token or None (one document).
            valid: (S,) True where the token is real (attention mask) -- pads are never selected.
            rng: the row's generator.  guided_spans: token spans [start, end) mined in this row.
        """
        cfg = self.config
        maskable = valid & ~np.isin(ids, self.special_ids)  # (S,)
        n = int(maskable.sum())
        selected = np.zeros(ids.shape[0], dtype=bool)
        if n == 0:
            return selected
        expected = cfg.mlm_probability * n
        budget = int(math.floor(expected) + (rng.random() < expected - math.floor(expected)))
        budget = min(budget, n)
        count = 0
        if stats is not None:
            stats.maskable += n
        if guided_spans:
            order = rng.permutation(len(guided_spans))
            used = 0
            for k in order:
                if count >= budget:
                    break
                start, end = guided_spans[k]
                span = np.arange(start, end)
                span = span[maskable[span] & ~selected[span]][: budget - count]
                if span.size:
                    selected[span] = True
                    count += span.size
                    used += 1
            if stats is not None:
                stats.guided_spans += used
        same_doc_next = (
            np.ones(ids.shape[0], dtype=bool)
            if doc_ids is None
            else np.append(doc_ids[1:] == doc_ids[:-1], False)
        )
        length_of_row = ids.shape[0]
        # Draw candidate starts in batches to keep the Python loop short.
        while count < budget:
            free = np.flatnonzero(maskable & ~selected)
            if free.size == 0:
                break
            starts = rng.choice(free, size=min(free.size, max(8, (budget - count) // 2)), replace=False)
            lengths = self._draw_lengths(rng, starts.size)
            for start, length in zip(starts.tolist(), lengths.tolist()):
                if count >= budget:
                    break
                if selected[start]:
                    continue
                pos, placed = start, 0
                while placed < length and count < budget:
                    selected[pos] = True
                    placed += 1
                    count += 1
                    nxt = pos + 1
                    if nxt >= length_of_row or not same_doc_next[pos] or not maskable[nxt] or selected[nxt]:
                        break
                    pos = nxt
                if stats is not None:
                    stats.spans += 1
                    stats.span_lengths.append(placed)
        if stats is not None:
            stats.selected += count
        return selected

    def _draw_lengths(self, rng: np.random.Generator, size: int) -> np.ndarray:
        lam = self.config.span_lambda
        if lam <= 0:
            return np.ones(size, dtype=np.int64)
        lengths = rng.poisson(lam, size=size)
        while (zeros := lengths == 0).any():  # zero-truncated Poisson by rejection
            lengths[zeros] = rng.poisson(lam, size=int(zeros.sum()))
        return lengths

    def corrupt_row(
        self, ids: np.ndarray, selected: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply 80/10/10 to the selected positions. Returns (input_ids, labels), both (S,)."""
        labels = np.where(selected, ids, IGNORE_INDEX)
        out = ids.copy()
        where = np.flatnonzero(selected)
        u = rng.random(where.size)
        to_mask = where[u < self.config.mask_replace_prob]
        to_random = where[
            (u >= self.config.mask_replace_prob)
            & (u < self.config.mask_replace_prob + self.config.random_replace_prob)
        ]
        out[to_mask] = self.mask_token_id
        out[to_random] = self.random_pool[rng.integers(0, self.random_pool.size, size=to_random.size)]
        return out, labels

    # -- a batch ---------------------------------------------------------------------------------
    def guided_row_probability(self, n_rows: int, n_rows_with_spans: int) -> float:
        """Per-row probability so that ~guided_fraction of *all* rows are guided, using only rows
        that have mined spans (general-text rows have none)."""
        if n_rows_with_spans == 0 or self.config.guided_fraction <= 0:
            return 0.0
        return min(1.0, self.config.guided_fraction * n_rows / n_rows_with_spans)

    def mask_row(
        self,
        ids: np.ndarray,
        doc_ids: np.ndarray | None,
        valid: np.ndarray,
        rng: np.random.Generator,
        spans: Sequence[tuple[int, int]],
        guided_probability: float,
        stats: MaskingStats,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Select and corrupt one row; it is guided (mined spans first) with ``guided_probability`` when
        it has spans. Returns (input_ids, labels), both shaped like ``ids``."""
        is_guided = bool(len(spans)) and guided_probability > 0 and rng.random() < guided_probability
        stats.guided_sequences += int(is_guided)
        selected = self.select_row(ids, doc_ids, valid, rng, spans if is_guided else (), stats)
        return self.corrupt_row(ids, selected, rng)

    def mask_batch(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        document_ids: np.ndarray | None,
        rngs: Sequence[np.random.Generator],
        guided_spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, MaskingStats]:
        """Mask a (B, S) batch. ``rngs[b]`` drives row b. Returns (input_ids, labels, stats)."""
        stats = MaskingStats()
        out = np.empty_like(input_ids)
        labels = np.empty_like(input_ids)
        n_with = sum(1 for s in guided_spans or () if s)
        p_guided = self.guided_row_probability(input_ids.shape[0], n_with)
        for b, rng in enumerate(rngs):
            out[b], labels[b] = self.mask_row(
                input_ids[b],
                None if document_ids is None else document_ids[b],
                attention_mask[b] > 0,
                rng,
                guided_spans[b] if guided_spans else (),
                p_guided,
                stats,
            )
        return out, labels, stats
