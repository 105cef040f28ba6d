"""The collator's output is the packing contract the model consumes (see training/collator.py)."""

import numpy as np
import torch

from modeling_rexbert import RexBertConfig, RexBertModel
from training.collator import MICRO_BATCHES_KEY, STATS_KEY, PackedMLMCollator, StepCollator
from training.masking import IGNORE_INDEX, MaskingConfig, SpanMasker

SPECIAL = [0, 1, 2, 3]  # pad, cls, sep, mask
VOCAB = 97


def _rows(doc_lengths, seed=0):
    """Dataset items: rows of documents [CLS] ... [SEP] with random ids in [4, VOCAB)."""
    rng = np.random.default_rng(seed)
    items = []
    for r, lengths in enumerate(doc_lengths):
        ids = []
        for n in lengths:
            ids += [1, *rng.integers(4, VOCAB, n - 2).tolist(), 2]
        items.append({"row_id": 10 + r, "input_ids": ids, "doc_lengths": list(lengths), "spans": []})
    return items


def _collator(**masking):
    masker = SpanMasker(
        MaskingConfig(**masking), mask_token_id=3, special_token_ids=SPECIAL, vocab_size=VOCAB
    )
    return PackedMLMCollator(masker, seed=7, phase_index=2, local_window=8)


def test_flattened_contract_fields():
    items = _rows([[5, 9, 3], [17], [4, 4]])
    batch = _collator()(items)
    stats = batch.pop(STATS_KEY)
    lengths = [5, 9, 3, 17, 4, 4]
    n = sum(lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, n)
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["cu_seqlens"].tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert batch["max_seqlen"] == 17 and type(batch["max_seqlen"]) is int
    assert batch["position_ids"][0].tolist() == [p for length in lengths for p in range(length)]
    labelled = (batch["labels"][0] != IGNORE_INDEX).nonzero().flatten()
    assert torch.equal(batch["label_positions"], labelled)
    original = torch.tensor([t for it in items for t in it["input_ids"]])
    assert torch.equal(batch["labels"][0, labelled], original[labelled])  # labels are the true ids
    unmasked = batch["labels"][0] == IGNORE_INDEX
    assert torch.equal(batch["input_ids"][0, unmasked], original[unmasked])
    assert stats["labelled"] == labelled.numel() and stats["real_tokens"] == n and stats["rows"] == 3
    assert stats["row_id_sum"] == 10 + 11 + 12
    assert stats["global_pairs"] == sum(x * x for x in lengths)
    assert stats["local_pairs"] == sum(x * min(x, 9) for x in lengths)
    assert all(type(v) is int for v in stats.values())  # host values: logging never syncs the device


def test_a_rows_mask_depends_on_seed_phase_and_row_id_only():
    items = _rows([[30], [40], [25]])
    collate = _collator()
    whole = collate(items)["labels"][0]
    alone = collate(items[1:2])["labels"][0]
    assert torch.equal(whole[30:70], alone)  # same row, other micro-batch: same mask
    other_phase = PackedMLMCollator(collate.masker, seed=7, phase_index=3)(items[1:2])["labels"][0]
    assert not torch.equal(other_phase, alone)


def test_random_replacements_never_draw_special_ids():
    # every selected token is replaced at random: special ids must never appear at masked positions
    items = _rows([[200, 200], [400]], seed=3)
    batch = _collator(mlm_probability=0.5, mask_replace_prob=0.0, random_replace_prob=1.0)(items)
    picked = batch["input_ids"][0, batch["label_positions"]]
    assert picked.numel() > 300
    assert not np.isin(picked.numpy(), SPECIAL).any()
    # and special tokens themselves are never selected
    original = torch.tensor([t for it in items for t in it["input_ids"]])
    assert not np.isin(original[batch["label_positions"]].numpy(), SPECIAL).any()
    # the draw covers the rest of the vocabulary (a uniform pool, not a few ids)
    assert len(set(picked.tolist())) > 0.8 * (VOCAB - len(SPECIAL))


def test_step_collator_cuts_full_micro_batches():
    items = _rows([[8]] * 6)
    step = StepCollator(_collator(), micro_batch_size=2)(items)[MICRO_BATCHES_KEY]
    assert [mb[STATS_KEY]["rows"] for mb in step] == [2, 2, 2]
    assert [mb[STATS_KEY]["row_id_sum"] for mb in step] == [21, 25, 29]


def test_packed_documents_never_attend_to_each_other_collator_to_model():
    """End to end: each document's hidden states in the collated micro-batch equal the document alone."""
    torch.manual_seed(0)
    config = RexBertConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
        max_position_embeddings=256, local_attention=8, global_attn_every_n_layers=3, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, mask_token_id=3,
    )  # fmt: skip
    model = RexBertModel(config).eval()
    lengths = [[12, 30, 5], [41], [7, 19]]
    batch = _collator()(_rows(lengths))
    batch.pop(STATS_KEY)
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            cu_seqlens=batch["cu_seqlens"],
            max_seqlen=batch["max_seqlen"],
        ).last_hidden_state.reshape(-1, 32)  # (N, H)
        cu = batch["cu_seqlens"].tolist()
        for a, b in zip(cu[:-1], cu[1:]):
            alone = model(input_ids=batch["input_ids"][:, a:b]).last_hidden_state[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-5, rtol=1e-5)
