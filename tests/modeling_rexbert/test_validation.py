"""Host-side validation of packed batches (modeling_rexbert.validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_rexbert.validation import check_inputs, check_packed_inputs


def _contract(lengths: list[int], labelled_every: int = 3) -> dict:
    """A packed micro-batch as the collator builds it (numpy on the host, then tensors)."""
    n = sum(lengths)
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    cu[1:] = np.cumsum(lengths)
    labels = np.full((1, n), -100, dtype=np.int64)
    labels[0, ::labelled_every] = 7
    return {
        "input_ids": torch.randint(4, 97, (1, n)),
        "cu_seqlens": torch.from_numpy(cu),
        "max_seqlen": max(lengths),
        "position_ids": torch.from_numpy(np.concatenate([np.arange(m) for m in lengths])[None]),
        "labels": torch.from_numpy(labels),
        "label_positions": torch.from_numpy(np.flatnonzero(labels[0] != -100)),
    }


def test_check_packed_inputs_accepts_a_collator_batch_and_numpy():
    batch = _contract([5, 1, 9])
    check_packed_inputs(**batch, vocab_size=97)
    check_packed_inputs(
        **{k: v.numpy() if torch.is_tensor(v) else v for k, v in batch.items()}, vocab_size=97
    )


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("cu_seqlens", torch.tensor([0, 5, 6, 15]), "int32"),
        ("cu_seqlens", torch.tensor([0, 5, 6, 14], dtype=torch.int32), "end at N=15"),
        ("cu_seqlens", torch.tensor([0, 6, 5, 15], dtype=torch.int32), "non-decreasing"),
        ("max_seqlen", 8, "longest document \\(9\\)"),
        ("max_seqlen", torch.tensor(9), "Python int"),
        ("position_ids", torch.arange(15)[None], "token 5 has 5, expected 0"),
        ("label_positions", torch.tensor([0, 3]), "label_positions"),
        ("input_ids", torch.full((1, 15), 97), "vocab_size=97"),
        ("input_ids", torch.zeros(2, 15, dtype=torch.long), "shape \\(1, N\\)"),
        ("labels", torch.zeros(1, 14, dtype=torch.long), "labels: must have shape"),
    ],
)
def test_check_packed_inputs_names_the_bad_field(field, value, message):
    batch = _contract([5, 1, 9])
    batch[field] = value
    with pytest.raises(ValueError, match=f"{field if field != 'labels' else 'labels:'}.*{message}|{message}"):
        check_packed_inputs(**batch, vocab_size=97)


def test_check_inputs_names_out_of_vocab_ids_and_labels_on_padding():
    with pytest.raises(ValueError, match="vocab_size=97"):
        check_inputs(torch.tensor([[5, 97]]), vocab_size=97)
    with pytest.raises(ValueError, match="min -1"):
        check_inputs(torch.tensor([[5, -1]]), vocab_size=97)
    ids, mask = torch.tensor([[5, 6, 0]]), torch.tensor([[1, 1, 0]])
    with pytest.raises(ValueError, match="attention_mask == 0"):
        check_inputs(ids, attention_mask=mask, labels=ids)
    check_inputs(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100), vocab_size=97)
