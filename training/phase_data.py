"""A phase's training rows, shard by shard: the shard's documents (``mixture.MixturePlan`` positions read
through ``source_index.DrawOrder``) → tokenization (+ Guided-MLM spans) → best-fit packing, written to a sink
one packing buffer at a time.

A shard is a pure function of the recipe, the sources' indexes, the tokenizer, the miner and the shard's
number, so shards are built by any number of tasks on any number of machines and the rows do not depend on
the split (``training.prepare`` runs them as datatrove tasks). Packing buffers of ``data.buffer_docs``
documents keep the sampling order across buffers (it carries the phase-3 annealing); rows are shuffled
within a buffer (best-fit orders them by length). A task holds one packing buffer (its texts, token ids and
rows as flat arrays) and one block per source, whatever the size of the shard or of the phase.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from training.attribute_miner import AttributeMiner, char_to_token_spans_batch, encoding_token_spans
from training.mixture import MixturePlan, domain_share
from training.packing import best_fit_rows, piece_bounds
from training.recipe import DataConfig, PhaseConfig
from training.source_index import DrawOrder

CHUNK_DOCS = 64  # documents per encode_batch call: long enough to amortise the call, short to hold
# Spans of documents up to this many tokens map through the encoding's own char->token lookups (each scans
# the document's offsets); longer ones through their offset lists in one numpy pass per chunk.
SHORT_DOC_TOKENS = 512


@dataclass
class PhaseStats:
    """What went into a phase's (or a shard's) rows; shard stats add up with :meth:`add`."""

    max_seq_len: int
    num_rows: int = 0
    num_tokens: int = 0
    docs_per_source: Counter = field(default_factory=Counter)
    tokens_per_source: Counter = field(default_factory=Counter)
    domain_share_log: list[tuple[float, float]] = field(default_factory=list)  # scheduled (progress, share)
    decile_tokens: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(10)])
    mined_spans: int = 0
    rows_with_spans: int = 0

    @property
    def packing_efficiency(self) -> float:
        """Real tokens / slots (rows · max_seq_len)."""
        return self.num_tokens / max(1, self.num_rows * self.max_seq_len)

    @property
    def realised_domain_share(self) -> list[float]:
        """Domain share of the tokens in each tenth of the phase."""
        return [round(d / max(1, n), 3) for d, n in self.decile_tokens]

    def add(self, other: PhaseStats) -> None:
        self.num_rows += other.num_rows
        self.num_tokens += other.num_tokens
        self.docs_per_source.update(other.docs_per_source)
        self.tokens_per_source.update(other.tokens_per_source)
        for mine, theirs in zip(self.decile_tokens, other.decile_tokens):
            mine[0] += theirs[0]
            mine[1] += theirs[1]
        self.mined_spans += other.mined_spans
        self.rows_with_spans += other.rows_with_spans

    def summary(self) -> dict:
        return {
            "rows": self.num_rows,
            "tokens": self.num_tokens,
            "packing_efficiency": round(self.packing_efficiency, 4),
            "docs_per_source": dict(self.docs_per_source),
            "tokens_per_source": dict(self.tokens_per_source),
            "mined_spans": self.mined_spans,
            "rows_with_spans": self.rows_with_spans,
            "domain_share": [(round(p, 3), round(s, 3)) for p, s in self.domain_share_log],
            "realised_domain_share": self.realised_domain_share,
        }

    def to_json(self) -> dict:
        return {
            "max_seq_len": self.max_seq_len,
            "rows": self.num_rows,
            "tokens": self.num_tokens,
            "docs_per_source": dict(self.docs_per_source),
            "tokens_per_source": dict(self.tokens_per_source),
            "domain_share": self.domain_share_log,
            "decile_tokens": self.decile_tokens,
            "mined_spans": self.mined_spans,
            "rows_with_spans": self.rows_with_spans,
        }

    @classmethod
    def from_json(cls, obj: dict) -> PhaseStats:
        return cls(
            max_seq_len=obj["max_seq_len"],
            num_rows=obj["rows"],
            num_tokens=obj["tokens"],
            docs_per_source=Counter(obj["docs_per_source"]),
            tokens_per_source=Counter(obj["tokens_per_source"]),
            domain_share_log=[tuple(x) for x in obj["domain_share"]],
            decile_tokens=obj["decile_tokens"],
            mined_spans=obj["mined_spans"],
            rows_with_spans=obj["rows_with_spans"],
        )


# -- one shard: read, tokenize, mine, pack ---------------------------------------------------------


@dataclass
class RowBatch:
    """Packed rows as flat arrays (what the Arrow writer stores; no Python object per token).

    ``ids``: the rows' token ids, concatenated; ``row_lengths``: tokens per row; ``doc_lengths`` /
    ``docs_per_row``: the rows' document lengths, row after row; ``spans`` (n, 2) / ``spans_per_row``:
    Guided-MLM spans in row coordinates, row after row.
    """

    ids: np.ndarray
    row_lengths: np.ndarray
    doc_lengths: np.ndarray
    docs_per_row: np.ndarray
    spans: np.ndarray
    spans_per_row: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.row_lengths)


@dataclass
class ShardSource:
    """One source as a shard builder reads it."""

    name: str
    is_domain: bool
    mined: bool
    draws: DrawOrder


def fast_encoder(tokenizer):
    """The tokenizer's Rust backend without truncation or padding: ``encode_batch`` is what the
    ``transformers`` fast tokenizer calls, minus its per-call Python conversions."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: the build needs one")
    encoder = Tokenizer.from_str(backend.to_str())
    encoder.no_truncation()
    encoder.no_padding()
    return encoder


class ShardBuilder:
    """Builds a phase's shards: :meth:`build` reads, tokenizes, mines and packs one shard and hands its
    rows to ``write`` one packing buffer at a time.

    Args:
        plan: the phase's mixture plan.  sources: the plan's sources, in its order.
        tokenizer: a fast tokenizer.  miner: the Guided-MLM miner (None: no spans).
        data / phase: the recipe's data section and the phase.  seed: the phase's seed.
        chunk_docs: documents per ``encode_batch`` call.
    """

    def __init__(
        self,
        plan: MixturePlan,
        sources: Sequence[ShardSource],
        tokenizer,
        miner: AttributeMiner | None,
        data: DataConfig,
        phase: PhaseConfig,
        seed: int,
        chunk_docs: int = CHUNK_DOCS,
    ) -> None:
        self.plan, self.sources, self.miner = plan, list(sources), miner
        self.encoder = fast_encoder(tokenizer)
        self.data, self.phase, self.seed, self.chunk_docs = data, phase, seed, chunk_docs

    def build(self, shard: int, write: Callable[[RowBatch], None]) -> dict:
        """Build shard ``shard``; returns its summary (rows, tokens, per-buffer stats, what was read, the
        seconds it took)."""
        started = time.perf_counter()
        ranges, source_of, progress = self.plan.order(shard)
        streams = {r.source: self.sources[r.source].draws.read(r.start, r.stop) for r in ranges}
        blocks_before = sum(s.draws.blocks_read for s in self.sources)
        marker: dict = {"shard": shard, "rows": 0, "tokens": 0, "positions": len(source_of), "buffers": []}
        buffer: list[tuple[str, int, float]] = []  # (text, source, progress)
        for source, at in zip(source_of.tolist(), progress.tolist()):
            text = next(streams[source])
            if text is None:  # a parquet row without text: its position stays empty
                continue
            buffer.append((text, source, at))
            if len(buffer) >= self.data.buffer_docs:
                self._flush(buffer, shard, marker, write)
        if buffer:
            self._flush(buffer, shard, marker, write)
        marker["blocks_read"] = sum(s.draws.blocks_read for s in self.sources) - blocks_before
        marker["seconds"] = round(time.perf_counter() - started, 4)
        return marker

    def _flush(self, buffer: list, shard: int, marker: dict, write: Callable[[RowBatch], None]) -> None:
        stats = PhaseStats(max_seq_len=self.phase.max_seq_len)
        docs: list[tuple[np.ndarray, list[tuple[int, int]]]] = []
        limit = self.data.max_doc_tokens
        for start in range(0, len(buffer), self.chunk_docs):
            chunk = buffer[start : start + self.chunk_docs]
            encodings = self.encoder.encode_batch([text for text, _, _ in chunk], add_special_tokens=True)
            mined = self._mine(chunk, encodings)
            for (_, source, at), encoding, doc_spans in zip(chunk, encodings, mined):
                ids = np.asarray(encoding.ids[:limit] if limit else encoding.ids, dtype=np.int32)
                spans = [(a, min(b, len(ids))) for a, b in doc_spans if a < len(ids)]
                docs.append((ids, spans))
                name, is_domain = self.sources[source].name, self.sources[source].is_domain
                decile = stats.decile_tokens[min(9, int(10 * at))]
                decile[0] += len(ids) * is_domain
                decile[1] += len(ids)
                stats.docs_per_source[name] += 1
                stats.tokens_per_source[name] += len(ids)
        buffer.clear()
        rows = self._pack(docs, shard, len(marker["buffers"]))
        stats.num_rows, stats.num_tokens = rows.rows, int(rows.row_lengths.sum())
        stats.rows_with_spans = int(np.count_nonzero(rows.spans_per_row))
        stats.mined_spans = int(rows.spans_per_row.sum())
        write(rows)
        marker["rows"] += stats.num_rows
        marker["tokens"] += stats.num_tokens
        marker["buffers"].append({"rows": stats.num_rows, "stats": stats.to_json()})

    def _mine(self, chunk: list, encodings: list) -> list[list[tuple[int, int]]]:
        """Token spans of each document of ``chunk`` mined for Guided MLM (none for the others)."""
        if self.miner is None:
            return [[] for _ in chunk]
        found: list[list[tuple[int, int]]] = [[] for _ in chunk]
        long: list[tuple[int, list]] = []  # (document, char spans) left to the offsets' numpy pass
        for k, (text, source, _) in enumerate(chunk):
            if not self.sources[source].mined:
                continue
            spans = self.miner.mine(text)
            mapped = (
                encoding_token_spans(encodings[k], spans) if len(encodings[k]) <= SHORT_DOC_TOKENS else None
            )
            if mapped is None:
                long.append((k, spans))
            else:
                found[k] = mapped
        if long:
            mapped_long = char_to_token_spans_batch(
                [encodings[k].offsets for k, _ in long], [s for _, s in long]
            )
            for (k, _), doc_spans in zip(long, mapped_long):
                found[k] = doc_spans
        return found

    def _pack(self, docs: list, shard: int, buffer_number: int) -> RowBatch:
        """Best-fit pack one buffer's documents and shuffle its rows (seeded by shard and buffer)."""
        max_len = self.phase.max_seq_len
        pieces = [
            (doc, a, b, spans)
            for doc, (ids, doc_spans) in enumerate(docs)
            for a, b, spans in piece_bounds(len(ids), doc_spans, max_len)
            if b > a
        ]
        rows = best_fit_rows([b - a for _, a, b, _ in pieces], max_len)
        order = np.random.default_rng([self.seed, 7, shard, buffer_number]).permutation(len(rows))
        ids, row_lengths, doc_lengths, docs_per_row, spans, spans_per_row = [], [], [], [], [], []
        for r in order:
            offset, row_spans = 0, 0
            for piece in rows[r]:
                doc, a, b, piece_spans = pieces[piece]
                ids.append(docs[doc][0][a:b])
                doc_lengths.append(b - a)
                spans.extend((s + offset, e + offset) for s, e in piece_spans)
                row_spans += len(piece_spans)
                offset += b - a
            row_lengths.append(offset)
            docs_per_row.append(len(rows[r]))
            spans_per_row.append(row_spans)
        return RowBatch(
            ids=np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32),
            row_lengths=np.asarray(row_lengths, dtype=np.int32),
            doc_lengths=np.asarray(doc_lengths, dtype=np.int32),
            docs_per_row=np.asarray(docs_per_row, dtype=np.int32),
            spans=np.asarray(spans, dtype=np.int32).reshape(-1, 2),
            spans_per_row=np.asarray(spans_per_row, dtype=np.int32),
        )


def rows_within_budget(lengths: Sequence[int] | np.ndarray, tokens_before: int, budget: int) -> int:
    """How many of a shard's rows (``lengths``) the phase keeps: all, or up to the row that reaches the
    budget of ``budget`` tokens when ``tokens_before`` are already taken."""
    cumulative = tokens_before + np.cumsum(np.asarray(lengths, dtype=np.int64))
    return int(min(len(cumulative), np.searchsorted(cumulative, budget, side="left") + 1))


def kept_stats(
    marker: dict, keep: int, lengths: np.ndarray, span_counts: np.ndarray, max_seq_len: int
) -> PhaseStats:
    """Stats of a shard's first ``keep`` rows (``lengths`` / ``span_counts``: all its rows'): rows, tokens
    and spans exact; per-source and per-tenth counts of the packing buffers with a kept row (the phase's
    last buffer may be counted whole)."""
    stats = PhaseStats(max_seq_len=max_seq_len)
    rows = 0
    for buffer in marker["buffers"]:
        if rows >= keep:
            break
        stats.add(PhaseStats.from_json(buffer["stats"]))
        rows += buffer["rows"]
    stats.num_rows = keep
    stats.num_tokens = int(np.asarray(lengths[:keep], dtype=np.int64).sum())
    stats.rows_with_spans = int(np.count_nonzero(span_counts[:keep]))
    stats.mined_spans = int(np.asarray(span_counts[:keep], dtype=np.int64).sum())
    return stats


def scheduled_domain_share(phase: PhaseConfig) -> list[tuple[float, float]]:
    return [(k / 10, domain_share(phase.mixture, k / 10)) for k in range(11)]


# -- training-time access --------------------------------------------------------------------------


def process_state():
    """Accelerate's process state, initialised the way the Trainer will use it.

    Without CUDA, ``PartialState()`` ignores a CPU ``accelerate launch`` (every process would think it
    is the only, main, one); ``cpu=True`` makes it join the gloo process group, so only rank 0 builds.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


class PackedDataset:
    """A map-style dataset of rows as dicts: ``row_id`` (the row's index: seeds its mask), ``input_ids``,
    ``doc_lengths``, ``spans``. (No torch import here: shard-building worker processes import this module.)

    ``rows``: a list of ``PackedRow`` or a memory-mapped ``pyarrow.Table`` (``PhaseRows.table``).
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
            cols = self.rows.take(list(indices)).to_pydict()
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
