"""What the sharded stages write and read back: the prepared shards (one parquet file per task, read back by
the same rank so MinHash document indexes line up), the per-task labelling candidates, and the dataset rows.
"""

from __future__ import annotations

import heapq
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseReader
from datatrove.pipeline.writers import ParquetWriter

from curation.sampling import sample_key

# metadata carried between stages, with its parquet type; relevance_score is null for direct domains
METADATA = {
    "domain": "string",
    "route": "string",
    "url": "string",
    "source": "string",
    "source_id": "string",
    "truth": "int8",
    "language": "string",
    "language_score": "float32",
    "relevance_score": "float32",
}
DATASET_COLUMNS = (
    "id",
    "text",
    "domain",
    "url",
    "source",
    "source_id",
    "relevance_score",
    "language",
    "language_score",
)


def _candidate_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("domain", pa.string()),
            ("key", pa.uint64()),
            ("id", pa.string()),
            ("text", pa.string()),
            ("truth", pa.int8()),
            ("url", pa.string()),
        ]
    )


def _schema(columns):
    import pyarrow as pa

    types = {"id": pa.string(), "text": pa.string(), **{k: pa.type_for_alias(v) for k, v in METADATA.items()}}
    return pa.schema([(c, types[c]) for c in columns])


def _flatten(columns):
    def adapter(self, document: Document) -> dict[str, Any]:
        row = {"id": document.id, "text": document.text, **document.metadata}
        return {c: row.get(c) for c in columns}

    return adapter


def prepared_writer(folder: str) -> ParquetWriter:
    columns = ("id", "text", *METADATA)
    return ParquetWriter(
        folder,
        output_filename="${rank}.parquet",
        adapter=_flatten(columns),
        schema=_schema(columns),
        compression="zstd",
        max_file_size=-1,
    )


def dataset_writer(folder: str) -> ParquetWriter:
    return ParquetWriter(
        folder,
        output_filename="train-${rank}.parquet",
        adapter=_flatten(DATASET_COLUMNS),
        schema=_schema(DATASET_COLUMNS),
        compression="zstd",
        max_file_size=-1,
    )


class PreparedShardReader(BaseReader):
    """Reads ``<rank>.parquet`` of the prepared folder, in the order it was written (a task whose documents
    were all dropped wrote no file and yields nothing)."""

    name = "📖 rexbert prepared shard"

    def __init__(self, folder: str, batch_size: int = 1024):
        super().__init__()
        self.folder = get_datafolder(folder)
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        if data:
            yield from data
        name = f"{rank:05d}.parquet"
        if not self.folder.exists(name):
            return
        with self.folder.open(name, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    doc = Document(
                        text=row.pop("text"),
                        id=row.pop("id"),
                        metadata={k: v for k, v in row.items() if v is not None},
                    )
                    self.update_doc_stats(doc)
                    yield doc


class SampleCandidates(PipelineStep):
    """Keeps, per filter-required domain, the ``per_domain`` documents with the smallest seeded id hash, and
    writes them at the end of the task. Memory is bounded by ``per_domain`` x domains; merging the tasks'
    candidates and keeping the smallest keys again gives the same sample for any task count."""

    name = "🎲 rexbert labelling candidates"
    type = "🛒 REXBERT"

    def __init__(self, folder: str, per_domain: int, seed: int):
        super().__init__()
        self.folder = get_datafolder(folder)
        self.per_domain = per_domain
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        heaps: dict[str, list[tuple[int, str, str, int, str]]] = {}
        for doc in data:
            if doc.metadata.get("route") == "filter":
                entry = (
                    -sample_key(self.seed, doc.id),
                    doc.id,
                    doc.text,
                    doc.metadata.get("truth", -1),
                    doc.metadata.get("url", ""),
                )
                heap = heaps.setdefault(doc.metadata["domain"], [])
                if len(heap) < self.per_domain:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    heapq.heapreplace(heap, entry)
            yield doc
        rows = [(d, -k, i, t, y, u) for d, heap in sorted(heaps.items()) for k, i, t, y, u in heap]
        columns = list(zip(*rows)) if rows else [[]] * 6
        table = pa.table(dict(zip(_candidate_schema().names, columns)), schema=_candidate_schema())
        self.stat_update("candidates", value=len(rows))
        with self.folder.open(f"{rank:05d}.parquet", "wb") as handle:
            pq.write_table(table, handle)


def merged_sample(folder: str, per_domain: int, tasks: int):
    """The global sample: the ``per_domain`` smallest keys of each domain over every task's candidates,
    ordered by (domain, key). Reads at most tasks x per_domain x domains rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from rexbert_common.errors import UserError

    folder = get_datafolder(folder)
    expected = [f"{rank:05d}.parquet" for rank in range(tasks)]
    missing = [name for name in expected if not folder.exists(name)]
    if missing:
        raise UserError(
            f"labelling candidates {missing[:3]} are missing from {folder.path} (a stage folder was "
            "edited by hand?): delete that stage folder to recompute it"
        )
    tables = []
    for name in expected:
        with folder.open(name, "rb") as handle:
            tables.append(pq.read_table(handle))
    table = pa.concat_tables(tables) if tables else _candidate_schema().empty_table()
    table = table.take(
        pc.sort_indices(table, [("domain", "ascending"), ("key", "ascending"), ("id", "ascending")])
    )
    domains = table.column("domain").to_pylist()
    keep, seen = [], {}
    for i, domain in enumerate(domains):
        seen[domain] = seen.get(domain, 0) + 1
        if seen[domain] <= per_domain:
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))
