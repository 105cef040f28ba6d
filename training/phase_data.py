"""A phase's training rows: mixture sampling → tokenization (+ Guided-MLM spans) → best-fit packing,
and the deterministic batch plan (batch-size warmup by tokens seen) the Trainer iterates in order.

Rows are generated as a stream with memory bounded by the packing buffer (``data.buffer_docs``
documents) and written to an on-disk Arrow dataset that training memory-maps (``build_phase_rows``),
so the token budget only costs disk. The build is deterministic from the recipe seed and fingerprinted:
a resumed run reuses the finished build, and with masks seeded by row id sees exactly the same batches.
``build_phase_data`` returns the same rows as an in-memory list (small phases, tests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from training.attribute_miner import AttributeMiner, char_to_token_spans
from training.data import LoadedSource, source_files
from training.mixture import MixtureSampler, cumulative_domain_share, domain_share
from training.packing import PackedRow, TokenizedDoc, best_fit_pack
from training.recipe import DataConfig, PhaseConfig

logger = logging.getLogger(__name__)
# Bump when the generation or the on-disk layout changes: it is part of the build fingerprint.
FORMAT_VERSION = 1
BUILD_INFO = "build.json"  # written last inside the temp folder: its presence marks a complete build
ROWS_FILE = "rows.arrow"


@dataclass
class PhaseStats:
    """What went into a phase's rows, accumulated while they are generated (no row kept)."""

    max_seq_len: int
    num_rows: int = 0
    num_tokens: int = 0
    docs_per_source: Counter = field(default_factory=Counter)
    tokens_per_source: Counter = field(default_factory=Counter)
    domain_share_log: list[tuple[float, float]] = field(default_factory=list)  # scheduled (progress, share)
    realised_domain_share: list[float] = field(default_factory=list)  # domain share of tokens per tenth
    mined_spans: int = 0

    @property
    def packing_efficiency(self) -> float:
        """Real tokens / slots (rows · max_seq_len)."""
        return self.num_tokens / max(1, self.num_rows * self.max_seq_len)

    def summary(self) -> dict:
        return {
            "rows": self.num_rows,
            "tokens": self.num_tokens,
            "packing_efficiency": round(self.packing_efficiency, 4),
            "docs_per_source": dict(self.docs_per_source),
            "tokens_per_source": dict(self.tokens_per_source),
            "mined_spans": self.mined_spans,
            "domain_share": [(round(p, 3), round(s, 3)) for p, s in self.domain_share_log],
            "realised_domain_share": self.realised_domain_share,
        }

    def to_json(self) -> dict:
        return {**self.summary(), "max_seq_len": self.max_seq_len, "domain_share": self.domain_share_log}

    @classmethod
    def from_json(cls, obj: dict) -> PhaseStats:
        return cls(
            max_seq_len=obj["max_seq_len"],
            num_rows=obj["rows"],
            num_tokens=obj["tokens"],
            docs_per_source=Counter(obj["docs_per_source"]),
            tokens_per_source=Counter(obj["tokens_per_source"]),
            domain_share_log=[tuple(x) for x in obj["domain_share"]],
            realised_domain_share=obj["realised_domain_share"],
            mined_spans=obj["mined_spans"],
        )


@dataclass
class PhaseData(PhaseStats):
    """Packed rows in memory and what went into them (``build_phase_data``)."""

    rows: list[PackedRow] = field(default_factory=list)


def generate_rows(
    general: list[LoadedSource],
    domain: list[LoadedSource],
    data: DataConfig,
    phase: PhaseConfig,
    tokenizer,
    miner: AttributeMiner | None,
    seed: int,
    stats: PhaseStats,
    chunk_docs: int = 64,
) -> Iterator[PackedRow]:
    """Sample, tokenize and pack documents until ``phase.tokens`` real tokens are produced.

    Yields the rows in training order, one packing buffer (``data.buffer_docs`` documents) at a time,
    so memory is bounded by the buffer whatever the budget. ``stats`` is filled in as rows are yielded
    (complete once the generator is exhausted).
    """
    sampler = MixtureSampler(general, domain, phase.mixture, data.temperature, seed)
    mined_sources = {s.config.name for s in (*general, *domain) if s.config.mine_attributes}
    shuffle_rng = np.random.default_rng([seed, 7])
    buffer: list[TokenizedDoc] = []
    produced, dom_tokens, n_docs = 0, 0, 0
    mean_len = {True: 64.0, False: 256.0}  # running mean tokens per document of each group
    group_stats = {True: [0, 0], False: [0, 0]}  # tokens, documents
    deciles = np.zeros((10, 2))  # (domain tokens, all tokens) per tenth of the phase

    def flush() -> Iterator[PackedRow]:
        # best-fit orders rows by piece length; shuffle inside the buffer, keep the order across buffers
        # (that order carries the phase-3 annealing)
        rows = best_fit_pack(buffer, phase.max_seq_len)
        buffer.clear()
        for i in shuffle_rng.permutation(len(rows)):
            stats.num_rows += 1
            stats.num_tokens += len(rows[i].input_ids)
            yield rows[i]

    with tqdm(total=phase.tokens, desc="tokenize+pack", unit="tok", unit_scale=True, leave=False) as bar:
        while produced < phase.tokens:
            # choose each document's group so the *token* share of the domain follows the schedule;
            # within a chunk, token counts are predicted with running mean lengths per group
            pred_dom, pred_all = dom_tokens, float(produced)
            batch = []
            # chunks stay below ~2% of the phase so the schedule is followed closely on small phases
            mean_doc = produced / max(1, n_docs) if n_docs else 256.0
            for _ in range(max(1, min(chunk_docs, int(0.02 * phase.tokens / mean_doc)))):
                # domain when its tokens lag the integral of the schedule (a cumulative controller)
                due = phase.tokens * cumulative_domain_share(phase.mixture, pred_all / phase.tokens)
                want = pred_dom < due if pred_all > 0 else sampler.rng.random() < phase.mixture.domain_start
                doc = sampler.sample_group(bool(want))
                pred_all += mean_len[doc.is_domain]
                pred_dom += mean_len[doc.is_domain] * doc.is_domain
                batch.append(doc)
            want_offsets = miner is not None and any(d.source in mined_sources for d in batch)
            enc = tokenizer(
                [d.text for d in batch],
                add_special_tokens=True,
                verbose=False,
                return_offsets_mapping=want_offsets,
                return_attention_mask=False,
            )
            for i, doc in enumerate(batch):
                if produced >= phase.tokens:  # the chunk overshoots the budget: drop the rest
                    break
                limit = phase.tokens - produced  # the last document is cut to fit the budget
                if data.max_doc_tokens:
                    limit = min(limit, data.max_doc_tokens)
                ids = enc["input_ids"][i][:limit]
                spans: list[tuple[int, int]] = []
                if want_offsets and doc.source in mined_sources:
                    mined = char_to_token_spans(enc["offset_mapping"][i], miner.mine(doc.text))
                    spans = [(a, min(b, len(ids))) for a, b in mined if a < len(ids)]
                    stats.mined_spans += len(spans)
                decile = min(9, int(10 * produced / phase.tokens))
                deciles[decile] += (len(ids) * doc.is_domain, len(ids))
                buffer.append(TokenizedDoc(ids, spans))
                n_docs += 1
                dom_tokens += len(ids) * doc.is_domain
                group_stats[doc.is_domain][0] += len(ids)
                group_stats[doc.is_domain][1] += 1
                mean_len[doc.is_domain] = group_stats[doc.is_domain][0] / group_stats[doc.is_domain][1]
                stats.docs_per_source[doc.source] += 1
                stats.tokens_per_source[doc.source] += len(ids)
                produced += len(ids)
                bar.update(len(ids))
                if len(buffer) >= data.buffer_docs:
                    yield from flush()
    if buffer:
        yield from flush()
    stats.domain_share_log = [(k / 10, domain_share(phase.mixture, k / 10)) for k in range(11)]
    stats.realised_domain_share = [round(float(d / max(1.0, n)), 3) for d, n in deciles]


def build_phase_data(
    general: list[LoadedSource],
    domain: list[LoadedSource],
    data: DataConfig,
    phase: PhaseConfig,
    tokenizer,
    miner: AttributeMiner | None,
    seed: int,
    chunk_docs: int = 64,
) -> PhaseData:
    """The phase's rows as an in-memory list (memory grows with ``phase.tokens``: small phases only;
    training uses the on-disk ``build_phase_rows``, which yields the same rows)."""
    result = PhaseData(max_seq_len=phase.max_seq_len)
    rows = generate_rows(general, domain, data, phase, tokenizer, miner, seed, result, chunk_docs)
    result.rows = list(rows)
    return result


# -- on-disk rows ----------------------------------------------------------------------------------


def process_state():
    """Accelerate's process state, initialised the way the Trainer will use it.

    Without CUDA, ``PartialState()`` ignores a CPU ``accelerate launch`` (every process would think it
    is the only, main, one); ``cpu=True`` makes it join the gloo process group, so only rank 0 builds.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _features(id_dtype: str = "int32"):
    """Row schema; ``id_dtype`` is ``uint16`` when every token id fits (halves the disk cost)."""
    import datasets

    return datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value(id_dtype)),
            "doc_lengths": datasets.Sequence(datasets.Value("int32")),
            "spans": datasets.Sequence(datasets.Sequence(datasets.Value("int32"), length=2)),
            "length": datasets.Value("int32"),  # len(input_ids): the batch plan reads only this column
        }
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


def write_rows(
    rows: Iterator[PackedRow], path: Path, batch_tokens: int = 262_144, vocab_size: int | None = None
) -> None:
    """Write rows to an Arrow stream file (the format ``datasets.Dataset.from_file`` memory-maps), in
    record batches of about ``batch_tokens`` tokens so memory stays bounded whatever the row length.
    Token ids are stored as uint16 when ``vocab_size`` ≤ 65,536 (ModernBERT's 50,368 does), else int32."""
    import pyarrow as pa

    small = vocab_size is not None and vocab_size <= 1 << 16
    schema = _features("uint16" if small else "int32").arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        pending: list[PackedRow] = []
        pending_tokens = 0
        for row in rows:
            pending.append(row)
            pending_tokens += len(row.input_ids)
            if pending_tokens >= batch_tokens:
                writer.write_batch(_record_batch(pending, schema))
                pending, pending_tokens = [], 0
        if pending:
            writer.write_batch(_record_batch(pending, schema))


def _tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def phase_fingerprint(
    general: list[LoadedSource],
    domain: list[LoadedSource],
    data: DataConfig,
    phase: PhaseConfig,
    tokenizer,
    miner: AttributeMiner | None,
    seed: int,
    chunk_docs: int = 64,
) -> str:
    """A hash of everything the rows depend on: the data config, the phase's budget/length/mixture,
    the seed, the tokenizer, whether a miner is used, the tokenizer-call size (it steers the mixture
    controller), and the size + mtime of every local source file (Hub sources are identified by
    id/subset/split only)."""
    files = {
        s.config.name: [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in source_files(s.config) or []]
        for s in (*general, *domain)
    }
    key = {
        "format": FORMAT_VERSION,
        "data": asdict(data),
        "phase": {
            "tokens": phase.tokens,
            "max_seq_len": phase.max_seq_len,
            "mixture": asdict(phase.mixture),
        },
        "seed": seed,
        "chunk_docs": chunk_docs,
        "tokenizer": _tokenizer_digest(tokenizer),
        "miner": miner is not None,
        "files": files,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()


@dataclass
class PhaseRows:
    """A phase's finished on-disk build: the memory-mapped rows and their stats.

    Attributes:
        dataset: ``datasets.Dataset`` memory-mapped from ``folder/rows.arrow`` (columns ``input_ids``,
            ``doc_lengths``, ``spans``, ``length``).
        stats: what went into the rows (per-source counts, mixture log, packing, mined spans).
        folder: the build folder; ``fingerprint``: the hash it was built for.
    """

    dataset: object
    stats: PhaseStats
    folder: Path
    fingerprint: str

    @property
    def packing_efficiency(self) -> float:
        return self.stats.packing_efficiency

    @property
    def lengths(self):
        """Row lengths as a (memory-mapped) Arrow column."""
        return self.dataset.data.column("length")

    def summary(self) -> dict:
        return self.stats.summary()


def _load_build(folder: Path, fingerprint: str) -> PhaseRows | None:
    info_path = folder / BUILD_INFO
    if not info_path.exists():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: rebuild
    if info.get("fingerprint") != fingerprint or not (folder / ROWS_FILE).exists():
        return None
    import datasets

    dataset = datasets.Dataset.from_file(str(folder / ROWS_FILE), in_memory=False)
    return PhaseRows(dataset, PhaseStats.from_json(info["stats"]), folder, fingerprint)


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
    write_batch_tokens: int = 262_144,
    chunk_docs: int = 64,
    poll_seconds: float = 2.0,
) -> PhaseRows:
    """The phase's rows on disk in ``folder``, built unless a finished build with the same fingerprint
    is there.

    The build streams rows into ``<folder>.tmp`` (memory bounded by the packing buffer), writes
    ``build.json`` (fingerprint + stats) last and renames the folder into place, so an interrupted
    build never looks finished and is redone from scratch. With several processes only the main one
    builds; the others poll every ``poll_seconds`` for the finished build (the output folder must be
    on a file system all processes see) and memory-map the same file.

    ``on_build`` receives a message when a build starts; ``write_batch_tokens`` is the size of an Arrow
    record batch; ``chunk_docs`` the most documents tokenized per call (build memory is
    O(buffer_docs + chunk_docs + write_batch_tokens), independent of ``phase.tokens``).
    """
    folder = Path(folder)
    fingerprint = phase_fingerprint(general, domain, data, phase, tokenizer, miner, seed, chunk_docs)
    state = process_state()
    if state.is_main_process:
        found = _load_build(folder, fingerprint)
        if found is None:
            if on_build is not None:
                on_build(f"building {phase.tokens} tokens of packed rows into {folder}")
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)  # a previous interrupted build
            tmp.mkdir(parents=True)
            stats = PhaseStats(max_seq_len=phase.max_seq_len)
            rows = generate_rows(general, domain, data, phase, tokenizer, miner, seed, stats, chunk_docs)
            write_rows(rows, tmp / ROWS_FILE, write_batch_tokens, len(tokenizer))
            info = {"fingerprint": fingerprint, "format": FORMAT_VERSION, "stats": stats.to_json()}
            (tmp / BUILD_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)  # a stale build (other fingerprint)
            os.replace(tmp, folder)
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


# -- training-time access --------------------------------------------------------------------------


class PackedDataset(torch.utils.data.Dataset):
    """Rows as dicts: ``row_id`` (the row's index: seeds its mask), ``input_ids``, ``doc_lengths``, ``spans``.

    ``rows``: a list of ``PackedRow`` or a memory-mapped ``datasets.Dataset`` (``PhaseRows.dataset``).
    """

    def __init__(self, rows) -> None:
        self.rows = rows
        self.on_disk = not isinstance(rows, list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        if self.on_disk:  # one Arrow read per micro-batch
            cols = self.rows[list(indices)]
            return [
                {
                    "row_id": int(i),
                    "input_ids": cols["input_ids"][k],
                    "doc_lengths": cols["doc_lengths"][k],
                    "spans": [tuple(s) for s in cols["spans"][k]],
                }
                for k, i in enumerate(indices)
            ]
        return [
            {
                "row_id": int(i),
                "input_ids": self.rows[i].input_ids,
                "doc_lengths": self.rows[i].doc_lengths,
                "spans": self.rows[i].spans,
            }
            for i in indices
        ]
