"""Collate packed rows into a masked MLM batch for the encoder's varlen path."""

from __future__ import annotations

import numpy as np
import torch

from training.masking import SpanMasker
from training.packing import document_ids_from_lengths

STATS_KEY = "rexbert_stats"  # popped by the trainer before the forward pass


class PackedMLMCollator:
    """Pads rows to the longest in the micro-batch, builds document ids and masks each row.

    Returns a dict with ``input_ids``, ``attention_mask``, ``document_ids``, ``labels`` (all (B, S)
    long tensors) and ``rexbert_stats`` (plain ints for logging: real tokens, slots, masking counts,
    and the attention work Σ len² (global) / Σ len·min(len, window+1) (local) for the MFU estimate).

    Args:
        masker: the phase's span masker.
        pad_token_id: id written into padding slots.
        seed: run seed; row ``r`` is masked with ``numpy.random.default_rng([seed, r])``.
        local_window: the model's local attention window (for FLOP accounting only).
    """

    def __init__(self, masker: SpanMasker, pad_token_id: int, seed: int, local_window: int = 128) -> None:
        self.masker = masker
        self.pad_token_id = pad_token_id
        self.seed = seed
        self.local_window = local_window

    def __call__(self, items: list[dict]) -> dict:
        seq = max(len(it["input_ids"]) for it in items)
        ids = np.full((len(items), seq), self.pad_token_id, dtype=np.int64)  # (B, S)
        attn = np.zeros_like(ids)
        docs = np.empty_like(ids)
        global_pairs = local_pairs = 0
        for b, it in enumerate(items):
            n = len(it["input_ids"])
            ids[b, :n] = it["input_ids"]
            attn[b, :n] = 1
            docs[b] = document_ids_from_lengths(it["doc_lengths"], seq)
            lengths = np.asarray(it["doc_lengths"], dtype=np.int64)
            global_pairs += int((lengths**2).sum())
            local_pairs += int((lengths * np.minimum(lengths, self.local_window + 1)).sum())
        rngs = [np.random.default_rng([self.seed, int(it["row_id"])]) for it in items]
        masked, labels, stats = self.masker.mask_batch(ids, attn, docs, rngs, [it["spans"] for it in items])
        return {
            "input_ids": torch.from_numpy(masked),
            "attention_mask": torch.from_numpy(attn),
            "document_ids": torch.from_numpy(docs),
            "labels": torch.from_numpy(labels),
            STATS_KEY: {
                "real_tokens": int(attn.sum()),
                "slots": int(attn.size),
                "rows": len(items),
                "maskable": stats.maskable,
                "selected": stats.selected,
                "spans": stats.spans,
                "guided_sequences": stats.guided_sequences,
                "guided_spans": stats.guided_spans,
                "global_pairs": global_pairs,
                "local_pairs": local_pairs,
            },
        }
