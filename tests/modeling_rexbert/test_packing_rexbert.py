"""The packing contract: layouts built from packed / padded input, and the host-side validation helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_rexbert.packing_rexbert import check_packed_inputs, pack_flat, pack_padded

CPU = torch.device("cpu")


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


def test_pack_flat_derives_restarting_positions_on_device():
    cu = torch.tensor([0, 3, 3, 7], dtype=torch.int32)  # includes an empty document
    batch = pack_flat(7, cu, 4, None, CPU)
    assert batch.position_ids.tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert batch.indices is None and batch.max_seqlen == 4 and batch.host_seqlens() == [3, 0, 4]


def test_pack_padded_handles_left_and_right_padding_and_empty_rows():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    batch = pack_padded(3, 4, CPU, mask)
    assert batch.indices.tolist() == [0, 1, 2, 6, 7]
    assert batch.cu_seqlens.tolist() == [0, 3, 5, 5] and batch.cu_seqlens.dtype == torch.int32
    assert batch.position_ids.tolist() == [0, 1, 2, 0, 1] and batch.max_seqlen == 3
    x = torch.arange(12.0).view(3, 4)
    torch.testing.assert_close(batch.repad(batch.unpad(x)), x * mask)


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
