"""Sharded datatrove readers for FineFineWeb-style inputs (jsonl / parquet / HF datasets).

Every task reads ``files[rank::tasks]`` of the selected files, so no process sees more than its share. A bad
record never stops a file: it is dropped and counted in the reader's datatrove stats as
``dropped_<reason>``. Document ids are ``<file path relative to the source>#<record index>``: unique per
path (two folders may hold files with the same name) and independent of the task count. The record's own
id, when it has one, is kept as ``source_id``.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader

from curation.config import SourceConfig
from rexbert_common.errors import UserError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _encodable(text: str) -> bool:
    """False for strings holding lone surrogates (a JSON ``"\\ud800"`` escape decodes to one): they cannot be
    written as UTF-8, so they would crash the writer far downstream."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RecordValidator:
    """Turns one raw record into a :class:`Document` or a drop reason."""

    def __init__(self, source: SourceConfig, max_chars: int, name: str):
        self.source = source
        self.max_chars = max_chars
        self.name = name

    def __call__(self, row: Any, relpath: str, index: int) -> Document | str:
        if not isinstance(row, dict):
            return "malformed_record"
        text = row.get(self.source.text_field)
        if text is None:
            return "missing_text"
        if not isinstance(text, str):
            return "text_not_a_string"
        if not text.strip():
            return "empty_text"
        if len(text) > self.max_chars:
            return "too_long"
        if self.source.domain_from == "folder":
            domain = relpath.split("/", 1)[0] if "/" in relpath else None
        else:
            domain = _str_or_none(row.get(self.source.domain_field))
        if not domain or not domain.strip():
            return "missing_domain"
        url = _str_or_none(row.get("url")) or ""
        raw_id = row.get(self.source.id_field)
        source_id = str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else ""
        if not all(_encodable(s) for s in (text, domain, url, source_id)):
            return "invalid_unicode"
        truth = row.get("is_commerce")  # the offline demo's known class: reporting only, never training
        return Document(
            text=text,
            id=f"{self.name}/{relpath}#{index}",
            metadata={
                "domain": domain.strip(),
                "url": url,
                "source": f"{self.name}/{relpath}",
                "source_id": source_id,
                "truth": int(truth) if truth in (0, 1) else -1,
            },
        )


def parse_doc_id(doc_id: str) -> tuple[str, str, int]:
    """(source name, file path relative to the source, record index) of a document id built by
    :class:`RecordValidator` (``<name>/<relpath>#<index>``): where its record can be read again."""
    name, relpath = input_file(doc_id).split("/", 1)
    return name, relpath, int(doc_id.rsplit("#", 1)[1])


def input_file(doc_id: str) -> str:
    """``<source name>/<relpath>`` of a document id: the one input file (or dataset shard) it was read
    from, which exactly one task of a run reads, whatever the task count."""
    return doc_id.rsplit("#", 1)[0]


class _ValidatingReader(BaseDiskReader):
    """Shared by the jsonl and parquet readers: file selection by top-level folder and counted drops."""

    def __init__(self, source: SourceConfig, max_chars: int, name: str, suffixes: tuple[str, ...]):
        import fsspec

        fs, path = fsspec.core.url_to_fs(source.path)
        # a single file: read from its folder, keeping only its name
        self.single_file = path.rstrip("/").rsplit("/", 1)[-1] if fs.isfile(path) else None
        folder = source.path.rstrip("/").rsplit("/", 1)[0] if self.single_file else source.path
        super().__init__(folder, recursive=True, add_file_path=False)
        self.validator = RecordValidator(source, max_chars, name)
        self.folders = set(source.folders)
        self.suffixes = suffixes
        if not self.selected_files():  # checked once, where the pipeline is built: nothing silently empty
            where = f" in the folders {sorted(self.folders)}" if self.folders else ""
            raise UserError(f"input source {source.path}: no {'/'.join(suffixes)} file matches{where}")

    def selected_files(self) -> list[str]:
        if self.single_file:
            return [self.single_file]
        files = sorted(f for f in self.data_folder.list_files(recursive=True) if f.endswith(self.suffixes))
        if self.folders:
            files = [f for f in files if "/" in f and f.split("/", 1)[0] in self.folders]
        return files

    def emit(self, row: Any, relpath: str, index: int) -> Document | None:
        result = self.validator(row, relpath, index)
        if isinstance(result, str):
            self.stat_update(f"dropped_{result}")
            return None
        self.stat_update("forwarded")
        return result

    def read_records(self, relpath: str, indices: list[int]):
        """The Documents of records ``indices`` of one file (or the drop reason where a record is no longer
        valid), in file order, parsing no other record."""
        wanted = set(indices)
        for index, row in self.raw_records(relpath, wanted):
            yield index, self.validator(row, relpath, index)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        for relpath in self.selected_files()[rank::world_size]:
            self.stat_update("input_files")
            for doc in self.read_file(relpath):
                self.update_doc_stats(doc)
                yield doc


class JsonlRecordReader(_ValidatingReader):
    """JSON lines, read as bytes: an undecodable or malformed line is one counted drop, not a lost file."""

    name = "📖 rexbert jsonl"

    def __init__(self, source: SourceConfig, max_chars: int, name: str):
        super().__init__(source, max_chars, name, JSONL_SUFFIXES)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "rb") as raw:
            handle = gzip.open(raw) if filepath.endswith(".gz") else raw  # noqa: SIM115 - closed with raw
            for index, line in enumerate(handle):
                if not line.strip():
                    continue
                with self.track_time():
                    try:
                        row = json.loads(line.decode("utf-8"))
                    except UnicodeDecodeError:
                        self.stat_update("dropped_invalid_utf8")
                        continue
                    except json.JSONDecodeError:
                        self.stat_update("dropped_malformed_json")
                        continue
                    doc = self.emit(row, filepath, index)
                if doc is not None:
                    yield doc

    def raw_records(self, filepath: str, wanted: set[int]):
        last = max(wanted, default=-1)
        with self.data_folder.open(filepath, "rb") as raw:
            handle = gzip.open(raw) if filepath.endswith(".gz") else raw  # noqa: SIM115 - closed with raw
            for index, line in enumerate(handle):
                if index > last:
                    return
                if index in wanted:
                    try:
                        yield index, json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        yield index, None


class ParquetRecordReader(_ValidatingReader):
    name = "📖 rexbert parquet"

    def __init__(self, source: SourceConfig, max_chars: int, name: str, batch_size: int = 1024):
        super().__init__(source, max_chars, name, PARQUET_SUFFIXES)
        self.batch_size = batch_size

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        with self.data_folder.open(filepath, "rb") as handle:
            index = 0
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    doc = self.emit(row, filepath, index)
                    index += 1
                    if doc is not None:
                        yield doc

    def raw_records(self, filepath: str, wanted: set[int]):
        import pyarrow.parquet as pq

        with self.data_folder.open(filepath, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            start = 0
            for group in range(parquet.metadata.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                inside = sorted(i for i in wanted if start <= i < start + rows)
                if inside:  # row groups holding no wanted record are never read
                    table = parquet.read_row_group(group).take([i - start for i in inside])
                    yield from zip(inside, table.to_pylist())
                start += rows


class HFDatasetRecordReader(BaseReader):
    """``datasets.load_dataset(path, split=..., streaming=True)`` sharded with ``IterableDataset.shard``."""

    name = "🤗 rexbert HF dataset"

    def __init__(self, source: SourceConfig, max_chars: int, name: str):
        super().__init__()
        self.source = source
        self.validator = RecordValidator(source, max_chars, name)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datasets import load_dataset

        if data:
            yield from data
        dataset = load_dataset(self.source.path, split=self.source.split, streaming=True)
        shards = max(1, dataset.num_shards)
        for shard in range(rank, shards, world_size):  # whole dataset shards: ids stay task-count invariant
            for index, row in enumerate(dataset.shard(num_shards=shards, index=shard)):
                result = self.validator(row, f"{self.source.split}/shard{shard:05d}", index)
                if isinstance(result, str):
                    self.stat_update(f"dropped_{result}")
                    continue
                self.stat_update("forwarded")
                self.update_doc_stats(result)
                yield result

    def read_records(self, relpath: str, indices: list[int]):
        from datasets import load_dataset

        split, shard_name = relpath.split("/", 1)
        dataset = load_dataset(self.source.path, split=split, streaming=True)
        shards, shard = max(1, dataset.num_shards), int(shard_name.removeprefix("shard"))
        wanted, last = set(indices), max(indices, default=-1)
        for index, row in enumerate(dataset.shard(num_shards=shards, index=shard)):
            if index > last:
                return
            if index in wanted:
                yield index, self.validator(row, relpath, index)


def make_reader(source: SourceConfig, max_chars: int, name: str) -> BaseReader:
    kind = {"jsonl": JsonlRecordReader, "parquet": ParquetRecordReader, "hf_dataset": HFDatasetRecordReader}
    return kind[source.format](source, max_chars, name)
