"""Which evaluation texts are the same text, or nearly: normalised duplicates and word-set near-duplicates.

* :func:`normalised_text` / :func:`distinct_texts`: texts equal up to case, Unicode form, punctuation and
  spacing are one text (a catalogue repeats titles under other ids, with other spacing or case).
* :class:`NearDuplicateIndex`: texts whose *word sets* have a Jaccard similarity of at least ``threshold``
  ("the same cable in another length"). Candidates come from MinHash locality-sensitive hashing with the
  curation stage's MinHash (datatrove's ``MinhashDedupSignature`` permutations and hash, through
  :mod:`curation.minhash`), and every candidate is confirmed by its exact Jaccard, so the answer has no
  false positive; the LSH shape (:func:`lsh_shape`) finds a pair at the threshold with probability >= 0.99.

Words are lower-cased ``\\w+`` runs of the NFKC form (what "word Jaccard" means in the docs). datatrove's
own shingling runs a spaCy tokenizer (~2.6 ms a title here); plain word runs are ~50x faster, which matters
when a whole training corpus is streamed past the index (``ablation.heldout``).
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` runs of the NFKC form of ``text``."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def normalised_text(text: str) -> str:
    """The key under which two texts are the same text: their words, in order."""
    return " ".join(words(text))


def distinct_texts(texts: Iterable[str]) -> list[str]:
    """The first text of every normalised text (see :func:`normalised_text`), in input order; texts with no
    word are dropped."""
    kept: dict[str, str] = {}
    for text in texts:
        key = normalised_text(text)
        if key and key not in kept:
            kept[key] = text
    return list(kept.values())


def jaccard(first: set, second: set) -> float:
    """|A ∩ B| / |A ∪ B| (0 for two empty sets)."""
    union = len(first | second)
    return len(first & second) / union if union else 0.0


def lsh_shape(threshold: float, max_hashes: int = 120, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows per band) of at most ``max_hashes`` hashes that report a pair at Jaccard ``threshold``
    with probability >= ``recall`` (``1 - (1 - J^rows)^bands``), with as many rows as possible (fewer
    candidates below the threshold)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold}: expected 0 < threshold <= 1")
    for rows in range(max_hashes, 0, -1):
        bands = max_hashes // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return max_hashes, 1


@lru_cache(maxsize=8)
def _signer(bands: int, rows: int, seed: int):
    """curation's MinHash signature stage, used for its permutations and hash only (it writes nothing unless
    run, so its output folder is never created)."""
    from curation.config import DedupConfig
    from curation.minhash import KeyedMinhashSignature

    config = DedupConfig(n_grams=1, buckets=bands, hashes_per_bucket=rows, seed=seed)
    return KeyedMinhashSignature(tempfile.gettempdir() + "/rexbert-unused-minhash", config)


class NearDuplicateIndex:
    """Texts indexed by their MinHash bands; :meth:`matches` returns the indexed texts whose word sets have a
    Jaccard similarity >= ``threshold`` with a query text.

    Memory: the indexed texts' word sets and band keys. Index the small side (evaluation texts) and stream
    the large side (a training corpus) through :meth:`matches`.
    """

    def __init__(self, threshold: float, seed: int = 1) -> None:
        self.threshold = threshold
        self.bands, self.rows = lsh_shape(threshold)
        self._signer = _signer(self.bands, self.rows, seed)
        self._buckets: dict[tuple, list[int]] = defaultdict(list)
        self._sets: list[set[str]] = []

    def _bands(self, word_set: set[str]) -> list[tuple]:
        hash_word = self._signer._hash_func
        shingles = np.fromiter((hash_word(w) for w in sorted(word_set)), dtype=np.uint64).reshape(-1, 1)
        return [(band, *values) for band, values in enumerate(self._signer.get_signature(shingles))]

    def add(self, text: str) -> int:
        """Index ``text``; returns its index (a text with no word is indexed but never matches)."""
        word_set = set(words(text))
        self._sets.append(word_set)
        if word_set:
            for key in self._bands(word_set):
                self._buckets[key].append(len(self._sets) - 1)
        return len(self._sets) - 1

    def matches(self, text: str) -> list[int]:
        """Indices of the indexed texts at Jaccard >= threshold with ``text`` (confirmed exactly)."""
        word_set = set(words(text))
        if not word_set:
            return []
        candidates = {i for key in self._bands(word_set) for i in self._buckets.get(key, ())}
        return sorted(i for i in candidates if jaccard(word_set, self._sets[i]) >= self.threshold)


def near_duplicate_clusters(texts: Sequence[str], threshold: float) -> np.ndarray:
    """(N,) cluster id of each text: texts linked by a chain of near-duplicate pairs share a cluster."""
    index = NearDuplicateIndex(threshold)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, text in enumerate(texts):
        for j in index.matches(text):
            parent[root(i)] = root(j)
        index.add(text)
    return np.unique([root(i) for i in range(len(texts))], return_inverse=True)[1]
