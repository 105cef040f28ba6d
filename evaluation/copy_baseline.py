"""The model-free ``copy`` baseline of masked-token recovery: what copying from the block alone recovers.

For a masked position ``p``, let ``x = input[p - d]`` be the nearest visible token on its left (``d >= 1``
skips the other masked tokens of its span). The predictor looks for every other visible ``x`` in the block
and votes for the visible, non-special token ``d`` places after it -- "the token that follows the same
left-context token elsewhere in the block", generalised to spans. The vote counts rank the voted tokens;
a target without a vote is a miss at every k (copying cannot find it). Every scored position counts as
hidden (also the collator's 10% kept / 10% random tokens, which the model sees). The ranks have the model
ranker's ``[above, tied]`` form, so top-k is counted exactly as for a model (tied votes by their expected
hit, :func:`evaluation.metrics.topk_hits`).

Every table of ``rexbert eval mlm`` shows it as a row: a model's accuracy is only worth its distance above
this floor. Part of it is a text repeating itself ("USB-C to USB-C"), the same under every packing; the
rest comes from the *other* texts packed into the block (``across_texts=True`` counts only those votes):
that part is the leak of ``packing="block"``, and it is zero with ``packing="truncate"``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from evaluation.masking import MaskedExample

BASELINES = ("copy",)


def token_positions(input_ids: Sequence[int]) -> dict[int, list[int]]:
    """token id -> its positions in ``input_ids``."""
    where = defaultdict(list)
    for j, token in enumerate(input_ids):
        where[token].append(j)
    return where


class CopyPredictor:
    """Ranks of the masked targets under the copy vote (same interface as ``MaskedTokenRanker``).

    Args:
        vocab_size: the tokenizer's vocabulary size (an unvoted target ranks below all of it: a miss).
        special_ids: never voted for (a masked target is never a special token).
        across_texts: count only votes from other texts of the block (needs ``MaskedExample.text_ids``).
    """

    def __init__(self, vocab_size: int, special_ids: Sequence[int], across_texts: bool = False) -> None:
        self.vocab_size = vocab_size
        self.special = frozenset(special_ids)
        self.across_texts = across_texts

    def votes(self, example: MaskedExample, position: int, where: dict | None = None) -> Counter:
        """Votes for the token at ``position`` (one of ``example.positions``); ``where``: the positions of
        every token of the example (:func:`token_positions`, computed when omitted)."""
        ids, hidden = example.input_ids, set(example.positions)
        texts = example.text_ids
        if self.across_texts and texts is None:
            raise ValueError("across_texts needs the examples' text_ids (token protocols only)")
        distance = 1
        while position - distance in hidden:
            distance += 1
        anchor = position - distance
        if anchor < 0:
            return Counter()
        occurrences = (where or token_positions(ids)).get(ids[anchor], ())
        votes = Counter()
        for j in occurrences:
            follower = j + distance
            if j == anchor or follower >= len(ids) or follower in hidden or ids[follower] in self.special:
                continue
            if self.across_texts and texts[follower] == texts[position]:
                continue
            votes[ids[follower]] += 1
        return votes

    def ranks(self, examples: Sequence[MaskedExample], progress: bool = False) -> list[np.ndarray]:
        """One (n_positions, 2) ``[above, tied]`` array per example, positions in the example's order."""
        results = []
        for example in examples:
            rows, where = [], token_positions(example.input_ids)
            for position, target in zip(example.positions, example.targets):
                votes = self.votes(example, position, where)
                mine = votes.get(target, 0)
                if mine:
                    above = sum(1 for v in votes.values() if v > mine)
                    rows.append((above, sum(1 for v in votes.values() if v == mine) - 1))
                else:  # not voted for: never predicted
                    rows.append((self.vocab_size, 0))
            results.append(np.asarray(rows, dtype=np.int64).reshape(-1, 2))
        return results
