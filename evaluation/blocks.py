"""Turn raw texts into evaluation blocks of at most ``block_size`` tokens.

``packing="truncate"`` (the default) keeps one text per block, cut to ``block_size`` tokens (the paper's
wording: "texts truncated to 128/256/512 tokens"): a masked word can only be read from its own text.
``packing="block"`` concatenates the texts (a separator token between texts) and cuts the stream into
blocks, so a bigger block gives more context -- how Table 3's title scores can grow with block size -- but
also other texts to copy masked words from (measured by the ``copy`` baseline, ``evaluation.copy_baseline``).

Texts are shuffled with the evaluation seed before packing (:func:`packing_order`): ESCI files are grouped
by query, so in file order a title's neighbours in the same block are near-copies of it (same product
line, same brand) and the model can copy the masked words instead of predicting them.
:func:`neighbour_copy_rate` measures that leak. With ``packing="block"`` the shuffled texts are also spread
so that no two near-duplicates (word Jaccard >= :data:`BLOCK_NEAR_DUPLICATE_JACCARD`) share a block.

Token blocks (same-tokenizer protocols) carry the fast tokenizer's pre-tokenizer word index of every token
so spans cover whole words. Word blocks (cross-tokenizer protocol) are *texts* made of whole
whitespace-separated words that fit in ``block_size`` tokens under every tokenizer compared.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

PACKINGS = ("truncate", "block")
TEXT_SEPARATOR = "\n"  # joins texts inside a word block; whitespace for every tokenizer
# word-set Jaccard from which two texts may not share a block: one model number or size apart is 0.5-0.9
BLOCK_NEAR_DUPLICATE_JACCARD = 0.5


def ordered_texts(texts: Sequence[str], seed: int, shuffle: bool = True) -> list[str]:
    """The packing order: a seeded permutation of ``texts`` (or file order when ``shuffle`` is False)."""
    texts = list(texts)
    if not shuffle:
        return texts
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order]


def spread_near_duplicates(
    texts: Sequence[str], lengths: Sequence[int], clusters: Sequence[int], gap: int
) -> tuple[list[str], int]:
    """Reorder ``texts`` so that two texts of one cluster are at least ``gap`` tokens apart; in a stream cut
    into blocks of ``gap`` tokens they then never share a block.

    Greedy, as cooldown scheduling: the next text is the first (in input order) of the cluster with the
    most texts left among the clusters far enough from their last text -- serving large clusters early
    leaves the fewest near-duplicates with no room at the end. Texts that can never be placed (only
    near-duplicates of the last texts are left) are dropped.

    Returns:
        (the order, the number of texts dropped).
    """
    members: dict[int, deque[int]] = defaultdict(deque)
    for i, cluster in enumerate(clusters):
        members[cluster].append(i)
    ready = [(-len(m), m[0], c) for c, m in members.items()]  # (-texts left, next text, cluster)
    heapq.heapify(ready)
    cooling: deque[tuple[int, int]] = deque()  # (position from which the cluster may follow, cluster)
    order, position = [], 0
    while ready or cooling:
        while cooling and cooling[0][0] <= position:
            cluster = cooling.popleft()[1]
            heapq.heappush(ready, (-len(members[cluster]), members[cluster][0], cluster))
        if not ready:
            break
        _, text, cluster = heapq.heappop(ready)
        members[cluster].popleft()
        order.append(texts[text])
        position += lengths[text]
        if members[cluster]:
            cooling.append((position + gap, cluster))
    return order, len(texts) - len(order)


def packing_order(
    texts: Sequence[str], tokenizer, block_size: int, packing: str, seed: int, shuffle: bool = True
) -> list[str]:
    """The order texts are packed in: seeded shuffle (:func:`ordered_texts`); for ``block`` packing also
    near-duplicates spread over different blocks of ``tokenizer``'s tokens
    (:func:`spread_near_duplicates`)."""
    ordered = ordered_texts(texts, seed, shuffle)
    if packing != "block" or len(ordered) < 2:
        return ordered
    from evaluation.near_duplicates import near_duplicate_clusters

    clusters = near_duplicate_clusters(ordered, BLOCK_NEAR_DUPLICATE_JACCARD)
    encoded = tokenizer(ordered, add_special_tokens=False, verbose=False)["input_ids"]
    lengths = [len(ids) + 1 for ids in encoded]  # + [SEP]
    spread, dropped = spread_near_duplicates(ordered, lengths, clusters.tolist(), block_size)
    if dropped:
        logger.warning("%d near-duplicate texts left out: no block without their twins was left", dropped)
    return spread


_WORD = re.compile(r"\w+")


def neighbour_copy_rate(texts: Sequence[str], window: int = 5) -> float:
    """Share of the words of each text that also occur in one of its ``window`` neighbours on either side.

    Words are lower-cased ``\\w+`` runs, counted once per text. A high rate means that masked words of a
    text can be copied from the texts packed next to it.
    """
    vocab = [set(_WORD.findall(t.lower())) for t in texts]
    copied = total = 0
    for i, words in enumerate(vocab):
        neighbours = set().union(*vocab[max(0, i - window) : i], *vocab[i + 1 : i + 1 + window])
        copied += len(words & neighbours)
        total += len(words)
    if total == 0:
        raise ValueError("neighbour_copy_rate: the texts contain no words")
    return copied / total


@dataclass
class TokenBlock:
    """Args: input_ids: (S,) ids with special tokens; word_ids: (S,) global word index, -1 = special;
    text_ids: (S,) index of the text each token comes from, -1 = special."""

    input_ids: list[int]
    word_ids: list[int]
    text_ids: list[int]


def _specials(tokenizer) -> tuple[list[int], list[int]]:
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return ([start] if start is not None else []), ([end] if end is not None else [])


def token_blocks(
    texts: Sequence[str], tokenizer, block_size: int, packing: str = "truncate"
) -> list[TokenBlock]:
    """Tokenise ``texts`` (fast tokenizer required for word ids) into blocks of <= ``block_size`` tokens."""
    if packing not in PACKINGS:
        raise ValueError(f"packing={packing!r}: expected one of {PACKINGS}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: word ids are needed for spans")
    head, tail = _specials(tokenizer)
    capacity = block_size - len(head) - len(tail)
    if capacity < 1:
        raise ValueError(f"block_size={block_size} leaves no room for text tokens")
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)
    blocks: list[TokenBlock] = []
    stream_ids: list[int] = []
    stream_words: list[int] = []
    stream_texts: list[int] = []
    word_offset = 0
    pad_head, pad_tail = [-1] * len(head), [-1] * len(tail)
    for index, ids in enumerate(encoded["input_ids"]):
        words = [w + word_offset if w is not None else -1 for w in encoded.word_ids(index)]
        word_offset = max(words, default=word_offset - 1) + 1
        if not ids:
            continue
        if packing == "truncate":
            n = min(len(ids), capacity)
            blocks.append(
                TokenBlock(
                    head + ids[:n] + tail, pad_head + words[:n] + pad_tail, pad_head + [index] * n + pad_tail
                )
            )
            continue
        if stream_ids and tail:  # separator between consecutive texts inside the stream
            stream_ids += tail
            stream_words.append(-1)
            stream_texts.append(-1)
        stream_ids += ids
        stream_words += words
        stream_texts += [index] * len(ids)
    for start in range(0, len(stream_ids), capacity):
        cut = slice(start, start + capacity)
        ids, words, text_ids = stream_ids[cut], stream_words[cut], stream_texts[cut]
        if any(w >= 0 for w in words):
            blocks.append(
                TokenBlock(head + ids + tail, pad_head + words + pad_tail, pad_head + text_ids + pad_tail)
            )
    return blocks


def word_blocks(
    texts: Sequence[str], tokenizers: Sequence, block_size: int, packing: str = "truncate"
) -> list[str]:
    """Whole-word block texts that fit in ``block_size`` tokens (special tokens included) for every tokenizer.

    Words are packed greedily; a block that still overflows once tokenised (token counts of a word can
    depend on its neighbours) loses words from its end until it fits.
    """
    if packing not in PACKINGS:
        raise ValueError(f"packing={packing!r}: expected one of {PACKINGS}")
    if not tokenizers:
        raise ValueError("word_blocks needs at least one tokenizer")

    def fits(text: str) -> bool:
        return all(len(tok(text, add_special_tokens=True)["input_ids"]) <= block_size for tok in tokenizers)

    def words_cost(words: list[str]) -> list[int]:
        # per word: tokens of " word" on its own, the max over tokenizers (verified by fits() on flush)
        per_tok = [
            [len(ids) for ids in tok([" " + w for w in words], add_special_tokens=False)["input_ids"]]
            for tok in tokenizers
        ]
        return [max(column) for column in zip(*per_tok)]

    overhead = max(tok.num_special_tokens_to_add(pair=False) for tok in tokenizers)
    capacity = block_size - overhead
    blocks: list[str] = []
    pending: list[list[str]] = []  # texts (as word lists) of the block being built
    used = 0

    def flush() -> None:
        nonlocal pending, used
        if pending:
            parts = [list(p) for p in pending if p]
            text = TEXT_SEPARATOR.join(" ".join(p) for p in parts)
            while text and not fits(text):
                parts[-1].pop()
                parts = [p for p in parts if p]
                text = TEXT_SEPARATOR.join(" ".join(p) for p in parts)
            if text:
                blocks.append(text)
        pending, used = [], 0

    for text in texts:
        words = text.split()
        if not words:
            continue
        costs = words_cost(words)
        if packing == "truncate":
            pending, used = [[]], 0
            for word, cost in zip(words, costs):
                if used + cost > capacity and pending[0]:
                    break
                pending[0].append(word)
                used += cost
            flush()
            continue
        pending.append([])
        used += 1  # the separator may be a token of its own
        for word, cost in zip(words, costs):
            if used + cost > capacity and any(pending):
                flush()
                pending = [[]]
            pending[-1].append(word)
            used += cost
    flush()
    return blocks
