"""A phase's rows on disk: shards built in parallel worker processes, restartable, memory-mapped.

Layout of a finished build folder::

    shard-00000.arrow   rows of shard 0 (Arrow IPC *file* format: a footer indexes the record batches,
    shard-00000.json    so opening is O(1) and reads are memory-mapped); the .json (stats) is written
    ...                 after its .arrow and marks the shard complete
    build.json          fingerprint, the shards and rows kept, the phase's stats; written last

The build runs in ``<folder>.partial``: completed shards survive a crash or SIGKILL and a rerun with the
same fingerprint only builds the missing ones (re-sampling the documents is cheap: no tokenization), then
the folder is renamed into place. With ``data.workers`` > 1 shards are tokenized, mined and packed in a
pool of spawned processes, at most ``2 × workers`` shards in flight (memory is bounded by the shard size,
not the phase). Rows do not depend on the worker count. Only the main process of a multi-process job
builds; the others wait for ``build.json`` and memory-map the same files.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.attribute_miner import AttributeMiner
from training.data import LoadedSource, source_files
from training.packing import PackedRow
from training.phase_data import (
    PhaseStats,
    ShardDocs,
    chars_per_token,
    kept_stats,
    mined_source_names,
    process_shard,
    rows_within_budget,
    sample_shards,
    scheduled_domain_share,
)
from training.recipe import DataConfig, PhaseConfig

# Bump when the generation or the on-disk layout changes: it is part of the build fingerprint.
FORMAT_VERSION = 4
BUILD_INFO = "build.json"
FINGERPRINT_FILE = "fingerprint"
RECORD_BATCH_TOKENS = 262_144  # tokens per Arrow record batch (bounds the writer's memory)


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


def _record_batch(rows: list[PackedRow], schema):
    import pyarrow as pa

    # spans are fixed-size pairs: build the nested arrays from flat numpy buffers (no per-span objects)
    span_counts = np.array([len(r.spans) for r in rows], dtype=np.int32)
    flat_spans = np.array([x for r in rows for pair in r.spans for x in pair], dtype=np.int32)
    pairs = pa.FixedSizeListArray.from_arrays(pa.array(flat_spans, pa.int32()), 2)
    spans = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(span_counts)]), pa.int32()), pairs
    )
    columns = [
        pa.array([r.input_ids for r in rows], schema.field("input_ids").type),
        pa.array([r.doc_lengths for r in rows], pa.list_(pa.int32())),
        spans,
        pa.array([len(r.input_ids) for r in rows], pa.int32()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def write_shard(rows: list[PackedRow], marker: dict, folder: Path, index: int, vocab_size: int | None):
    """Write ``shard-<index>.arrow`` then its completion marker ``shard-<index>.json`` (atomically)."""
    import pyarrow as pa

    schema = _schema(vocab_size)
    path = folder / f"shard-{index:05d}.arrow"
    tmp = path.with_suffix(".arrow.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        start, tokens = 0, 0
        for k, row in enumerate(rows):
            tokens += len(row.input_ids)
            if tokens >= RECORD_BATCH_TOKENS or k == len(rows) - 1:
                writer.write_batch(_record_batch(rows[start : k + 1], schema))
                start, tokens = k + 1, 0
    os.replace(tmp, path)
    _atomic_write(folder / f"shard-{index:05d}.json", json.dumps(marker))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- worker processes ------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(context: dict) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one process per core already
    _WORKER.update(context)


def _build_shard(shard: ShardDocs) -> dict:
    """Tokenize, mine, pack and write one shard; returns its completion marker."""
    c = _WORKER
    result = process_shard(
        shard, c["data"], c["phase"], c["tokenizer"], c["miner"], c["mined"], c["seed"], c["chunk_docs"]
    )
    marker = result.marker()
    write_shard(result.rows, marker, c["folder"], shard.index, c["vocab_size"])
    return marker


# -- the build -------------------------------------------------------------------------------------


def _tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def phase_fingerprint(
    general, domain, data: DataConfig, phase: PhaseConfig, tokenizer, miner, seed: int
) -> str:
    """A hash of everything the rows depend on: the data config (not the worker count), the phase's
    budget/length/mixture, the seed, the tokenizer, the miner's lexicons, and the size + mtime of every
    local source file (Hub sources are identified by id/subset/split only)."""
    files = {
        s.config.name: [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in source_files(s.config) or []]
        for s in (*general, *domain)
    }
    key = {
        "format": FORMAT_VERSION,
        "data": {k: v for k, v in asdict(data).items() if k != "workers"},
        "phase": {"tokens": phase.tokens, "max_seq_len": phase.max_seq_len, "mixture": asdict(phase.mixture)},
        "seed": seed,
        "tokenizer": _tokenizer_digest(tokenizer),
        "miner": None if miner is None else [sorted(miner.brands), sorted(miner.product_types)],
        "files": files,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()


@dataclass
class PhaseRows:
    """A phase's finished on-disk build.

    Attributes:
        table: ``pyarrow.Table`` of the kept rows, memory-mapped from the shard files (columns
            ``input_ids``, ``doc_lengths``, ``spans``, ``length``).
        stats: what went into the rows.  folder: the build folder.  fingerprint: the hash it was built for.
    """

    table: object
    stats: PhaseStats
    folder: Path
    fingerprint: str

    @property
    def packing_efficiency(self) -> float:
        return self.stats.packing_efficiency

    @property
    def lengths(self):
        """Row lengths as a (memory-mapped) Arrow column."""
        return self.table.column("length")

    def summary(self) -> dict:
        return self.stats.summary()


def _load_build(folder: Path, fingerprint: str) -> PhaseRows | None:
    import pyarrow as pa

    try:
        info = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or unreadable: (re)build
    if info.get("fingerprint") != fingerprint:
        return None
    tables = []
    for shard in info["shards"]:
        reader = pa.ipc.open_file(pa.memory_map(str(folder / shard["file"]), "r"))
        tables.append(reader.read_all().slice(0, shard["rows"]))  # zero-copy views of the mapped file
    return PhaseRows(pa.concat_tables(tables), PhaseStats.from_json(info["stats"]), folder, fingerprint)


def build_phase_rows(
    general: list[LoadedSource],
    domain: list[LoadedSource],
    data: DataConfig,
    phase: PhaseConfig,
    tokenizer,
    miner: AttributeMiner | None,
    seed: int,
    folder: Path,
    on_build: Callable[[str], None] | None = None,
    chunk_docs: int = 64,
    poll_seconds: float = 2.0,
) -> PhaseRows:
    """The phase's rows in ``folder``, built (or finished) unless a build with the same fingerprint is
    there. ``on_build`` receives a message when a build starts; ``chunk_docs`` is the most documents
    per tokenizer call."""
    from training.phase_data import process_state  # imports torch: not in the worker processes

    folder = Path(folder)
    fingerprint = phase_fingerprint(general, domain, data, phase, tokenizer, miner, seed)
    state = process_state()
    if state.is_main_process:
        found = _load_build(folder, fingerprint)
        if found is None:
            if on_build is not None:
                on_build(
                    f"building {phase.tokens} tokens of packed rows into {folder} ({data.workers} workers)"
                )
            _build(general, domain, data, phase, tokenizer, miner, seed, folder, fingerprint, chunk_docs)
            found = _load_build(folder, fingerprint)
    else:
        # poll the file system instead of waiting in a collective: a paper-scale build takes far longer
        # than the process group's timeout (if rank 0 dies, the launcher stops this process too)
        found = _load_build(folder, fingerprint)
        while found is None:
            time.sleep(poll_seconds)
            found = _load_build(folder, fingerprint)
    state.wait_for_everyone()
    if found is None:
        raise RuntimeError(f"{folder}: the build with fingerprint {fingerprint[:12]} cannot be read back")
    return found


def _build(
    general, domain, data, phase, tokenizer, miner, seed, folder: Path, fingerprint, chunk_docs
) -> None:
    partial = folder.with_name(folder.name + ".partial")
    if _read(partial / FINGERPRINT_FILE) != fingerprint:  # another recipe's leftovers
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / FINGERPRINT_FILE).write_text(fingerprint)
    context = {
        "data": data,
        "phase": phase,
        "tokenizer": tokenizer,
        "miner": miner,
        "mined": mined_source_names(general, domain),
        "seed": seed,
        "chunk_docs": chunk_docs,
        "folder": partial,
        "vocab_size": len(tokenizer),
    }
    shards = sample_shards(
        general, domain, data, phase, seed, chars_per_token(general, domain, tokenizer, seed)
    )
    stats = PhaseStats(max_seq_len=phase.max_seq_len, domain_share_log=scheduled_domain_share(phase))
    kept: list[dict] = []
    completed = _completed_shards(shards, partial, context, data.workers)
    try:
        for index, marker in completed:
            keep = rows_within_budget(marker["lengths"], stats.num_tokens, phase.tokens)
            stats.add(kept_stats(marker, keep, phase.max_seq_len))
            kept.append({"file": f"shard-{index:05d}.arrow", "rows": keep})
            if stats.num_tokens >= phase.tokens:
                break
    finally:
        completed.close()  # stops the pool; shards already running finish writing first
    for extra in partial.glob("shard-*"):  # shards computed ahead of the budget's end
        if extra.name.split(".")[0] not in {k["file"].split(".")[0] for k in kept}:
            extra.unlink()
    (partial / FINGERPRINT_FILE).unlink()
    info = {"fingerprint": fingerprint, "format": FORMAT_VERSION, "shards": kept, "stats": stats.to_json()}
    _atomic_write(partial / BUILD_INFO, json.dumps(info, indent=1))
    shutil.rmtree(folder, ignore_errors=True)  # a stale build (other fingerprint)
    os.replace(partial, folder)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _completed_shards(shards, partial: Path, context: dict, workers: int):
    """Yield ``(index, completion marker)`` for shards 0, 1, 2, ... in order, building the missing ones
    (in-process with one worker, else in a spawned pool with at most ``2 × workers`` in flight)."""

    def done(index: int) -> dict | None:
        text = _read(partial / f"shard-{index:05d}.json")
        return None if text is None else json.loads(text)

    if workers <= 1:
        _init_worker(context)
        for shard in shards:
            yield shard.index, done(shard.index) or _build_shard(shard)
        return
    # spawn, not fork: the parent may hold tokenizer threads / a torch process group
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(context,),
    )
    pending: list[tuple[int, object]] = []  # (index, Future or finished marker), in shard order
    try:
        for shard in shards:
            marker = done(shard.index)
            pending.append((shard.index, marker if marker is not None else pool.submit(_build_shard, shard)))
            while pending and (
                len(pending) >= 2 * workers or not isinstance(pending[0][1], concurrent.futures.Future)
            ):
                index, item = pending.pop(0)
                yield index, item.result() if isinstance(item, concurrent.futures.Future) else item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
