"""A phase's training rows: mixture sampling → tokenization (+ Guided-MLM spans) → best-fit packing,
and the deterministic batch plan (batch-size warmup by tokens seen) the Trainer iterates in order.

Rows are materialised per phase from the recipe seed, so a resumed run rebuilds exactly the same rows
and, with masks seeded by row id, sees exactly the same batches.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from training.attribute_miner import AttributeMiner, char_to_token_spans
from training.data import LoadedSource
from training.mixture import MixtureSampler, cumulative_domain_share, domain_share
from training.packing import PackedRow, TokenizedDoc, pack_stream, packing_efficiency
from training.recipe import DataConfig, PhaseConfig
from training.schedules import BatchSizeWarmup

logger = logging.getLogger(__name__)
ROW_ID_STRIDE = 1_000_000_000  # row ids are unique across phases: phase_index * stride + row


@dataclass
class PhaseData:
    """Packed rows and what went into them."""

    rows: list[PackedRow]
    max_seq_len: int
    docs_per_source: Counter = field(default_factory=Counter)
    tokens_per_source: Counter = field(default_factory=Counter)
    domain_share_log: list[tuple[float, float]] = field(default_factory=list)  # scheduled (progress, share)
    realised_domain_share: list[float] = field(default_factory=list)  # domain share of tokens per tenth
    mined_spans: int = 0

    @property
    def packing_efficiency(self) -> float:
        return packing_efficiency(self.rows, self.max_seq_len)

    def summary(self) -> dict:
        return {
            "rows": len(self.rows),
            "tokens": int(sum(len(r.input_ids) for r in self.rows)),
            "packing_efficiency": round(self.packing_efficiency, 4),
            "docs_per_source": dict(self.docs_per_source),
            "tokens_per_source": dict(self.tokens_per_source),
            "mined_spans": self.mined_spans,
            "domain_share": [(round(p, 3), round(s, 3)) for p, s in self.domain_share_log],
            "realised_domain_share": self.realised_domain_share,
        }


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
    """Sample, tokenize and pack documents until ``phase.tokens`` real tokens are produced."""
    sampler = MixtureSampler(general, domain, phase.mixture, data.temperature, seed)
    mined_sources = {s.config.name for s in (*general, *domain) if s.config.mine_attributes}
    result = PhaseData(rows=[], max_seq_len=phase.max_seq_len)
    docs: list[TokenizedDoc] = []
    produced, dom_tokens = 0, 0
    mean_len = {True: 64.0, False: 256.0}  # running mean tokens per document of each group
    group_stats = {True: [0, 0], False: [0, 0]}  # tokens, documents
    deciles = np.zeros((10, 2))  # (domain tokens, all tokens) per tenth of the phase
    with tqdm(total=phase.tokens, desc="tokenize+pack", unit="tok", unit_scale=True, leave=False) as bar:
        while produced < phase.tokens:
            # choose each document's group so the *token* share of the domain follows the schedule;
            # within a chunk, token counts are predicted with running mean lengths per group
            pred_dom, pred_all = dom_tokens, float(produced)
            batch = []
            # chunks stay below ~2% of the phase so the schedule is followed closely on small phases
            mean_doc = produced / max(1, len(docs)) if docs else 256.0
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
                    result.mined_spans += len(spans)
                decile = min(9, int(10 * produced / phase.tokens))
                deciles[decile] += (len(ids) * doc.is_domain, len(ids))
                docs.append(TokenizedDoc(ids, spans))
                dom_tokens += len(ids) * doc.is_domain
                group_stats[doc.is_domain][0] += len(ids)
                group_stats[doc.is_domain][1] += 1
                mean_len[doc.is_domain] = group_stats[doc.is_domain][0] / group_stats[doc.is_domain][1]
                result.docs_per_source[doc.source] += 1
                result.tokens_per_source[doc.source] += len(ids)
                produced += len(ids)
                bar.update(len(ids))
    result.domain_share_log = [(k / 10, domain_share(phase.mixture, k / 10)) for k in range(11)]
    result.realised_domain_share = [round(float(d / max(1.0, n)), 3) for d, n in deciles]
    rng = np.random.default_rng([seed, 7])
    for start in range(0, len(docs), data.buffer_docs):
        # best-fit orders rows by piece length; shuffle inside the buffer, keep the order across buffers
        # (that order carries the phase-3 annealing)
        rows = list(pack_stream(docs[start : start + data.buffer_docs], phase.max_seq_len, data.buffer_docs))
        result.rows.extend(rows[i] for i in rng.permutation(len(rows)))
    return result


def plan_batches(rows: list[PackedRow], phase: PhaseConfig, world_size: int) -> tuple[list[list[int]], int]:
    """Micro-batches (lists of row indices) in the order processes consume them, and the step count.

    One optimizer step = ``grad_accum × world_size`` micro-batches of equal size ``m``; ``m`` grows
    from 1 to ``micro_batch_size`` over ``batch_warmup_tokens`` tokens seen (batch-size warmup), so the
    global batch grows from ``grad_accum × world_size`` rows to ``batch_size`` rows.
    """
    per_pass = phase.micro_batch_size * world_size
    if phase.batch_size % per_pass:
        raise ValueError(
            f"batch_size ({phase.batch_size}) must be a multiple of micro_batch_size × "
            "processes "
            f"({phase.micro_batch_size} × {world_size})"
        )
    grad_accum = phase.batch_size // per_pass
    warmup = BatchSizeWarmup(full_batch=phase.micro_batch_size, warmup_tokens=phase.batch_warmup_tokens)
    plan: list[list[int]] = []
    tokens_seen, index, steps = 0, 0, 0
    while True:
        m = warmup(tokens_seen)
        need = m * grad_accum * world_size
        if index + need > len(rows):
            break
        for k in range(grad_accum * world_size):
            plan.append(list(range(index + k * m, index + (k + 1) * m)))
        tokens_seen += sum(len(rows[i].input_ids) for i in range(index, index + need))
        index += need
        steps += 1
    if steps == 0:
        raise ValueError(
            f"the phase produced {len(rows)} rows, fewer than one batch ({phase.batch_size}): "
            "raise tokens or lower batch_size"
        )
    return plan, steps


class PackedDataset(torch.utils.data.Dataset):
    """Rows as dicts: ``row_id`` (seeds the row's mask), ``input_ids``, ``doc_lengths``, ``spans``."""

    def __init__(self, rows: list[PackedRow], phase_index: int) -> None:
        self.rows = rows
        self.offset = phase_index * ROW_ID_STRIDE

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return {
            "row_id": self.offset + i,
            "input_ids": row.input_ids,
            "doc_lengths": row.doc_lengths,
            "spans": row.spans,
        }


class PlannedBatchSampler(torch.utils.data.Sampler):
    """Yields the precomputed micro-batches in order (resume skips whole batches via Accelerate)."""

    def __init__(self, plan: list[list[int]]) -> None:
        self.plan = plan
        self.batch_size = max(len(b) for b in plan)  # Accelerate reads this attribute when sharding

    def __iter__(self):
        yield from self.plan

    def __len__(self) -> int:
        return len(self.plan)
