"""MinHash-LSH near-duplicate removal on datasketch (signatures per shard in parallel, one global LSH pass).

Semantics match datatrove's MinHash dedup: word n-gram shingles of normalised text, ``bands x rows``
permutations, two documents are duplicates when any band collides; within a connected group the document that
comes first in the stable input order is kept, the others are dropped as ``near_duplicate``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from curation.config import DedupConfig

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """datatrove-style text simplification: lowercase, numbers -> 0, punctuation -> space, no diacritics."""
    text = _NUMBER.sub("0", text.lower())
    text = _SPACE.sub(" ", _NON_WORD.sub(" ", text)).strip()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text


def shingles(text: str, n: int) -> list[bytes]:
    words = normalise(text).split()
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]


def _hash32(data: bytes) -> int:
    import xxhash

    return xxhash.xxh32_intdigest(data)


class MinHasher:
    """Signatures as (bands*rows,) uint32 vectors; permutations are built once (not per document)."""

    def __init__(self, config: DedupConfig):
        from datasketch import MinHash

        self.config = config
        self.num_perm = config.bands * config.rows
        try:
            import xxhash  # noqa: F401  (fast, seed-free shingle hash; sha1 is datasketch's slow default)

            hashfunc = _hash32
        except ImportError:  # pragma: no cover - xxhash ships with datatrove
            hashfunc = None
        self._template = MinHash(num_perm=self.num_perm, seed=config.seed, hashfunc=hashfunc)
        self._hashfunc = self._template.hashfunc

    def signature(self, text: str) -> np.ndarray:
        from datasketch import MinHash

        m = MinHash(
            num_perm=self.num_perm,
            hashfunc=self._hashfunc,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        grams = shingles(text, self.config.n_grams)
        if grams:
            m.update_batch(grams)
        return np.asarray(m.hashvalues, dtype=np.uint32 if m.hashvalues.dtype == np.uint32 else np.uint64)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(N, bands*rows)"""
        return (
            np.stack([self.signature(t) for t in texts]) if texts else np.zeros((0, self.num_perm), np.uint32)
        )


def find_near_duplicates(signatures: np.ndarray, config: DedupConfig) -> tuple[np.ndarray, dict[int, int]]:
    """signatures: (N, bands*rows) in the stable document order. Returns (drop mask (N,), dropped -> kept
    root).

    Banding goes through datasketch's MinHashLSH (prepared hash tables, one per band); candidate pairs are
    merged with union-find so chains A~B~C collapse to the earliest document.
    """
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    n = len(signatures)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        num_perm = config.bands * config.rows
        lsh = MinHashLSH(num_perm=num_perm, params=(config.bands, config.rows))
        scheme = "affine32" if signatures.dtype == np.uint32 else "affine64"
        for i in range(n):
            sketch = LeanMinHash(MinHash(num_perm=num_perm, hashvalues=signatures[i], scheme=scheme))
            for j in lsh.query(sketch):  # only earlier docs are in the index
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)  # the earliest document is the group's root
            lsh.insert(i, sketch, check_duplication=False)
    roots = [find(i) for i in range(n)]
    drop = np.array([roots[i] != i for i in range(n)], dtype=bool)
    return drop, {i: roots[i] for i in range(n) if drop[i]}
