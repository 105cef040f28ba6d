"""A phase's training rows: mixture sampling → shards of documents → tokenization (+ Guided-MLM spans) →
best-fit packing.

Sampling is cheap and sequential: the mixture controller picks each document's group so the *token*
share of the domain group follows the phase's schedule, predicting a document's tokens from its
characters (a chars-per-token ratio measured per group on a fixed sample). The document sequence is cut
into shards of ``data.shard_buffers × data.buffer_docs`` documents. Tokenizing, mining and packing a
shard depends only on the shard, so shards are processed in parallel (``phase_build``) and the rows are
the same for any number of workers. Rows are taken shard by shard, in order, until ``phase.tokens`` real
tokens are reached. ``build_phase_data`` returns the rows in memory (small phases, tests); training uses
the sharded on-disk build of ``training.phase_build``, which yields the same rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from training.attribute_miner import AttributeMiner, char_to_token_spans
from training.data import LoadedSource
from training.mixture import MixtureSampler, cumulative_domain_share, domain_share
from training.packing import PackedRow, TokenizedDoc, best_fit_pack
from training.recipe import DataConfig, PhaseConfig

CALIBRATION_DOCS = 256  # documents per group tokenized to measure characters per token
SHARDS_PER_PHASE = 8  # a phase has at least this many shards (its documents' predicted tokens)


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


@dataclass
class PhaseData(PhaseStats):
    """Packed rows in memory and what went into them (``build_phase_data``)."""

    rows: list[PackedRow] = field(default_factory=list)


# -- sampling --------------------------------------------------------------------------------------


@dataclass
class ShardDocs:
    """The documents of one shard, in sampling order, with their source, group and phase progress."""

    index: int
    texts: list[str]
    sources: list[str]
    is_domain: list[bool]
    progress: list[float]  # predicted share of the phase's tokens sampled before each document


def chars_per_token(general, domain, tokenizer, seed: int) -> dict[bool, float]:
    """Characters per token of each group, measured on ``CALIBRATION_DOCS`` documents drawn with a fixed
    seed (the controller's token predictions; deterministic, so the document sequence is too)."""
    ratio = {}
    for is_domain, group in ((False, general), (True, domain)):
        if not group:
            continue
        per_source = max(1, CALIBRATION_DOCS // len(group))
        texts = [
            t for i, s in enumerate(group) for t in s.sample(per_source, np.random.default_rng([seed, 5, i]))
        ]
        tokens = sum(
            len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
        )
        ratio[is_domain] = max(1e-3, sum(len(t) for t in texts) / max(1, tokens))
    return ratio


def sample_shards(
    general: list[LoadedSource],
    domain: list[LoadedSource],
    data: DataConfig,
    phase: PhaseConfig,
    seed: int,
    ratio: dict[bool, float],
) -> Iterator[ShardDocs]:
    """Endless shards of documents; the consumer stops once enough tokens are packed.

    A document is domain when the domain's predicted tokens lag the integral of the schedule (a
    cumulative controller; past the predicted end of the phase the schedule stays at its end value).
    A shard holds ``shard_buffers × buffer_docs`` documents, or fewer once its predicted tokens reach
    1/``SHARDS_PER_PHASE`` of the phase (small phases still split into several shards of parallel work).
    """
    limit = data.max_doc_tokens or math.inf

    def predicted_tokens(text: str, is_domain: bool) -> float:
        return min(limit, len(text) / ratio[is_domain])

    sampler = MixtureSampler(general, domain, phase.mixture, data.temperature, seed, predicted_tokens)
    per_shard = data.shard_buffers * data.buffer_docs
    shard_tokens = phase.tokens / SHARDS_PER_PHASE
    budget = float(phase.tokens)
    total, dom = 0.0, 0.0
    end_share = domain_share(phase.mixture, 1.0)
    for index in range(1 << 62):
        shard = ShardDocs(index, [], [], [], [])
        start = total
        while len(shard.texts) < per_shard and total - start < shard_tokens:
            if total == 0:
                want = sampler.rng.random() < phase.mixture.domain_start
            else:
                due = budget * cumulative_domain_share(phase.mixture, total / budget)
                due += max(0.0, total - budget) * end_share
                want = dom < due
            doc = sampler.sample_group(bool(want))
            shard.texts.append(doc.text)
            shard.sources.append(doc.source)
            shard.is_domain.append(doc.is_domain)
            shard.progress.append(total / budget)
            predicted = predicted_tokens(doc.text, doc.is_domain)
            total += predicted
            dom += predicted * doc.is_domain
        yield shard


# -- one shard: tokenize, mine, pack -------------------------------------------------------------


@dataclass
class ShardResult:
    """A shard's rows and what went into them: per packing buffer (rows made, stats of its documents)."""

    rows: list[PackedRow]
    buffers: list[tuple[int, PhaseStats]]

    def marker(self) -> dict:
        """The JSON-able summary the on-disk build keeps next to the shard's rows."""
        return {
            "lengths": [len(r.input_ids) for r in self.rows],
            "span_counts": [len(r.spans) for r in self.rows],
            "buffers": [{"rows": n, "stats": st.to_json()} for n, st in self.buffers],
        }


def process_shard(
    shard: ShardDocs,
    data: DataConfig,
    phase: PhaseConfig,
    tokenizer,
    miner: AttributeMiner | None,
    mined_sources: frozenset[str],
    seed: int,
    chunk_docs: int = 64,
) -> ShardResult:
    """The shard's packed rows (a pure function of its arguments) and their stats.

    Packing buffers of ``data.buffer_docs`` documents keep the sampling order across buffers (it carries
    the phase-3 annealing); rows are shuffled within a buffer (best-fit orders them by length).
    """
    result = ShardResult([], [])
    buffer: list[TokenizedDoc] = []
    stats = PhaseStats(max_seq_len=phase.max_seq_len)
    limit = data.max_doc_tokens

    def flush() -> None:
        nonlocal stats
        packed = best_fit_pack(buffer, phase.max_seq_len)
        buffer.clear()
        order = np.random.default_rng([seed, 7, shard.index, len(result.buffers)]).permutation(len(packed))
        result.rows.extend(packed[i] for i in order)
        stats.num_rows = len(packed)
        stats.num_tokens = sum(len(r.input_ids) for r in packed)
        stats.rows_with_spans = sum(bool(r.spans) for r in packed)
        result.buffers.append((len(packed), stats))
        stats = PhaseStats(max_seq_len=phase.max_seq_len)

    n_docs = len(shard.texts)
    for start in range(0, n_docs, chunk_docs):
        chunk = range(start, min(n_docs, start + chunk_docs))
        offsets = miner is not None and any(shard.sources[i] in mined_sources for i in chunk)
        enc = tokenizer(
            [shard.texts[i] for i in chunk],
            add_special_tokens=True,
            verbose=False,
            return_offsets_mapping=offsets,
            return_attention_mask=False,
        )
        for j, i in enumerate(chunk):
            ids = enc["input_ids"][j][:limit] if limit else enc["input_ids"][j]
            spans: list[tuple[int, int]] = []
            if offsets and shard.sources[i] in mined_sources:
                mined = char_to_token_spans(enc["offset_mapping"][j], miner.mine(shard.texts[i]))
                spans = [(a, min(b, len(ids))) for a, b in mined if a < len(ids)]
            buffer.append(TokenizedDoc(ids, spans))
            decile = stats.decile_tokens[min(9, int(10 * shard.progress[i]))]
            decile[0] += len(ids) * shard.is_domain[i]
            decile[1] += len(ids)
            stats.docs_per_source[shard.sources[i]] += 1
            stats.tokens_per_source[shard.sources[i]] += len(ids)
            if len(buffer) >= data.buffer_docs:
                flush()
    if buffer:
        flush()
    return result


def rows_within_budget(lengths: list[int] | np.ndarray, tokens_before: int, budget: int) -> int:
    """How many of a shard's rows (``lengths``) the phase keeps: all, or up to the row that reaches the
    budget of ``budget`` tokens when ``tokens_before`` are already taken."""
    cumulative = tokens_before + np.cumsum(np.asarray(lengths, dtype=np.int64))
    return int(min(len(cumulative), np.searchsorted(cumulative, budget, side="left") + 1))


def kept_stats(marker: dict, keep: int, max_seq_len: int) -> PhaseStats:
    """Stats of a shard's first ``keep`` rows: rows, tokens and spans exact; per-source and per-tenth
    counts of the packing buffers with a kept row (the phase's last buffer may be counted whole)."""
    stats = PhaseStats(max_seq_len=max_seq_len)
    rows = 0
    for buffer in marker["buffers"]:
        if rows >= keep:
            break
        stats.add(PhaseStats.from_json(buffer["stats"]))
        rows += buffer["rows"]
    stats.num_rows = keep
    stats.num_tokens = int(sum(marker["lengths"][:keep]))
    stats.rows_with_spans = sum(1 for n in marker["span_counts"][:keep] if n)
    stats.mined_spans = int(sum(marker["span_counts"][:keep]))
    return stats


def mined_source_names(general, domain) -> frozenset[str]:
    return frozenset(s.config.name for s in (*general, *domain) if s.config.mine_attributes)


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
    training uses ``phase_build.build_phase_rows``, which yields the same rows)."""
    result = PhaseData(max_seq_len=phase.max_seq_len)
    result.domain_share_log = scheduled_domain_share(phase)
    ratio = chars_per_token(general, domain, tokenizer, seed)
    mined = mined_source_names(general, domain)
    for shard in sample_shards(general, domain, data, phase, seed, ratio):
        shard_result = process_shard(shard, data, phase, tokenizer, miner, mined, seed, chunk_docs)
        marker = shard_result.marker()
        keep = rows_within_budget(marker["lengths"], result.num_tokens, phase.tokens)
        result.add(kept_stats(marker, keep, phase.max_seq_len))
        result.rows.extend(shard_result.rows[:keep])
        if result.num_tokens >= phase.tokens:
            return result
    raise AssertionError("unreachable: shards are endless")


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
