import math

import numpy as np
import pytest

from training.masking import IGNORE_INDEX, MaskingConfig, SpanMasker

VOCAB, MASK, CLS, SEP, PAD = 1000, 4, 1, 2, 3
SPECIALS = (0, CLS, SEP, PAD, MASK)


def _batch(rng, rows=64, seq=256, doc_len=60):
    ids = rng.integers(10, VOCAB, size=(rows, seq))
    docs = np.arange(seq) // doc_len
    starts = np.r_[0, np.flatnonzero(np.diff(docs)) + 1]
    ids[:, starts] = CLS
    ids[:, np.minimum(starts + doc_len - 1, seq - 1)] = SEP
    attn = np.ones_like(ids)
    attn[:, -20:] = 0
    ids[:, -20:] = PAD
    return ids, attn, np.broadcast_to(docs, ids.shape).copy()


@pytest.mark.parametrize("ratio,lam", [(0.30, 3.0), (0.15, 2.0)])
def test_ratio_split_and_span_length_over_many_draws(ratio, lam):
    cfg = MaskingConfig(mlm_probability=ratio, span_lambda=lam)
    masker = SpanMasker(cfg, MASK, SPECIALS, VOCAB)
    data_rng = np.random.default_rng(1)
    selected = maskable = n_mask = n_rand = n_keep = 0
    lengths = []
    for draw in range(20):
        ids, attn, docs = _batch(data_rng)
        rngs = [np.random.default_rng([draw, b]) for b in range(ids.shape[0])]
        out, labels, stats = masker.mask_batch(ids, attn, docs, rngs)
        sel = labels != IGNORE_INDEX
        # never a special token or a pad, labels hold the original ids
        assert not np.isin(ids[sel], SPECIALS).any() and (attn[sel] == 1).all()
        assert (labels[sel] == ids[sel]).all() and (out[~sel] == ids[~sel]).all()
        selected += sel.sum()
        maskable += stats.maskable
        n_mask += (out[sel] == MASK).sum()
        n_keep += (out[sel] == ids[sel]).sum()
        n_rand += ((out[sel] != MASK) & (out[sel] != ids[sel])).sum()
        lengths += stats.span_lengths
    # tolerances: stochastic rounding makes the per-row ratio exact in expectation (±0.5 token/row)
    assert abs(selected / maskable - ratio) < 0.005
    assert abs(n_mask / selected - 0.8) < 0.01
    # a random draw equals the original with prob ~1/vocab, so "kept" is 10% + ~0.01%
    assert abs(n_rand / selected - 0.1) < 0.01 and abs(n_keep / selected - 0.1) < 0.01
    # placed spans are cut by documents, specials, earlier spans and the budget: within 12% of E[L]
    assert abs(np.mean(lengths) - cfg.expected_span_length) / cfg.expected_span_length < 0.12


def test_zero_truncated_poisson_draws_match_theory():
    masker = SpanMasker(MaskingConfig(span_lambda=3.0), MASK, SPECIALS, VOCAB)
    draws = masker._draw_lengths(np.random.default_rng(0), 200_000)
    assert draws.min() >= 1
    assert abs(draws.mean() - 3.0 / (1 - math.exp(-3.0))) < 0.02


def test_spans_never_cross_document_boundaries():
    # documents of 3 tokens without special tokens and very long spans: a span may only stop at a boundary
    cfg = MaskingConfig(mlm_probability=0.5, span_lambda=50.0)
    masker = SpanMasker(cfg, MASK, SPECIALS, VOCAB)
    ids = np.random.default_rng(0).integers(10, VOCAB, size=(8, 300))
    docs = np.broadcast_to(np.arange(300) // 3, ids.shape).copy()
    rngs = [np.random.default_rng(b) for b in range(8)]
    _, labels, stats = masker.mask_batch(ids, np.ones_like(ids), docs, rngs)
    assert max(stats.span_lengths) <= 3
    # without document ids the same rows produce longer spans, so the check above can fail
    rngs = [np.random.default_rng(b) for b in range(8)]
    _, _, stats_nodoc = masker.mask_batch(ids, np.ones_like(ids), None, rngs)
    assert max(stats_nodoc.span_lengths) > 3


def test_guided_rows_mask_mined_spans_first():
    cfg = MaskingConfig(mlm_probability=0.15, span_lambda=3.0, guided_fraction=1.0)
    masker = SpanMasker(cfg, MASK, SPECIALS, VOCAB)
    ids = np.random.default_rng(0).integers(10, VOCAB, size=(4, 200))
    spans = [[(10, 14), (50, 53)], [(100, 105)], [], [(7, 9)]]
    rngs = [np.random.default_rng(b) for b in range(4)]
    _, labels, stats = masker.mask_batch(ids, np.ones_like(ids), None, rngs, spans)
    sel = labels != IGNORE_INDEX
    for b, row_spans in enumerate(spans):
        for a, e in row_spans:
            assert sel[b, a:e].all(), (b, a, e)
    assert stats.guided_sequences == 3 and stats.guided_spans == 4
    assert abs(sel.sum(1) - 30).max() <= 1  # the budget still holds


def test_guided_fraction_is_per_batch_share():
    cfg = MaskingConfig(mlm_probability=0.15, guided_fraction=0.05)
    masker = SpanMasker(cfg, MASK, SPECIALS, VOCAB)
    # half the rows carry spans: each of them is guided with p = 0.05 * 2
    assert masker.guided_row_probability(64, 32) == pytest.approx(0.1)
    total = 0
    for draw in range(50):
        ids = np.random.default_rng(draw).integers(10, VOCAB, size=(40, 64))
        spans = [[(3, 6)] if b % 2 else [] for b in range(40)]
        rngs = [np.random.default_rng([draw, b]) for b in range(40)]
        total += masker.mask_batch(ids, np.ones_like(ids), None, rngs, spans)[2].guided_sequences
    assert abs(total / (50 * 40) - 0.05) < 0.015


def test_same_seed_same_mask_and_invalid_config():
    masker = SpanMasker(MaskingConfig(), MASK, SPECIALS, VOCAB)
    ids = np.random.default_rng(0).integers(10, VOCAB, size=(2, 64))
    a, b = (
        masker.mask_batch(ids, np.ones_like(ids), None, [np.random.default_rng(s) for s in (5, 6)])
        for _ in range(2)
    )
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    with pytest.raises(ValueError, match="mlm_probability"):
        MaskingConfig(mlm_probability=1.5)
