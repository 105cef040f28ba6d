"""Step 2, the seeded key of per-domain sampling for labelling.

Each document gets a key ``blake2b(seed, id)``; a domain's sample is its ``n`` smallest keys. The draw is
therefore uniform, reproducible, independent of input order and task count, and computable task by task
(keep the n smallest per task, then merge: ``curation.shards.SampleCandidates`` / ``merged_sample``).
"""

from __future__ import annotations

import hashlib


def sample_key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")
