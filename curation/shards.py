"""What the sharded stages write and read back: the prepared shards (one parquet file per task, read back by
the same rank so MinHash document indexes line up, with a manifest of how many documents each holds) and the
dataset rows.
"""

from __future__ import annotations

import json
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseReader
from datatrove.pipeline.writers import ParquetWriter

from rexbert_common.errors import UserError

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


class ShardManifest(PipelineStep):
    """Writes ``<rank>.json`` = how many documents the prepared shard of this task holds, after its writer
    has closed the shard: the reader can then tell a task whose documents were all dropped (0, no parquet
    file) from a shard that is missing (an error)."""

    name = "🧾 rexbert shard manifest"
    type = "🛒 REXBERT"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = get_datafolder(folder)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        n = 0
        for doc in data:
            n += 1
            yield doc
        with self.folder.open(f"{rank:05d}.json", "w") as handle:
            json.dump({"documents": n}, handle)


class PreparedShardReader(BaseReader):
    """Reads ``<rank>.parquet`` of the prepared folder, in the order it was written. The manifest says how
    many documents it holds: a missing manifest, or a missing or short shard, is an error, never an empty
    task."""

    name = "📖 rexbert prepared shard"

    def __init__(self, folder: str, batch_size: int = 1024):
        super().__init__()
        self.folder = get_datafolder(folder)
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        if data:
            yield from data
        name, manifest = f"{rank:05d}.parquet", f"{rank:05d}.json"
        if not self.folder.exists(manifest):
            raise UserError(
                f"prepared shard manifest {self.folder.path}/{manifest} is missing: prepare task {rank} did "
                "not complete (or the folder was edited by hand): rerun, or delete that stage folder"
            )
        with self.folder.open(manifest, "r") as handle:
            expected = json.load(handle)["documents"]
        if expected == 0:
            return
        if not self.folder.exists(name):
            raise UserError(f"prepared shard {self.folder.path}/{name} ({expected} documents) is missing")
        with self.folder.open(name, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            if parquet.metadata.num_rows != expected:
                raise UserError(
                    f"prepared shard {self.folder.path}/{name} holds {parquet.metadata.num_rows} documents, "
                    f"its manifest {expected}: delete that stage folder to recompute it"
                )
            for batch in parquet.iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    doc = Document(
                        text=row.pop("text"),
                        id=row.pop("id"),
                        metadata={k: v for k, v in row.items() if v is not None},
                    )
                    self.update_doc_stats(doc)
                    yield doc
