"""A phase's rows on disk: shards written as Arrow record batches while they are packed, restartable shard
by shard, memory-mapped by training.

Layout of a build folder (``<output_dir>/<phase>/rows-<fingerprint>/``)::

    shard-00000.arrow   rows of shard 0 (Arrow IPC *file* format: a footer indexes the record batches,
    shard-00000.json    so opening is O(1) and reads are memory-mapped); the .json (what went into the
    ...                 shard) is its completion marker, written only once the rows are durable
    build.json          the shards and rows kept, the phase's stats; written last: the build is complete
    logs/               datatrove's logs and task completions of the stages that built it

A shard's rows go to ``shard-<k>.arrow.tmp`` one packing buffer at a time, in record batches of at most
``data.task_memory_bytes / 16`` bytes, so a task never holds a shard's rows. Then: fsync the file, rename it
into place, fsync the folder, and only then write the marker (itself through a fsynced temporary file): a
crash anywhere leaves either no marker -- the shard is rebuilt -- or a marker whose rows are on disk, and a
marker whose file is missing or of another size is not trusted either. :func:`finalize_build` keeps shards
0, 1, 2, ... until the phase's ``tokens`` are reached (cutting the last one at the row that reaches them),
builds any shard it needs that is missing (past the planned shards when the sources' documents were shorter
than their sampled mean, or one whose task did not run), removes unused shards and stale builds of the
phase, and writes ``build.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rexbert_common.files import fsync_folder, write_text_atomic
from training.phase_data import PhaseStats, RowBatch, kept_stats, rows_within_budget, scheduled_domain_share
from training.recipe import PhaseConfig

# Bump when the generation or the on-disk layout changes: it is part of the build fingerprint.
FORMAT_VERSION = 5
BUILD_INFO = "build.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def _schema(vocab_size: int | None):
    """Row schema; token ids are uint16 when every id fits (ModernBERT's 50,368 do: half the disk)."""
    import pyarrow as pa

    ids = pa.uint16() if vocab_size is not None and vocab_size <= 1 << 16 else pa.int32()
    return pa.schema(
        [
            ("input_ids", pa.list_(ids)),
            ("doc_lengths", pa.list_(pa.int32())),
            ("spans", pa.list_(pa.list_(pa.int32(), 2))),
            ("length", pa.int32()),  # len(input_ids): the batch plan reads only this column
        ]
    )


def _offsets(counts: np.ndarray):
    import pyarrow as pa

    return pa.array(np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32), pa.int32())


def record_batch(rows: RowBatch, first: int, stop: int, schema):
    """Rows ``first`` .. ``stop - 1`` of ``rows`` as one Arrow record batch, built from the flat arrays."""
    import pyarrow as pa

    def bounds(counts: np.ndarray) -> tuple[int, int]:
        ends = np.cumsum(counts, dtype=np.int64)
        return (int(ends[first - 1]) if first else 0), int(ends[stop - 1])

    lengths = rows.row_lengths[first:stop]
    a, b = bounds(rows.row_lengths)
    ids = pa.array(rows.ids[a:b].astype(schema.field("input_ids").type.value_type.to_pandas_dtype()))
    c, d = bounds(rows.docs_per_row)
    e, f = bounds(rows.spans_per_row)
    pairs = pa.FixedSizeListArray.from_arrays(pa.array(rows.spans[e:f].reshape(-1), pa.int32()), 2)
    columns = [
        pa.ListArray.from_arrays(_offsets(lengths), ids),
        pa.ListArray.from_arrays(_offsets(rows.docs_per_row[first:stop]), pa.array(rows.doc_lengths[c:d])),
        pa.ListArray.from_arrays(_offsets(rows.spans_per_row[first:stop]), pairs),
        pa.array(lengths, pa.int32()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Streams a shard's rows into ``shard-<k>.arrow.tmp``; :meth:`commit` makes them durable, renames the
    file into place and then writes the completion marker (see the module docstring)."""

    def __init__(self, folder: Path, index: int, vocab_size: int | None, batch_bytes: int) -> None:
        import pyarrow as pa

        self.folder, self.index, self.batch_bytes = Path(folder), index, batch_bytes
        self.path = self.folder / f"{shard_name(index)}.arrow"
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.schema = _schema(vocab_size)
        self._sink = pa.OSFile(str(self.tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)

    def write(self, rows: RowBatch) -> None:
        """Append rows as record batches of at most ``batch_bytes`` of token ids (at least one row each)."""
        itemsize = 2 if self.schema.field("input_ids").type.value_type.bit_width == 16 else 4
        cumulative = np.cumsum(rows.row_lengths.astype(np.int64) * itemsize)
        first = 0
        while first < rows.rows:
            before = int(cumulative[first - 1]) if first else 0
            stop = max(first + 1, int(np.searchsorted(cumulative, before + self.batch_bytes, side="right")))
            self._writer.write_batch(record_batch(rows, first, min(stop, rows.rows), self.schema))
            first = stop

    def commit(self, marker: dict) -> dict:
        self._writer.close()
        self._sink.close()
        _fsync(self.tmp)  # the rows are on disk before the file gets its name
        os.replace(self.tmp, self.path)
        fsync_folder(self.folder)  # ... and before the marker says so
        marker = {**marker, "file": self.path.name, "bytes": self.path.stat().st_size}
        write_text_atomic(self.folder / f"{shard_name(self.index)}.json", json.dumps(marker))
        return marker

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def read_marker(folder: Path, index: int) -> dict | None:
    """The completion marker of shard ``index`` when the shard is complete (its rows file is there with
    the size the marker recorded), else None."""
    try:
        marker = json.loads((folder / f"{shard_name(index)}.json").read_text(encoding="utf-8"))
        if (folder / marker["file"]).stat().st_size == marker["bytes"]:
            return marker
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def build_shard(builder, folder: Path, index: int, vocab_size: int | None, batch_bytes: int) -> dict:
    """Build shard ``index`` with a ``phase_data.ShardBuilder`` into ``folder``; returns its marker."""
    writer = ShardWriter(folder, index, vocab_size, batch_bytes)
    try:
        marker = builder.build(index, writer.write)
    except BaseException:
        writer.abort()
        raise
    return writer.commit(marker)


def _open_shard(folder: Path, file: str):
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(folder / file), "r")).read_all()  # zero-copy, memory-mapped


def finalize_build(
    folder: Path,
    phase: PhaseConfig,
    fingerprint: str,
    build_missing: Callable[[int], dict],
    extra: dict | None = None,
    max_shards: int = 1 << 20,
) -> dict:
    """Keep shards 0, 1, ... until ``phase.tokens`` (building any missing one with ``build_missing``),
    delete the rest, write ``build.json``; returns it. ``extra`` is stored in ``build.json`` too."""
    import pyarrow.compute as pc

    stats = PhaseStats(max_seq_len=phase.max_seq_len, domain_share_log=scheduled_domain_share(phase))
    kept, built_here = [], []
    while stats.num_tokens < phase.tokens:
        index = len(kept)
        if index >= max_shards:
            raise RuntimeError(
                f"{folder}: {index} shards hold only {stats.num_tokens} of {phase.tokens} tokens"
            )
        marker = read_marker(folder, index)
        if marker is None:
            marker = build_missing(index)
            built_here.append(index)
        if stats.num_tokens + marker["tokens"] < phase.tokens:
            keep = marker["rows"]
            shard_stats = PhaseStats(max_seq_len=phase.max_seq_len)
            for buffer in marker["buffers"]:  # whole buffers: their stats are exact
                shard_stats.add(PhaseStats.from_json(buffer["stats"]))
        else:  # the shard that reaches the budget: cut at the row that does
            table = _open_shard(folder, marker["file"])
            lengths = table.column("length").to_numpy()
            spans = pc.list_value_length(table.column("spans")).to_numpy(zero_copy_only=False)
            keep = rows_within_budget(lengths, stats.num_tokens, phase.tokens)
            shard_stats = kept_stats(marker, keep, lengths, spans, phase.max_seq_len)
        stats.add(shard_stats)
        kept.append({"file": marker["file"], "rows": keep})
    keep_names = {shard_name(k) for k in range(len(kept))}
    for path in folder.glob("shard-*"):
        if path.name.split(".")[0] not in keep_names:
            path.unlink()  # shards planned past the budget
    info = {
        "fingerprint": fingerprint,
        "format": FORMAT_VERSION,
        "shards": kept,
        "built_by_finalize": built_here,
        "stats": stats.to_json(),
        **(extra or {}),
    }
    write_text_atomic(folder / BUILD_INFO, json.dumps(info, indent=1))
    for stale in folder.parent.glob("rows*"):  # earlier builds of this phase (other recipes, older formats)
        if stale.is_dir() and stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return info


@dataclass
class PhaseRows:
    """A phase's finished on-disk build.

    Attributes:
        table: ``pyarrow.Table`` of the kept rows, memory-mapped from the shard files (columns
            ``input_ids``, ``doc_lengths``, ``spans``, ``length``).
        stats: what went into the rows.  folder: the build folder.  info: its ``build.json``.
    """

    table: object
    stats: PhaseStats
    folder: Path
    info: dict

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @property
    def packing_efficiency(self) -> float:
        return self.stats.packing_efficiency

    @property
    def lengths(self):
        """Row lengths as a (memory-mapped) Arrow column."""
        return self.table.column("length")

    def summary(self) -> dict:
        return self.stats.summary()


def read_build_info(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or unreadable: not built


def load_build(folder: Path, fingerprint: str) -> PhaseRows | None:
    """The finished build in ``folder`` when it was built for ``fingerprint``, else None."""
    import pyarrow as pa

    folder = Path(folder)
    info = read_build_info(folder)
    if info is None or info.get("fingerprint") != fingerprint:
        return None
    tables = [_open_shard(folder, shard["file"]).slice(0, shard["rows"]) for shard in info["shards"]]
    return PhaseRows(pa.concat_tables(tables), PhaseStats.from_json(info["stats"]), folder, info)


def wait_for_build(folder: Path, fingerprint: str, poll_seconds: float = 2.0) -> PhaseRows:
    """Poll the file system for another process's build (a paper-scale build takes far longer than a
    collective's timeout; if the building process dies, the launcher stops this one too)."""
    while (found := load_build(folder, fingerprint)) is None:
        time.sleep(poll_seconds)
    return found
