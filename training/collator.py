"""Collate packed rows into flattened, masked MLM micro-batches (the training/model packing contract).

A micro-batch follows transformers' ``DataCollatorWithFlattening`` convention plus explicit document
boundaries, all computed here on the host so the training forward/backward never syncs with the device:

  input_ids        (1, N) long   every real token of the micro-batch's rows, documents concatenated
  position_ids     (1, N) long   restarting at 0 at each document
  cu_seqlens       (D+1,) int32  document boundaries 0, len_0, len_0+len_1, ..., N
  max_seqlen       Python int    the longest document
  labels           (1, N) long   -100 where not predicted
  label_positions  (M,) long     ascending flat indices with labels != -100 (sparse head gathers these)
  rexbert_stats    Python ints   for logging/MFU/loss normalisation (popped before the forward)

Rows are masked independently with ``numpy.random.default_rng([seed, phase_index, row_id])``, so a row's
mask does not depend on the process count, the micro-batch size or resumption, and seeds of different
phases cannot collide.
"""

from __future__ import annotations

import numpy as np
import torch

from training.masking import IGNORE_INDEX, MaskingStats, SpanMasker

STATS_KEY = "rexbert_stats"  # popped by the trainer before the forward pass
MICRO_BATCHES_KEY = "micro_batches"  # a step's micro-batches (StepCollator)


class PackedMLMCollator:
    """Flattens and masks one micro-batch of packed rows (dicts with ``row_id``, ``input_ids``,
    ``doc_lengths``, ``spans``; see ``phase_data.PackedDataset``).

    Args:
        masker: the phase's span masker.
        seed, phase_index: row ``r`` is masked with ``numpy.random.default_rng([seed, phase_index, r])``.
        local_window: the model's local attention window (for FLOP accounting only).
        guided_probability: chance that a row with mined spans is masked on them first (Guided MLM);
            the phase sets ``guided_fraction × rows / rows with spans`` so that ``guided_fraction`` of
            all its rows are guided. None: the same ratio within each micro-batch.
    """

    def __init__(
        self,
        masker: SpanMasker,
        seed: int,
        phase_index: int = 0,
        local_window: int = 128,
        guided_probability: float | None = None,
    ) -> None:
        self.masker = masker
        self.seed = seed
        self.phase_index = phase_index
        self.local_window = local_window
        self.guided_probability = guided_probability

    def __call__(self, items: list[dict]) -> dict:
        stats = MaskingStats()
        p_guided = self.guided_probability
        if p_guided is None:
            n_with_spans = sum(1 for it in items if len(it["spans"]))
            p_guided = self.masker.guided_row_probability(len(items), n_with_spans)
        ids_parts, label_parts, doc_lengths = [], [], []
        for it in items:
            ids = np.asarray(it["input_ids"], dtype=np.int64)  # (n,)
            lengths = np.asarray(it["doc_lengths"], dtype=np.int64)  # (d,)
            doc_ids = np.repeat(np.arange(lengths.size), lengths)  # (n,)
            rng = np.random.default_rng([self.seed, self.phase_index, int(it["row_id"])])
            spans = [tuple(s) for s in it["spans"]]
            masked, labels = self.masker.mask_row(
                ids, doc_ids, np.ones(ids.size, dtype=bool), rng, spans, p_guided, stats
            )
            ids_parts.append(masked)
            label_parts.append(labels)
            doc_lengths.append(lengths)
        input_ids = np.concatenate(ids_parts)  # (N,)
        labels = np.concatenate(label_parts)  # (N,)
        lengths = np.concatenate(doc_lengths)  # (D,)
        cu_seqlens = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)  # (D+1,)
        # position within its document: global index minus the document's start
        position_ids = np.arange(input_ids.size) - np.repeat(cu_seqlens[:-1].astype(np.int64), lengths)
        label_positions = np.flatnonzero(labels != IGNORE_INDEX)  # (M,)
        return {
            "input_ids": torch.from_numpy(input_ids)[None],
            "position_ids": torch.from_numpy(position_ids)[None],
            "cu_seqlens": torch.from_numpy(cu_seqlens),
            "max_seqlen": int(lengths.max()),
            "labels": torch.from_numpy(labels)[None],
            "label_positions": torch.from_numpy(label_positions),
            STATS_KEY: {
                "real_tokens": int(input_ids.size),
                "rows": len(items),
                "row_id_sum": sum(int(it["row_id"]) for it in items),
                "labelled": int(label_positions.size),
                "maskable": stats.maskable,
                "selected": stats.selected,
                "spans": stats.spans,
                "guided_sequences": stats.guided_sequences,
                "guided_spans": stats.guided_spans,
                "global_pairs": int((lengths**2).sum()),
                "local_pairs": int((lengths * np.minimum(lengths, self.local_window + 1)).sum()),
            },
        }


class StepCollator:
    """Cuts one process's rows of an optimizer step (``batch_plan.StepSampler``) into micro-batches of
    ``micro_batch_size`` rows and collates each: ``{"micro_batches": [micro-batch, ...]}``."""

    def __init__(self, collate: PackedMLMCollator, micro_batch_size: int) -> None:
        self.collate = collate
        self.micro_batch_size = micro_batch_size

    def __call__(self, items: list[dict]) -> dict:
        if len(items) % self.micro_batch_size:
            raise ValueError(f"{len(items)} rows do not make full micro-batches of {self.micro_batch_size}")
        m = self.micro_batch_size
        return {MICRO_BATCHES_KEY: [self.collate(items[i : i + m]) for i in range(0, len(items), m)]}
