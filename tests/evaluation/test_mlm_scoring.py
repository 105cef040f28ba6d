import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM

from evaluation.blocks import token_blocks
from evaluation.masking import span_mask
from evaluation.mlm_scoring import (
    MaskedTokenRanker,
    NoMLMHeadError,
    length_buckets,
    load_mlm,
    resolve_head_mode,
    target_ranks,
)


def _examples(tokenizer, titles):
    texts = [f"{t} variant {i}" for i, t in enumerate(titles * 6)]
    blocks = token_blocks(texts, tokenizer, 24, "truncate") + token_blocks(texts, tokenizer, 64, "block")
    return [span_mask(b.input_ids, b.word_ids, tokenizer.mask_token_id, seed=0) for b in blocks]


def _reference_ranks(model, examples):
    """Straightforward: one example at a time, full (S, V) logits, compare against torch.topk."""
    out = []
    with torch.no_grad():
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, ex.positions]  # (n, V)
            out.append(target_ranks(logits, torch.tensor(ex.targets)).numpy())
    return out


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_modernbert_dir"])
def test_head_modes_match_unbatched_full_logits(request, fixture, titles):
    model, tokenizer = load_mlm(str(request.getfixturevalue(fixture)))
    examples = _examples(tokenizer, titles)
    reference = _reference_ranks(
        AutoModelForMaskedLM.from_pretrained(request.getfixturevalue(fixture)).eval(), examples
    )
    modes = ["auto", "gather", "full"] + (["labels"] if fixture == "tiny_modernbert_dir" else [])
    for mode in modes:
        ranks = MaskedTokenRanker(model, tokenizer.pad_token_id, max_tokens=200, head=mode).ranks(examples)
        for got, want in zip(ranks, reference):
            np.testing.assert_array_equal(
                got, want
            )  # ranks are integers: padding/bucketing must not flip any
    assert resolve_head_mode(model) == ("labels" if fixture == "tiny_modernbert_dir" else "gather")


def test_ranks_agree_with_torch_topk():
    torch.manual_seed(0)
    logits = torch.randn(50, 100)
    targets = torch.randint(0, 100, (50,))
    ranks = target_ranks(logits, targets)
    assert (ranks[:, 1] == 0).all(), "no ties in continuous random logits"
    for k in (1, 3, 5):
        in_topk = (logits.topk(k, dim=1).indices == targets[:, None]).any(1)
        assert torch.equal(ranks[:, 0] < k, in_topk)


def test_ties_are_counted_not_resolved_in_the_targets_favour():
    logits = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [0.5, float("nan"), 0.1]])
    assert target_ranks(logits, torch.tensor([1, 2, 0])).tolist() == [[0, 1], [1, 1], [3, 0]]


def test_length_buckets_cover_and_respect_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, 500).tolist()
    batches = length_buckets(lengths, max_tokens=1024)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        assert len(batch) == 1 or (padded <= 1024 and padded <= 1.1 * sum(lengths[i] for i in batch))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.1 * sum(lengths), "sorted buckets keep padding small"


def test_model_without_mlm_head_is_a_clear_error(minilm_dir):
    with pytest.raises(NoMLMHeadError, match="no trained MLM head"):
        load_mlm(str(minilm_dir))


def test_rexbert_through_ranker(tiny_rexbert_dir, titles):
    model, tokenizer = load_mlm(str(tiny_rexbert_dir), trust_remote_code=True)
    assert resolve_head_mode(model) == "labels"
    examples = _examples(tokenizer, titles)
    reference = _reference_ranks(model, examples)
    for mode in ("labels", "full"):
        ranks = MaskedTokenRanker(model, tokenizer.pad_token_id, max_tokens=300, head=mode).ranks(examples)
        for got, want in zip(ranks, reference):
            np.testing.assert_array_equal(got, want)
