"""Read data sources (local files or Hugging Face Hub datasets) into streams of document texts: the file
formats, their records and their errors (the phase build addresses the same records by position through
``training.source_index``; ``load_source`` reads a whole source, for the stages that want one).

Local formats: parquet, json / jsonl (optionally .gz), plain text (.txt / .raw, optionally .gz) and zip
archives of text files; a path may be a folder or a glob (e.g. the curation stage's parquet output).
Anything else is treated as a Hub dataset id (``datasets.load_dataset``). A source is read into memory,
or with ``streaming: true`` lazily, file by file and record batch by record batch (memory flat in corpus
size): each epoch visits the files in a new order (seeded) and shuffles documents in a bounded buffer.
Problems fail early and name the source and path: missing/unreadable files, a missing text field, no
usable document. Whitespace-only documents are dropped and counted.
"""

from __future__ import annotations

import glob
import gzip
import io
import itertools
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rexbert_common.errors import UserError
from training.recipe import SourceConfig

_TEXT_SUFFIXES = (".txt", ".raw", ".txt.gz", ".raw.gz")
_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_MISSING = {"none", "nan", "null"}  # product dumps write missing fields as these strings
# Plain-text files (books) are cut into blocks of paragraphs of about this many characters, so one
# "document" is comparable to a web page instead of a whole book.
TEXT_BLOCK_CHARS = 4000


class DataError(UserError, ValueError):
    """A data source cannot be used (the message names the source, the path and why)."""


def _json_problem(path: str) -> str:
    """Where a JSON Lines (or JSON) file stops parsing -- ``datasets`` only says "an error occurred while
    generating the dataset". Streams the file: only runs after a failed load."""
    import json

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
                continue
            except json.JSONDecodeError as error:
                problem = (number, error.msg)
            if number == 1 and line.lstrip()[:1] in "[{":  # maybe one JSON document over many lines
                handle.seek(0)
                try:
                    json.load(handle)
                    return "unreadable JSON"
                except json.JSONDecodeError as error:
                    problem = (error.lineno, error.msg)
            return f"line {problem[0]} is not valid JSON ({problem[1]})"
    return "unreadable JSON"


@dataclass
class SourceStats:
    """What was read from a source."""

    documents: int = 0
    dropped_whitespace: int = 0
    dropped_missing_field: int = 0


@dataclass
class LoadedSource:
    """A source's documents, in memory or as a re-iterable stream (``streaming: true``).

    ``_stream_factory(rng)`` returns one epoch of documents in an order drawn from ``rng``.
    """

    config: SourceConfig
    texts: list[str] | None
    stats: SourceStats = field(default_factory=SourceStats)
    _stream_factory: Callable[[np.random.Generator], Iterator[str]] | None = None

    def cycle(self, rng: np.random.Generator) -> Iterator[str]:
        """Endless documents, reshuffled every epoch with ``rng`` (deterministic given its seed)."""
        while True:
            if self.texts is not None:
                for i in rng.permutation(len(self.texts)):
                    yield self.texts[i]
            else:
                produced = False
                for text in self._stream_factory(rng):
                    produced = True
                    yield text
                if not produced:
                    name, path = self.config.name, self.config.path
                    raise DataError(f"source {name!r}: stream {path} yielded no document")

    def sample(self, n: int, rng: np.random.Generator) -> Iterator[str]:
        """At most ``n`` documents of one epoch (no document twice): a bounded sample of the source."""
        epoch = (
            (self.texts[i] for i in rng.permutation(len(self.texts)))
            if self.texts is not None
            else self._stream_factory(rng)
        )
        return itertools.islice(epoch, n)


def buffer_shuffle(items: Iterable[str], rng: np.random.Generator, size: int) -> Iterator[str]:
    """Approximately shuffle a stream with a ``size``-item buffer (what ``datasets``' streaming shuffle
    does; hand-written because plain-text and zip sources are not ``datasets`` streams)."""
    buffer: list[str] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = int(rng.integers(size))
        yield buffer[k]
        buffer[k] = item
    for k in rng.permutation(len(buffer)):
        yield buffer[k]


def _files(src: SourceConfig) -> list[str] | None:
    """Local files of a source, or None when ``path`` is not local (a Hub id)."""
    path = src.path
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
        if not files:
            raise DataError(f"source {src.name!r}: no file matches {path}")
        return files
    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).rglob("*") if p.is_file() and file_kind(str(p)))
        if not files:
            raise DataError(f"source {src.name!r}: folder {path} has no parquet/json/txt/zip file")
        return files
    if os.path.exists(path):
        return [path]
    if path.startswith(("/", "./", "../", "~")) or file_kind(path):
        raise DataError(f"source {src.name!r}: file not found: {path}")
    return None


def local_files(src: SourceConfig) -> list[str] | None:
    """The local files a source reads (sorted), or None when ``path`` is a Hub dataset id."""
    return _files(src)


source_files = local_files


def file_kind(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(_JSON_SUFFIXES):
        return "json"
    if lower.endswith(_TEXT_SUFFIXES):
        return "text"
    if lower.endswith(".zip"):
        return "zip"
    return None


def text_documents(text: str, per_line: bool) -> Iterator[str]:
    """Documents of a plain-text file: one per line, or blocks of lines of about TEXT_BLOCK_CHARS
    cut at a blank line (paragraph end), or at any line once twice that size (texts without blank lines)."""
    lines = text.splitlines()
    if per_line:
        yield from lines
        return
    block: list[str] = []
    size = 0
    for line in lines:
        block.append(line)
        size += len(line) + 1
        if (size >= TEXT_BLOCK_CHARS and not line.strip()) or size >= 2 * TEXT_BLOCK_CHARS:
            yield "\n".join(block).strip("\n")
            block, size = [], 0
    if block:
        yield "\n".join(block).strip("\n")


def join_fields(row: dict, fields: list[str]) -> str | None:
    parts = []
    for name in fields:
        value = row.get(name)
        if value is not None and value != "" and str(value).strip().lower() not in _MISSING:
            parts.append(str(value))
    return "\n".join(parts) if parts else None


def records(src: SourceConfig, path: str) -> Iterator[str | None]:
    """Raw document texts of one file, local or a URL (None = the text field was empty)."""
    import fsspec

    kind = file_kind(path)
    try:
        if kind == "text":
            with fsspec.open(path, "rt", encoding="utf-8", compression="infer") as handle:
                yield from text_documents(handle.read(), src.doc_per_line)
        elif kind == "zip":
            with fsspec.open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
                for member in sorted(archive.namelist()):
                    if member.endswith("/"):
                        continue
                    text = io.TextIOWrapper(archive.open(member), encoding="utf-8", errors="replace").read()
                    yield from text_documents(text, src.doc_per_line)
        elif kind in ("parquet", "json"):
            import datasets

            if (
                "://" not in path and os.path.getsize(path) == 0
            ):  # no records (datasets' json builder fails on it obscurely)
                return

            # a lazy reader: parquet row groups / json lines as they are consumed, no Arrow cache copy
            dataset = datasets.load_dataset(kind, data_files=path, split="train", streaming=True)
            try:
                for i, row in enumerate(dataset):
                    if i == 0 and src.text_fields[0] not in row:
                        raise DataError(
                            f"source {src.name!r}: text field {src.text_fields[0]!r} not in {path} "
                            f"(columns: {sorted(row)})"
                        )
                    yield join_fields(row, src.text_fields)
            except DataError:
                raise
            except (ValueError, datasets.exceptions.DatasetGenerationError):
                if kind != "json":
                    raise
                raise DataError(f"source {src.name!r}: {path}: {_json_problem(path)}") from None
        else:
            raise DataError(f"source {src.name!r}: unsupported file type {path} (parquet, json[l], txt, zip)")
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile, ValueError) as error:
        raise DataError(f"source {src.name!r}: cannot read {path}: {error}") from error


def _clean(src: SourceConfig, raw: Iterator[str | None], stats: SourceStats) -> Iterator[str]:
    for text in raw:
        if text is None:
            stats.dropped_missing_field += 1
        elif not text.strip():
            stats.dropped_whitespace += 1
        else:
            stats.documents += 1
            yield text
            if src.max_docs is not None and stats.documents >= src.max_docs:
                return


def _hub_stream(src: SourceConfig, shuffle_buffer: int):
    import datasets

    def rows(dataset) -> Iterator[str | None]:
        for i, row in enumerate(dataset):
            if i == 0 and src.text_fields[0] not in row:  # fail on the first row, not silently
                raise DataError(
                    f"source {src.name!r}: text field {src.text_fields[0]!r} not in "
                    f"{src.path} (columns: {sorted(row)})"
                )
            yield join_fields(row, src.text_fields)

    def factory(rng: np.random.Generator) -> Iterator[str]:
        dataset = datasets.load_dataset(src.path, src.subset, split=src.split, streaming=True)
        dataset = dataset.shuffle(seed=int(rng.integers(2**31)), buffer_size=shuffle_buffer)
        yield from _clean(src, rows(dataset), SourceStats())

    return factory


def _local_stream(src: SourceConfig, files: list[str], shuffle_buffer: int):
    def factory(rng: np.random.Generator) -> Iterator[str]:
        def documents() -> Iterator[str | None]:
            for k in rng.permutation(len(files)):
                yield from records(src, files[k])

        yield from buffer_shuffle(_clean(src, documents(), SourceStats()), rng, shuffle_buffer)

    return factory


def load_source(src: SourceConfig, shuffle_buffer: int = 10_000) -> LoadedSource:
    """Read a source: into memory, or (``src.streaming``) as a lazy stream shuffled per epoch through a
    ``shuffle_buffer``-document buffer. A local stream's first file is opened now, so a bad source fails
    before any work."""
    files = _files(src)
    stats = SourceStats()
    if src.streaming:
        if files is None:
            return LoadedSource(src, None, stats, _hub_stream(src, shuffle_buffer))
        for _ in _clean(src, records(src, files[0]), stats):  # unreadable file, missing field: fail now
            break
        return LoadedSource(src, None, stats, _local_stream(src, files, shuffle_buffer))
    if files is None:  # a Hub dataset id
        import datasets

        try:
            dataset = datasets.load_dataset(src.path, src.subset, split=src.split)
        except Exception as error:  # the Hub raises many types; keep the cause
            raise DataError(f"source {src.name!r}: cannot load Hub dataset {src.path!r}: {error}") from error
        if src.text_fields[0] not in dataset.column_names:
            raise DataError(
                f"source {src.name!r}: text field {src.text_fields[0]!r} not in "
                f"{src.path} (columns: {dataset.column_names})"
            )
        raw = (join_fields(row, src.text_fields) for row in dataset)
        texts = list(_clean(src, raw, stats))
    else:
        texts = []
        for path in files:
            remaining = None if src.max_docs is None else src.max_docs - len(texts)
            if remaining == 0:
                break
            texts.extend(_clean(src, records(src, path), stats))
    if not texts:
        raise DataError(
            f"source {src.name!r}: no usable document in {src.path} "
            f"({stats.dropped_whitespace} whitespace-only, "
            f"{stats.dropped_missing_field} without text)"
        )
    return LoadedSource(src, texts, stats)
