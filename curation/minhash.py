"""Global near-duplicate removal with datatrove's bucketed MinHash stages (signatures -> buckets ->
clusters -> filter), plus the two things this pipeline needs from them:

* datatrove 0.10.1 passes ``str`` shingles to xxhash, which xxhash >= 4 rejects ("Strings must be encoded
  before hashing"): :func:`utf8_hash` encodes them, and it is applied in :class:`KeyedMinhashSignature` only.
* datatrove keeps the union-find root of each cluster, which depends on how documents were spread over tasks.
  :class:`KeyedMinhashCluster` keeps the member with the smallest id hash instead, so the kept documents are
  the same whatever the task count or executor.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.dedup.minhash import (
    SENTINEL,
    MinhashConfig,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.utils.binaryio import read_tuples_from_file

from curation.config import DedupConfig

KEYS_FOLDER = "keys"


def minhash_config(config: DedupConfig) -> MinhashConfig:
    return MinhashConfig(
        n_grams=config.n_grams,
        num_buckets=config.buckets,
        hashes_per_bucket=config.hashes_per_bucket,
        seed=config.seed,
    )


def doc_key(doc_id: str) -> int:
    """A 64-bit hash of a document id: the cluster member with the smallest key is the one kept."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def utf8_hash(hash_func: Callable[[bytes], int]) -> Callable[[str | bytes], int]:
    """``hash_func`` that also accepts ``str`` (encoded as UTF-8, what older xxhash did implicitly)."""

    def hashed(data: str | bytes) -> int:
        return hash_func(data.encode("utf-8") if isinstance(data, str) else data)

    return hashed


class KeyedMinhashSignature(MinhashDedupSignature):
    """datatrove's signature stage, xxhash-4 compatible, also writing ``keys/<rank>.keys``: the id hash of
    every document in stream order (8 bytes each), which the cluster stage reads to pick the keeper."""

    def __init__(self, output_folder: str, config: DedupConfig):
        super().__init__(output_folder, config=minhash_config(config))
        self._hash_func = utf8_hash(self._hash_func)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        with self.output_folder.open(f"{KEYS_FOLDER}/{rank:05d}.keys", "wb") as keys:

            def recorded():
                for doc in data:
                    keys.write(struct.pack("<Q", doc_key(doc.id)))
                    yield doc

            super().run(recorded(), rank, world_size)


class KeyedMinhashCluster(MinhashDedupCluster):
    """datatrove's cluster stage (union-find over the duplicate pairs, one task), keeping in each cluster the
    document with the smallest id hash. Memory: the documents that have a duplicate, as in datatrove."""

    def __init__(self, dups_folder: str, output_folder: str, keys_folder: str, config: DedupConfig):
        super().__init__(dups_folder, output_folder, config=minhash_config(config))
        from datatrove.io import get_datafolder

        self.keys_folder = get_datafolder(keys_folder)

    def run(self, data: DocumentsPipeline = None, _: int = 0, world_size: int = 1):
        assert world_size == 1, "the cluster stage runs as one task"
        parent: dict[tuple[int, int], tuple[int, int]] = {}

        def find(x):
            root = x
            while parent.get(root, root) != root:
                root = parent[root]
            while x != root:  # path compression
                parent[x], x = root, parent[x]
            return root

        with self.track_time():
            for dup_file in self.input_folder.list_files(glob_pattern="*.dups"):
                with self.input_folder.open(dup_file, "rb") as handle:
                    for f1, d1, f2, d2 in read_tuples_from_file(handle, "4I", lines_to_buffer=5):
                        if f1 == SENTINEL:  # matches against a prebuilt index are not used here
                            continue
                        a, b = find((f1, d1)), find((f2, d2))
                        parent.setdefault(a, a)
                        parent.setdefault(b, b)
                        if a != b:
                            parent[max(a, b)] = min(a, b)
            keys: dict[int, np.ndarray] = {}

            def key_of(node):
                file, doc = node
                if file not in keys:
                    with self.keys_folder.open(f"{file:05d}.keys", "rb") as handle:
                        keys[file] = np.frombuffer(handle.read(), dtype="<u8")
                return int(keys[file][doc]), node

            keeper: dict[tuple[int, int], tuple[int, tuple[int, int]]] = {}
            for node in parent:
                root = find(node)
                keeper[root] = min(keeper.get(root, key_of(node)), key_of(node))
            with self.output_folder.get_output_file_manager(mode="wb") as out:
                for node in sorted(parent):  # per file in document order, as MinhashDedupFilter reads them
                    self.stat_update("duplicates")
                    if keeper[find(node)][1] != node:
                        out.write(f"{node[0]:06d}.remove", struct.pack("<I", node[1]))
                        self.stat_update("to_remove")
