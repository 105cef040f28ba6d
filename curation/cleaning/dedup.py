"""Shingles and Jaccard similarity of normalised text: ground truth for near-duplicate checks (planted pairs,
benchmarks). The pipeline's dedup itself is datatrove's bucketed MinHash (``curation.minhash``).
"""

from __future__ import annotations

import re
import unicodedata

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


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of two texts' word n-gram shingle sets (the pair check of planted duplicates)."""
    x, y = set(shingles(a, n)), set(shingles(b, n))
    return len(x & y) / len(x | y) if x | y else 1.0
