"""Step 2, seeded per-domain sampling for labelling.

Each document gets a key ``blake2b(seed, id)``; a domain's sample is its ``n`` smallest keys. The draw is
therefore uniform, reproducible, independent of input order and sharding, and computable shard by shard
(keep the n smallest per shard, then merge), which is how it scales.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from collections.abc import Iterable


def sample_key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def sample_per_domain(items: Iterable[tuple[str, str]], per_domain: int, seed: int) -> dict[str, list[str]]:
    """items: (domain, doc_id). Returns domain -> sampled ids, sorted by key (a stable order)."""
    heaps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for domain, doc_id in items:
        entry = (-sample_key(seed, doc_id), doc_id)  # max-heap of the n smallest keys
        heap = heaps[domain]
        if len(heap) < per_domain:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    return {d: [doc_id for _, doc_id in sorted(h, reverse=True)] for d, h in sorted(heaps.items())}
