import numpy as np
import pytest

from evaluation.blocks import token_blocks
from evaluation.masking import collator_mask, sample_span_units, span_mask, word_mask


def _blocks(tokenizer, titles, size=64):
    texts = [f"{t} {t.lower()} edition {i}" for i, t in enumerate(titles * 20)]
    return token_blocks(texts, tokenizer, size, "block")


def test_span_mask_rate_whole_words_and_specials(bert_tokenizer, titles):
    rates = []
    for block in _blocks(bert_tokenizer, titles):
        ex = span_mask(block.input_ids, block.word_ids, bert_tokenizer.mask_token_id, seed=3)
        words = np.asarray(block.word_ids)
        masked = np.zeros(len(words), bool)
        masked[ex.positions] = True
        assert not masked[words < 0].any(), "special/separator tokens are never masked"
        for w in np.unique(words[masked]):  # span-aware: every sub-token of a chosen word is masked
            assert masked[words == w].all()
        assert all(ex.input_ids[p] == bert_tokenizer.mask_token_id for p in ex.positions)
        assert ex.targets == [block.input_ids[p] for p in ex.positions]
        rates.append(masked.sum() / (words >= 0).sum())
    assert abs(np.mean(rates) - 0.15) < 0.02, np.mean(rates)


def test_span_lengths_are_multi_word():
    rng = np.random.default_rng(0)
    chosen = sample_span_units([1] * 1000, 150, rng)
    assert chosen.sum() == 150
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, chosen.astype(int), 0]) != 0))[::2]
    assert runs.mean() > 2.0, "geometric(0.2) spans average ~3.8 units"


def test_masks_fixed_per_example_and_seed(bert_tokenizer, titles):
    blocks = _blocks(bert_tokenizer, titles)
    first = [span_mask(b.input_ids, b.word_ids, 103, seed=7).positions for b in blocks]
    reversed_order = [span_mask(b.input_ids, b.word_ids, 103, seed=7).positions for b in reversed(blocks)]
    assert first == reversed_order[::-1], "a mask depends on the example, not on its order"
    other_seed = [span_mask(b.input_ids, b.word_ids, 103, seed=8).positions for b in blocks]
    assert first != other_seed


def test_word_mask_same_words_for_different_tokenizers(bert_tokenizer, bpe_tokenizer, titles):
    text = " ".join(titles)
    chosen_words = []
    for tok in (bert_tokenizer, bpe_tokenizer):
        enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        ex = word_mask(
            text,
            enc["input_ids"],
            enc["offset_mapping"],
            enc["special_tokens_mask"],
            tok.mask_token_id,
            seed=1,
            probability=0.3,
        )
        words = text.split()
        chosen_words.append(sorted(set(ex.groups)))
        for pos, group in zip(ex.positions, ex.groups):  # each masked token lies inside its word
            start, end = enc["offset_mapping"][pos]
            assert text[start:end].strip() in words[group]
        # every sub-token of a chosen word is masked
        inside = [
            i
            for i, (s, e) in enumerate(enc["offset_mapping"])
            if not enc["special_tokens_mask"][i]
            and text[s:e].strip()
            and any(text[s:e].strip() in words[g] for g in set(ex.groups))
        ]
        assert set(ex.positions) <= set(inside)
    assert chosen_words[0] == chosen_words[1]
    assert len(chosen_words[0]) == round(0.3 * len(text.split()))


def test_collator_protocol_matches_transformers_rate_and_is_seeded(bert_tokenizer, titles):
    blocks = _blocks(bert_tokenizer, titles, 128)
    total, masked, replaced = 0, 0, 0
    for block in blocks:
        a = collator_mask(block.input_ids, bert_tokenizer, seed=0)
        b = collator_mask(block.input_ids, bert_tokenizer, seed=0)
        assert a == b
        total += len(block.input_ids) - 2
        masked += len(a.positions)
        replaced += sum(a.input_ids[p] == bert_tokenizer.mask_token_id for p in a.positions)
        assert 0 not in a.positions and len(block.input_ids) - 1 not in a.positions  # [CLS]/[SEP] untouched
    assert abs(masked / total - 0.15) < 0.03
    assert abs(replaced / masked - 0.8) < 0.08


@pytest.mark.parametrize("budget", [0, 1, 5])
def test_sample_span_units_budget(budget):
    chosen = sample_span_units([2, 1, 3, 1, 1], budget, np.random.default_rng(0))
    cost = np.dot(chosen, [2, 1, 3, 1, 1])
    assert cost >= budget and (budget == 0) == (cost == 0)
