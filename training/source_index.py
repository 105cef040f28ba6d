"""Documents addressed by position, so that a task of the phase build reads only its own documents.

A source is a list of *blocks* -- a parquet row group, a zip member, a whole text or JSON(L) file -- with a
known number of documents each: the source's *index*, read from parquet footers (no document read) or counted
in one pass over the other formats (``rexbert prepare`` spreads that pass over its tasks). Epoch ``e`` of a
source visits its blocks in a seeded order and the documents of each block in a seeded order, so "the
``p``-th document the phase draws from source ``s``" is a pure function of ``(seed, s, p)`` that costs reading
the one block that holds it. A shard of a phase is a range of such positions in each source
(``mixture.MixturePlan``): its task reads its own documents plus at most one partly used block at each end of
each range, and nothing else -- no process reads every document, and a restart rereads only the missing
shards' blocks.

Documents of text, zip and JSON blocks are the usable ones (whitespace-only texts and records without the text
field are dropped while counting). Parquet blocks are counted from their footers, so a parquet row whose text
is empty stays a position that yields ``None`` (the phase plan expects it: a source's mean tokens per position
counts such rows as 0). ``max_docs`` keeps the first ``max_docs`` positions in file order.

Random access is per block: parquet row groups are cheap to reach (footer offsets); a JSON(L) or text file
is one block, read whole by each shard that draws from it, so convert large JSON corpora to parquet (the
curation output is parquet). Hub datasets are read through their data files (``hf://`` URLs of parquet or
JSON files, as ``datasets`` resolves them); script-based Hub datasets cannot be addressed this way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from training.data import DataError, file_kind, join_fields, local_files, records
from training.recipe import SourceConfig

SAMPLE_BLOCKS = 64  # a bounded sample (calibration, tokenizer, miner) reads documents from at most this many


def usable(text: str | None) -> str | None:
    return text if text is not None and text.strip() else None


def _open(path: str, mode: str = "rb"):
    import fsspec

    return fsspec.open(path, mode).open()  # local paths and remote URLs (hf://, s3://, ...) alike


def list_files(src: SourceConfig) -> list[str]:
    """The files a source reads, sorted: local files, or the data files of a Hub dataset."""
    files = local_files(src)
    return files if files is not None else hub_data_files(src)


def hub_data_files(src: SourceConfig) -> list[str]:
    """Data files (``hf://`` URLs pinned to a revision) of a Hub dataset's split, as ``datasets`` resolves
    them; the build reads them block by block (parquet row groups) like local files."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(src.path, src.subset)
    except Exception as error:  # the Hub raises many types; keep the cause
        raise DataError(f"source {src.name!r}: cannot resolve Hub dataset {src.path!r}: {error}") from error
    files = (builder.config.data_files or {}).get(src.split)
    if not files:
        raise DataError(
            f"source {src.name!r}: Hub dataset {src.path!r} has no data files for split {src.split!r} "
            "(a script-based dataset: convert it to parquet)"
        )
    unreadable = [f for f in files if file_kind(str(f)) is None]
    if unreadable:
        raise DataError(
            f"source {src.name!r}: unsupported data file {unreadable[0]} (parquet, json[l], txt, zip)"
        )
    return sorted(str(f) for f in files)


def file_stamp(path: str) -> list:
    """What identifies a file's content for the build fingerprint: size and mtime of a local file; a Hub
    URL names its revision."""
    if "://" in path:
        return [path]
    stat = os.stat(path)
    return [path, stat.st_size, stat.st_mtime_ns]


# -- counting and reading blocks -------------------------------------------------------------------


def _parquet_columns(src: SourceConfig, parquet, path: str) -> list[str]:
    names = parquet.schema_arrow.names
    if src.text_fields[0] not in names:
        raise DataError(
            f"source {src.name!r}: text field {src.text_fields[0]!r} not in {path} (columns: {sorted(names)})"
        )
    return [f for f in src.text_fields if f in names]


def _zip_members(archive) -> list[str]:
    return sorted(m for m in archive.namelist() if not m.endswith("/"))


def count_blocks(src: SourceConfig, path: str) -> list[int]:
    """Documents per block of one file (parquet: rows per row group, read from the footer)."""
    kind = file_kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            with _open(path) as handle:
                parquet = pq.ParquetFile(handle)
                _parquet_columns(src, parquet, path)
                meta = parquet.metadata
                return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        except DataError:
            raise
        except (OSError, ValueError) as error:
            raise DataError(f"source {src.name!r}: cannot read {path}: {error}") from error
    if kind == "zip":
        return [len(_zip_member(src, path, k)) for k in range(len(_members_of(src, path)))]
    return [len(_whole_file(src, path))]


def _members_of(src: SourceConfig, path: str) -> list[str]:
    import zipfile

    try:
        with _open(path) as handle, zipfile.ZipFile(handle) as archive:
            return _zip_members(archive)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"source {src.name!r}: cannot read {path}: {error}") from error


def _zip_member(src: SourceConfig, path: str, part: int) -> list[str]:
    import io
    import zipfile

    from training.data import text_documents

    try:
        with _open(path) as handle, zipfile.ZipFile(handle) as archive:
            member = _zip_members(archive)[part]
            text = io.TextIOWrapper(archive.open(member), encoding="utf-8", errors="replace").read()
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"source {src.name!r}: cannot read {path}: {error}") from error
    return [t for t in text_documents(text, src.doc_per_line) if usable(t)]


def _whole_file(src: SourceConfig, path: str) -> list[str]:
    return [t for t in records(src, path) if usable(t)]


def read_block(src: SourceConfig, path: str, part: int, count: int) -> list[str | None]:
    """The first ``count`` documents of block ``part`` of ``path``, in file order (``None``: a parquet row
    without usable text)."""
    kind = file_kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            with _open(path) as handle:
                parquet = pq.ParquetFile(handle)
                columns = _parquet_columns(src, parquet, path)
                table = parquet.read_row_group(part, columns=columns).slice(0, count)
        except DataError:
            raise
        except (OSError, ValueError) as error:
            raise DataError(f"source {src.name!r}: cannot read {path}: {error}") from error
        values = {name: table.column(name).to_pylist() for name in columns}
        rows = ({name: values[name][i] for name in columns} for i in range(table.num_rows))
        return [usable(join_fields(row, src.text_fields)) for row in rows]
    documents = _zip_member(src, path, part) if kind == "zip" else _whole_file(src, path)
    return list(documents[:count])


# -- a source's index ------------------------------------------------------------------------------


@dataclass
class SourceIndex:
    """A source's blocks and their document counts (``max_docs`` applied).

    Attributes:
        config: the source.  files: its files, sorted.  blocks: ``(file number, part)`` per block.
        counts: documents per block (int64 array, aligned with ``blocks``).
    """

    config: SourceConfig
    files: list[str]
    blocks: list[tuple[int, int]]
    counts: np.ndarray

    @classmethod
    def from_counts(cls, src: SourceConfig, per_file: dict[str, list[int]]) -> SourceIndex:
        """Build from the per-file block counts of :func:`count_blocks` (every file of the source)."""
        files = sorted(per_file)
        blocks, counts, left = [], [], src.max_docs if src.max_docs is not None else math.inf
        for number, path in enumerate(files):
            for part, n in enumerate(per_file[path]):
                n = int(min(n, left))
                if n <= 0:
                    continue
                blocks.append((number, part))
                counts.append(n)
                left -= n
        index = cls(src, files, blocks, np.asarray(counts, dtype=np.int64))
        if index.documents == 0:
            raise DataError(f"source {src.name!r}: no usable document in {src.path}")
        return index

    @property
    def documents(self) -> int:
        return int(self.counts.sum())

    def read(self, block: int) -> list[str | None]:
        number, part = self.blocks[block]
        return read_block(self.config, self.files[number], part, int(self.counts[block]))

    def sample(self, n: int, rng: np.random.Generator) -> list[str | None]:
        """About ``n`` positions drawn from at most ``SAMPLE_BLOCKS`` random blocks (a bounded read: the
        tokenizer's training text, the miner's lexicon, the phase plan's document sizes)."""
        order = rng.permutation(len(self.blocks))
        per_block = math.ceil(n / min(len(order), SAMPLE_BLOCKS))
        sample: list[str | None] = []
        for block in order:
            docs = self.read(int(block))
            sample.extend(docs[k] for k in np.sort(rng.permutation(len(docs))[:per_block]))
            if len(sample) >= n:
                break
        return sample[:n]


class DrawOrder:
    """The documents a phase draws from one source, by position: epoch ``p // documents`` visits the blocks
    in the order of ``default_rng([seed, 13, number, epoch])`` and each block's documents in the order of
    ``default_rng([seed, 17, number, epoch, block])``. Keeps the last block read (a small source repeated
    over many epochs is read once per shard)."""

    def __init__(self, index: SourceIndex, seed: int, number: int) -> None:
        self.index, self.seed, self.number = index, seed, number
        self._layout: tuple[int, np.ndarray, np.ndarray] | None = None
        self._block: tuple[int, list] | None = None
        self.blocks_read = 0

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._layout is None or self._layout[0] != epoch:
            order = np.random.default_rng([self.seed, 13, self.number, epoch]).permutation(
                len(self.index.blocks)
            )
            starts = np.concatenate([[0], np.cumsum(self.index.counts[order])])
            self._layout = (epoch, order, starts)
        return self._layout[1], self._layout[2]

    def _documents(self, block: int) -> list[str | None]:
        if self._block is None or self._block[0] != block:
            self._block = None  # one block held at a time, also while the next is read
            self._block = (block, self.index.read(block))
            self.blocks_read += 1
        return self._block[1]

    def read(self, start: int, stop: int) -> Iterator[str | None]:
        """Documents at positions ``start`` .. ``stop - 1`` (``None``: a position without usable text)."""
        total, position = self.index.documents, start
        while position < stop:
            epoch, i = divmod(position, total)
            order, starts = self._epoch(epoch)
            j = int(np.searchsorted(starts, i, side="right")) - 1
            block = int(order[j])
            first = i - int(starts[j])
            take = min(int(self.index.counts[block]) - first, stop - position)
            rng = np.random.default_rng([self.seed, 17, self.number, epoch, block])
            visit = rng.permutation(int(self.index.counts[block]))[first : first + take]
            documents = self._documents(block)
            for k in visit:
                yield documents[k]
            del documents  # the next block may replace this one in the cache: keep no second reference
            position += take
