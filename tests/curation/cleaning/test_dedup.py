"""MinHash-LSH near-duplicate removal: planted near-duplicates at Jaccard >= 0.8 are found, others are not."""

import random

import numpy as np

from curation.cleaning.dedup import MinHasher, find_near_duplicates, normalise, shingles
from curation.config import DedupConfig
from curation.demo_data import near_duplicate


def _jaccard(a, b, n=5):
    x, y = set(shingles(a, n)), set(shingles(b, n))
    return len(x & y) / len(x | y)


def test_planted_near_duplicates_recall(real_texts):
    commerce, other = real_texts
    pool = [t for t in commerce + other if len(t.split()) >= 100][:160]
    config = DedupConfig()
    already, _ = find_near_duplicates(MinHasher(config).signatures(pool), config)
    assert already.sum() < 10  # real data has a few genuine near-duplicates (e.g. shared spec sheets)
    originals = [t for t, d in zip(pool, already) if not d]
    rng = random.Random(0)
    vocab = sorted({w for t in originals[:20] for w in t.split() if w.isalpha()})
    copies = [near_duplicate(t, rng, vocab) for t in originals]
    jac = np.array([_jaccard(a, b) for a, b in zip(originals, copies)])
    keep = jac >= 0.8
    assert keep.sum() >= 100
    texts = originals + [c for c, k in zip(copies, keep) if k]
    drop, roots = find_near_duplicates(MinHasher(config).signatures(texts), config)
    n = len(originals)
    recall = sum(roots.get(n + j) == i for j, i in enumerate(np.where(keep)[0])) / keep.sum()
    assert recall >= 0.95
    assert not drop[:n].any()  # originals are first in order: the copy is the one dropped
    assert drop.sum() == keep.sum()  # distinct real documents are not merged


def test_exact_copies_and_chains_collapse_to_the_first():
    base = " ".join(f"word{i}" for i in range(200))
    texts = [base, base.upper(), "something else entirely " * 20, base + " tail"]
    config = DedupConfig()
    drop, roots = find_near_duplicates(MinHasher(config).signatures(texts), config)
    assert drop.tolist() == [False, True, False, True] and roots == {1: 0, 3: 0}


def test_normalisation_and_short_documents():
    assert normalise("Héllo, WORLD 3.50!") == "hello world 0"
    assert shingles("two words", 5) == [b"two words"]
    assert shingles("", 5) == []
    sig = MinHasher(DedupConfig(bands=4, rows=3)).signatures(["", "short"])
    assert sig.shape == (2, 12)
