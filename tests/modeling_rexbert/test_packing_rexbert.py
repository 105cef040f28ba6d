"""Every packing convention transformers uses becomes the same PackedBatch, or a clear error."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorWithFlattening

from modeling_rexbert.packing_rexbert import pack_inputs

from .conftest import cu_seqlens


def _features(lengths: list[int]) -> list[dict]:
    return [{"input_ids": torch.randint(4, 97, (n,)).tolist()} for n in lengths]


@pytest.mark.parametrize("lengths", [[5, 1, 9], [9, 1, 5], [1, 9], [4]])
@pytest.mark.parametrize(
    "collator_kwargs", [{}, {"return_flash_attn_kwargs": True}, {"return_seq_idx": True}]
)
def test_data_collator_with_flattening_gives_the_documents(lengths, collator_kwargs):
    """transformers' collator, as it is: restarting position_ids alone, or with cu_seq_lens / max_length."""
    batch = DataCollatorWithFlattening(**collator_kwargs)(_features(lengths))
    batch.pop("labels")
    packed = pack_inputs(**batch)
    assert (
        packed.cu_seqlens.tolist() == cu_seqlens(lengths).tolist() and packed.cu_seqlens.dtype == torch.int32
    )
    assert packed.max_seqlen == max(lengths)  # the longest, wherever it sits
    assert packed.position_ids.tolist() == [p for n in lengths for p in range(n)]
    assert (packed.batch_size, packed.seq_len, packed.indices) == (1, sum(lengths), None)


@pytest.mark.parametrize("lengths", [[3, 0, 4], [1, 4, 2], [4, 2]])
def test_cu_seqlens_alone_derive_positions_and_the_longest_document(lengths):
    packed = pack_inputs(torch.zeros(1, sum(lengths), dtype=torch.long), cu_seqlens=cu_seqlens(lengths))
    assert packed.position_ids.tolist() == [p for n in lengths for p in range(n)]
    assert packed.max_seqlen == max(lengths) and torch.diff(packed.cu_seqlens).tolist() == lengths


def test_padded_input_handles_left_and_right_padding_empty_rows_and_any_row_order():
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    batch = pack_inputs(torch.zeros(4, 4, dtype=torch.long), attention_mask=mask)
    assert batch.indices.tolist() == [0, 1, 6, 7, 12, 13, 14]
    assert batch.cu_seqlens.tolist() == [0, 2, 4, 4, 7] and batch.cu_seqlens.dtype == torch.int32
    assert batch.position_ids.tolist() == [0, 1, 0, 1, 0, 1, 2] and batch.max_seqlen == 3  # the last row's
    x = torch.arange(16.0).view(4, 4)
    torch.testing.assert_close(batch.repad(batch.unpad(x)), x * mask)


def test_positions_with_a_mask_or_several_rows_are_rope_positions_only():
    """As in transformers: only an unmasked single row's restarting positions mark documents."""
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    masked = pack_inputs(
        torch.zeros(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 5), position_ids=pos
    )
    assert masked.cu_seqlens.tolist() == [0, 5] and masked.position_ids.tolist() == [0, 1, 2, 0, 1]
    rows = pack_inputs(torch.zeros(2, 5, dtype=torch.long), position_ids=pos)
    assert rows.cu_seqlens.tolist() == [0, 5, 10]
    one = pack_inputs(torch.zeros(1, 5, dtype=torch.long), position_ids=torch.arange(5)[None])
    assert one.cu_seqlens.tolist() == [0, 5]


@pytest.mark.parametrize(
    "extra,error,message",
    [
        ({"segment_ids": 0}, TypeError, "unexpected keyword argument\\(s\\) segment_ids"),
        ({"document_ids": 0, "foo": 1}, TypeError, "document_ids, foo"),
        ({"cu_seqlens": cu_seqlens([2, 3]), "cu_seq_lens_q": cu_seqlens([2, 3])}, ValueError, "not both"),
        ({"cu_seq_lens_q": cu_seqlens([2, 3]), "cu_seq_lens_k": cu_seqlens([5])}, ValueError, "must equal"),
        (
            {"cu_seq_lens_q": cu_seqlens([2, 3]), "max_length_q": 3, "max_length_k": 5},
            ValueError,
            "must equal",
        ),
        ({"max_length_q": 3}, ValueError, "need cu_seq_lens_q"),
        ({"seq_idx": torch.tensor([[0, 0, 1, 1, 1]])}, ValueError, "seq_idx alone"),
        ({"position_ids": torch.tensor([[3, 0, 1, 0, 1]])}, ValueError, "first restart is at token 1"),
        (
            {"cu_seqlens": cu_seqlens([2, 3]), "attention_mask": torch.ones(1, 5)},
            ValueError,
            "without attention_mask",
        ),
        ({"position_ids": torch.arange(4)[None]}, ValueError, "position_ids must have shape \\(1, 5\\)"),
    ],
)
def test_unknown_or_inconsistent_packing_arguments_are_named(extra, error, message):
    with pytest.raises(error, match=message):
        pack_inputs(torch.zeros(1, 5, dtype=torch.long), **extra)


def test_bert_tokenizers_token_type_ids_are_ignored():
    ids = torch.zeros(2, 5, dtype=torch.long)
    plain, typed = pack_inputs(ids), pack_inputs(ids, token_type_ids=torch.ones_like(ids))
    assert typed.cu_seqlens.tolist() == plain.cu_seqlens.tolist() == [0, 5, 10]


@pytest.mark.parametrize("shape", [(1, 0), (0, 5)])
def test_zero_length_input_is_named(shape):
    with pytest.raises(ValueError, match=rf"non-empty .* got shape \({shape[0]}, {shape[1]}\)"):
        pack_inputs(torch.zeros(shape, dtype=torch.long))
