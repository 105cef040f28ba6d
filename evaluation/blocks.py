"""Turn raw texts into evaluation blocks of at most ``block_size`` tokens.

``packing="block"`` concatenates the texts (a separator token between texts) and cuts the stream into
blocks, so a bigger block gives more context -- how Table 3's scores can grow with block size for short
product titles. ``packing="truncate"`` keeps one text per block, cut to ``block_size`` tokens (the paper's
wording: "texts truncated to 128/256/512 tokens").

Texts are shuffled with the evaluation seed before packing (:func:`ordered_texts`): ESCI files are grouped
by query, so in file order a title's neighbours in the same block are near-copies of it (same product
line, same brand) and the model can copy the masked words instead of predicting them.
:func:`neighbour_copy_rate` measures that leak.

Token blocks (same-tokenizer protocols) carry the fast tokenizer's pre-tokenizer word index of every token
so spans cover whole words. Word blocks (cross-tokenizer protocol) are *texts* made of whole
whitespace-separated words that fit in ``block_size`` tokens under every tokenizer compared.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PACKINGS = ("block", "truncate")
TEXT_SEPARATOR = "\n"  # joins texts inside a word block; whitespace for every tokenizer


def ordered_texts(texts: Sequence[str], seed: int, shuffle: bool = True) -> list[str]:
    """The packing order: a seeded permutation of ``texts`` (or file order when ``shuffle`` is False)."""
    texts = list(texts)
    if not shuffle:
        return texts
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order]


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
    """Args: input_ids: (S,) ids with special tokens; word_ids: (S,) global word index, -1 = special."""

    input_ids: list[int]
    word_ids: list[int]


def _specials(tokenizer) -> tuple[list[int], list[int]]:
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return ([start] if start is not None else []), ([end] if end is not None else [])


def token_blocks(
    texts: Sequence[str], tokenizer, block_size: int, packing: str = "block"
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
    word_offset = 0
    for index, ids in enumerate(encoded["input_ids"]):
        words = [w + word_offset if w is not None else -1 for w in encoded.word_ids(index)]
        word_offset = max(words, default=word_offset - 1) + 1
        if not ids:
            continue
        if packing == "truncate":
            blocks.append(
                TokenBlock(
                    head + ids[:capacity] + tail, [-1] * len(head) + words[:capacity] + [-1] * len(tail)
                )
            )
            continue
        if stream_ids and tail:  # separator between consecutive texts inside the stream
            stream_ids += tail
            stream_words.append(-1)
        stream_ids += ids
        stream_words += words
    for start in range(0, len(stream_ids), capacity):
        ids, words = stream_ids[start : start + capacity], stream_words[start : start + capacity]
        if any(w >= 0 for w in words):
            blocks.append(TokenBlock(head + ids + tail, [-1] * len(head) + words + [-1] * len(tail)))
    return blocks


def word_blocks(
    texts: Sequence[str], tokenizers: Sequence, block_size: int, packing: str = "block"
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
