"""Step 2, the per-domain labelling sample, chosen from keys without moving any text.

Each document gets a key ``blake2b(seed, id)``; a domain's sample is its ``per_domain`` smallest (key, id)
pairs. The draw is uniform, reproducible, independent of input order and task count, and computable task by
task:

1. ``prepare`` (:class:`SampleKeys`): every task writes ``keys/<rank>.parquet``, the (domain, key, id) of its
   own ``per_domain`` smallest keys per filter-required domain -- keys only, sorted by (domain, key) in small
   row groups;
2. ``sample`` (:class:`ChooseSample`, one task): merges the tasks' key files into the global per-domain
   bottom-k, reading per file only the row groups whose keys can still enter it (memory: the sample's keys
   plus one row group), and writes ``chosen/<rank>.parquet`` per prepare rank;
3. ``fetch`` (:class:`curation.fetch.FetchSample`, sharded): reads the chosen records' texts back from the
   input files of that rank.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from rexbert_common.errors import UserError

KEY_ROW_GROUP = 4096  # rows per row group of a key file: the unit the merge skips by its key statistics


def sample_key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def key_schema():
    import pyarrow as pa

    return pa.schema([("domain", pa.string()), ("key", pa.uint64()), ("id", pa.string())])


def bottom_k(rows: list[tuple[str, int, str]], per_domain: int) -> list[tuple[str, int, str]]:
    """The sampling rule on (domain, key, id) rows: per domain the ``per_domain`` smallest (key, id), sorted
    by (domain, key, id). Every stage applies exactly this rule (a task to its own rows, the merge to the
    union), so the sample is the same for any task count."""
    out, taken = [], {}
    for row in sorted(rows):
        if taken.get(row[0], 0) < per_domain:
            taken[row[0]] = taken.get(row[0], 0) + 1
            out.append(row)
    return out


def write_keys(folder, name: str, rows: list[tuple[str, int, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*rows)) if rows else [[], [], []]
    table = pa.table(dict(zip(key_schema().names, columns)), schema=key_schema())
    with folder.open(name, "wb") as handle:
        pq.write_table(table, handle, row_group_size=KEY_ROW_GROUP, compression="zstd")


class SampleKeys(PipelineStep):
    """Keeps, per filter-required domain, the (key, id) of the ``per_domain`` documents with the smallest
    seeded key and writes them at the end of the task (always, even when empty: a missing file is an error
    downstream). Memory: ``per_domain`` x domains keys, never a text."""

    name = "🎲 rexbert sample keys"
    type = "🛒 REXBERT"

    def __init__(self, folder: str, per_domain: int, seed: int):
        super().__init__()
        self.folder = get_datafolder(folder)
        self.per_domain = per_domain
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        heaps: dict[str, list[tuple[int, str]]] = {}  # max-heaps of (-key, negated id order via tuple)
        for doc in data:
            if doc.metadata.get("route") == "filter":
                entry = _Desc(sample_key(self.seed, doc.id), doc.id)
                heap = heaps.setdefault(doc.metadata["domain"], [])
                if len(heap) < self.per_domain:
                    heapq.heappush(heap, entry)
                elif heap[0] < entry:  # entry sorts before the largest kept (key, id)
                    heapq.heapreplace(heap, entry)
            yield doc
        rows = bottom_k([(d, e.key, e.id) for d, heap in heaps.items() for e in heap], self.per_domain)
        self.stat_update("sample_keys", value=len(rows))
        write_keys(self.folder, f"{rank:05d}.parquet", rows)


class _Desc:
    """(key, id) in reverse order, so ``heapq``'s min-heap keeps the largest kept pair on top."""

    __slots__ = ("key", "id")

    def __init__(self, key: int, doc_id: str):
        self.key, self.id = key, doc_id

    def __lt__(self, other: _Desc) -> bool:
        return (self.key, self.id) > (other.key, other.id)


def merge_key_files(folder: str, per_domain: int, tasks: int) -> dict[str, list[tuple[int, str, int]]]:
    """The global sample from the tasks' key files: per domain the ``per_domain`` smallest (key, id) with the
    rank of the file they came from, sorted. A file's row groups whose smallest key is above the domain's
    current k-th key are never read, so memory is the sample plus one row group and reading stays close to
    the sample's size once the first files have set the bar."""
    import pyarrow.parquet as pq

    keys = get_datafolder(folder)
    names = [f"{rank:05d}.parquet" for rank in range(tasks)]
    if missing := [name for name in names if not keys.exists(name)]:
        raise UserError(
            f"sample keys {missing[:3]} ({len(missing)} of {tasks}) are missing from {keys.path}: a prepare "
            "task did not complete (or the folder was edited by hand): rerun, or delete that stage folder"
        )
    best: dict[str, list[tuple[int, str, int]]] = {}  # domain -> sorted (key, id, rank), at most per_domain
    for rank, name in enumerate(names):
        with keys.open(name, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            stats_of = _row_group_bounds(parquet)
            for group, (domain_lo, domain_hi, key_lo) in enumerate(stats_of):
                current = best.get(domain_lo, [])
                if domain_lo == domain_hi and len(current) >= per_domain and key_lo > current[-1][0]:
                    continue  # nothing in this row group can enter the sample
                table = parquet.read_row_group(group)
                entering: dict[str, list[tuple[int, str, int]]] = {}
                for domain, key, doc_id in zip(
                    *(table.column(c).to_pylist() for c in ("domain", "key", "id"))
                ):
                    kept = best.get(domain, [])
                    if len(kept) < per_domain or (key, doc_id) < kept[-1][:2]:
                        entering.setdefault(domain, []).append((key, doc_id, rank))
                for domain, rows in entering.items():
                    best[domain] = sorted(best.get(domain, []) + rows)[:per_domain]
    return best


def _row_group_bounds(parquet) -> list[tuple[Any, Any, int]]:
    """(first domain, last domain, smallest key) of every row group, from the file's statistics."""
    meta, out = parquet.metadata, []
    names = parquet.schema_arrow.names
    d, k = names.index("domain"), names.index("key")
    for group in range(meta.num_row_groups):
        rg = meta.row_group(group)
        domain, key = rg.column(d).statistics, rg.column(k).statistics
        if domain is None or key is None or not domain.has_min_max or not key.has_min_max:
            out.append((None, "", 0))  # no statistics: always read
        else:
            out.append((domain.min, domain.max, key.min))
    return out


class ChooseSample(PipelineStep):
    """The ``sample`` stage (one task): the global per-domain sample from the prepare tasks' key files,
    written as ``chosen/<rank>.parquet`` (the ids that prepare rank's input files hold; one file per rank,
    empty ones included) plus ``sample.json`` (per-domain counts)."""

    name = "🎲 rexbert global sample"
    type = "🛒 REXBERT"

    def __init__(self, keys_folder: str, out_folder: str, per_domain: int, tasks: int):
        super().__init__()
        self.keys_folder, self.per_domain, self.tasks = keys_folder, per_domain, tasks
        self.out = get_datafolder(out_folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import json

        with self.track_time():
            best = merge_key_files(self.keys_folder, self.per_domain, self.tasks)
            by_rank: dict[int, list[tuple[str, int, str]]] = {r: [] for r in range(self.tasks)}
            for domain, kept in best.items():
                for key, doc_id, source_rank in kept:
                    by_rank[source_rank].append((domain, key, doc_id))
            for source_rank, rows in by_rank.items():
                write_keys(self.out, f"chosen/{source_rank:05d}.parquet", sorted(rows))
            counts = {domain: len(kept) for domain, kept in sorted(best.items())}
            for domain, n in counts.items():
                self.stat_update(f"{domain}/sampled", value=n)
            with self.out.open("sample.json", "w") as handle:
                json.dump({"per_domain": counts, "total": sum(counts.values())}, handle, indent=2)
        return iter(())


def read_chosen(folder: str, rank: int):
    """The chosen (domain, key, id) rows of one prepare rank; a missing file is an error."""
    import pyarrow.parquet as pq

    chosen = get_datafolder(folder)
    name = f"chosen/{rank:05d}.parquet"
    if not chosen.exists(name):
        raise UserError(f"{chosen.path}/{name} is missing: the sample stage did not complete; rerun")
    with chosen.open(name, "rb") as handle:
        return pq.read_table(handle)
