"""The ``fetch`` stage: the chosen sample's texts, read back from the input files, one task per prepare rank.

Task r reads ``chosen/<r>.parquet`` (the sampled ids whose records prepare rank r read), opens only those
input files, parses only those records, and re-applies the steps that shaped the text before sampling
(domain normalisation, the quality filter, which C4 rules may rewrite), so the text is the one prepare saw.
It writes ``fetched/<r>.parquet`` -- always, empty too -- in batches: memory is one batch, not the sample.
"""

from __future__ import annotations

from collections import defaultdict

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from curation.config import DomainConfig, QualityConfig, SourceConfig
from rexbert_common.errors import UserError


def fetched_schema():
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


class FetchSample(PipelineStep):
    name = "📥 rexbert fetch sample"
    type = "🛒 REXBERT"

    def __init__(
        self,
        sources: list[tuple[str, SourceConfig]],
        max_chars: int,
        domains: DomainConfig,
        quality: QualityConfig,
        sample_folder: str,
        out_folder: str,
        batch_size: int = 256,
    ):
        super().__init__()
        self.sources, self.max_chars = sources, max_chars
        self.domains, self.quality = domains, quality
        self.sample_folder, self.batch_size = sample_folder, batch_size
        self.out = get_datafolder(out_folder)

    def documents(self, rank: int):
        """(key, Document) of the chosen records of ``rank``, in file order."""
        from curation.filters import DomainRouter, QualityFilter
        from curation.readers import make_reader, parse_doc_id
        from curation.sampling import read_chosen

        chosen = read_chosen(self.sample_folder, rank)
        readers = {name: make_reader(source, self.max_chars, name) for name, source in self.sources}
        router, quality = DomainRouter(self.domains), QualityFilter(self.quality)
        wanted: dict[tuple[str, str], dict[int, tuple[str, int]]] = defaultdict(dict)
        for domain, key, doc_id in zip(*(chosen.column(c).to_pylist() for c in ("domain", "key", "id"))):
            name, relpath, index = parse_doc_id(doc_id)
            wanted[(name, relpath)][index] = (domain, key)
        for (name, relpath), records in sorted(wanted.items()):
            if name not in readers:
                raise UserError(f"sampled document of source {name!r}, which the config no longer has")
            found = 0
            for index, doc in readers[name].read_records(relpath, sorted(records)):
                domain, key = records[index]
                if not isinstance(doc, Document) or router.judge(doc) is not True:
                    raise UserError(f"{name}/{relpath} record {index} changed since it was sampled: rerun")
                if quality.judge(doc) is not True or doc.metadata["domain"] != domain:
                    raise UserError(f"{name}/{relpath} record {index} changed since it was sampled: rerun")
                found += 1
                yield key, doc
            if found != len(records):
                raise UserError(f"{name}/{relpath}: {len(records) - found} sampled records are missing")

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = fetched_schema()
        with self.track_time(), self.out.open(f"{rank:05d}.parquet", "wb") as handle:
            writer = pq.ParquetWriter(handle, schema, compression="zstd")
            batch: list[tuple] = []

            def flush():
                if batch:
                    writer.write_table(pa.table(dict(zip(schema.names, zip(*batch))), schema=schema))
                    batch.clear()

            for key, doc in self.documents(rank):
                meta = doc.metadata
                batch.append(
                    (meta["domain"], key, doc.id, doc.text, meta.get("truth", -1), meta.get("url", ""))
                )
                self.stat_update(f"{meta['domain']}/fetched")
                if len(batch) >= self.batch_size:
                    flush()
            flush()
            writer.close()
        return iter(())
