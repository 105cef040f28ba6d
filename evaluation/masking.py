"""Evaluation masks for masked-token recovery: fixed per example and seed.

Three protocols build :class:`MaskedExample` objects from tokenised blocks:

* ``span`` (token level, same tokenizer): spans of whole pre-tokenizer words are replaced by the mask
  token until 15% of the block's non-special tokens are masked. Every masked token is scored.
* ``word`` (cross-tokenizer): words are whitespace-split words of the block *text*; 15% of the words are
  chosen in spans, independently of any tokenizer, and every sub-token of a chosen word is masked. A word
  counts as recovered at k when every one of its sub-tokens is recovered at k.
* ``collator``: ``transformers.DataCollatorForLanguageModeling`` at 15% (80% mask / 10% random / 10%
  kept), i.e. the protocol behind most published MLM numbers. Every labelled token is scored.

The random generator of each example is seeded from ``(seed, content)`` -- the token ids for ``span`` and
``collator``, the text for ``word`` -- so masks do not depend on batch order, bucketing or the model, and
two models sharing a tokenizer (or, for ``word``, a text) are scored on identical positions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPAN_GEOMETRIC_P = 0.2  # SpanBERT: span length ~ Geometric(0.2), clipped at 10 -> mean ~3.8 words
SPAN_MAX_LEN = 10


@dataclass
class MaskedExample:
    """One masked block, ready for the model.

    Args:
        input_ids: (S,) token ids after masking, special tokens included.
        positions: ascending positions of the scored (masked) tokens.
        targets: original token id at each position.
        groups: scoring unit of each position (word index for ``word``; position index otherwise);
            a unit is recovered at k only if all its positions are.
        text_ids: (S,) index of the packed text each token comes from, -1 for special tokens (token
            protocols; None when unknown). Only the ``copy`` baseline reads it.
    """

    input_ids: list[int]
    positions: list[int]
    targets: list[int]
    groups: list[int]
    text_ids: list[int] | None = None


def example_rng(seed: int, content: str | Sequence[int]) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the example's content (stable across runs)."""
    payload = content if isinstance(content, str) else ",".join(map(str, content))
    digest = hashlib.sha256(f"{seed}\x00{payload}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_span_units(unit_costs: Sequence[int], budget: int, rng: np.random.Generator) -> np.ndarray:
    """Choose units (words) in contiguous spans until their summed cost reaches ``budget``.

    Span lengths are Geometric(p=0.2) clipped at 10 units; a span that would overlap an already chosen unit
    is redrawn. The last span stops as soon as the budget is met, so the overshoot is below one unit.

    Returns:
        (n_units,) bool array, True for chosen units.
    """
    n_units = len(unit_costs)
    chosen = np.zeros(n_units, dtype=bool)
    if n_units == 0 or budget <= 0:
        return chosen
    spent, tries = 0, 0
    while spent < budget and tries < 100 * n_units:
        length = min(int(rng.geometric(SPAN_GEOMETRIC_P)), SPAN_MAX_LEN)
        start = int(rng.integers(0, n_units))
        end = min(start + length, n_units)
        if chosen[start:end].any():
            tries += 1
            continue
        for unit in range(start, end):
            if spent >= budget:
                break
            chosen[unit] = True
            spent += unit_costs[unit]
    return chosen


def span_mask(
    input_ids: Sequence[int],
    word_ids: Sequence[int],
    mask_token_id: int,
    seed: int,
    probability: float = 0.15,
) -> MaskedExample:
    """Span-aware token-level masking of one block.

    Args:
        input_ids: (S,) block token ids with special tokens.
        word_ids: (S,) word index of each token (-1 for special / separator tokens, never masked).
        mask_token_id: id written at masked positions (no random / kept replacements at evaluation).
        seed: evaluation seed.
        probability: fraction of the maskable tokens to mask (budget rounded, at least 1).
    """
    word_ids = np.asarray(word_ids)
    maskable = word_ids >= 0
    words, costs = np.unique(word_ids[maskable], return_counts=True)
    budget = max(1, round(probability * int(maskable.sum()))) if maskable.any() else 0
    chosen = sample_span_units(costs.tolist(), budget, example_rng(seed, input_ids))
    masked = maskable & np.isin(word_ids, words[chosen])
    positions = np.flatnonzero(masked)
    ids = np.asarray(input_ids)
    out = ids.copy()
    out[positions] = mask_token_id
    return MaskedExample(out.tolist(), positions.tolist(), ids[positions].tolist(), positions.tolist())


def word_mask(
    text: str,
    input_ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    special_mask: Sequence[int],
    mask_token_id: int,
    seed: int,
    probability: float = 0.15,
) -> MaskedExample:
    """Tokenizer-independent word masking of one block text.

    Words are maximal runs of non-whitespace characters of ``text``; the chosen words depend only on
    ``(seed, text)``. A token belongs to the word containing its first non-space character (via ``offsets``);
    special tokens and tokens outside every word are never masked.

    Args:
        text: the block text the tokens were produced from.
        input_ids: (S,) token ids (with special tokens) of ``text`` under the model's tokenizer.
        offsets: (S,) character (start, end) of each token in ``text``.
        special_mask: (S,) 1 for special tokens.
    """
    spans = _whitespace_words(text)
    budget = max(1, round(probability * len(spans))) if spans else 0
    chosen = sample_span_units([1] * len(spans), budget, example_rng(seed, text))
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ids = np.asarray(input_ids)
    out = ids.copy()
    positions, groups = [], []
    for pos, ((start, end), special) in enumerate(zip(offsets, special_mask)):
        if special or end <= start or len(starts) == 0:
            continue
        piece = text[start:end]
        start += len(piece) - len(piece.lstrip())  # byte-level BPE offsets include the leading space
        if start >= end:
            continue
        word = int(np.searchsorted(starts, start, side="right")) - 1
        if word >= 0 and chosen[word] and start < spans[word][1]:
            positions.append(pos)
            groups.append(word)
    out[positions] = mask_token_id
    return MaskedExample(out.tolist(), positions, ids[positions].tolist(), groups)


def collator_mask(input_ids: Sequence[int], tokenizer, seed: int, probability: float = 0.15) -> MaskedExample:
    """``DataCollatorForLanguageModeling`` masking (80/10/10) of one block, seeded per example."""
    from transformers import DataCollatorForLanguageModeling

    example_seed = int(example_rng(seed, input_ids).integers(0, 2**31 - 1))
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=probability, seed=example_seed, return_tensors="pt"
    )
    batch = collator([{"input_ids": list(input_ids)}])
    labels = batch["labels"][0]
    positions = (labels != -100).nonzero().flatten()
    return MaskedExample(
        batch["input_ids"][0].tolist(), positions.tolist(), labels[positions].tolist(), positions.tolist()
    )


def _whitespace_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated words of ``text``."""
    spans, start = [], None
    for i, char in enumerate(text):
        if char.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans
