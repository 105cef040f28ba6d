"""The learning-per-token diagnostic: both sides train on the same rows and are scored the same way."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_learning as bl
from training.tokenizer import train_bpe_tokenizer

TINY = bl.Setup(steps=3, rows=4, hidden=32, intermediate=48, heads=2, layers=2, vocab=400)
TINY = bl.replace(TINY, tokenizer_docs=200, eval_texts=8)


@pytest.fixture(scope="module")
def corpus(data_dir):
    general, domain = bl._sources(data_dir)
    texts, exclude = bl.heldout_texts(data_dir, TINY.eval_texts)
    streams = [s.cycle(np.random.default_rng([0, i])) for i, s in enumerate((*general, *domain))]
    tokenizer = train_bpe_tokenizer([next(streams[i % len(streams)]) for i in range(200)], vocab_size=400)
    return general, domain, texts, exclude, tokenizer


def test_rows_fill_the_steps_and_never_hold_a_scored_product(corpus):
    general, domain, texts, exclude, tokenizer = corpus
    setup = bl.Setup(steps=20, rows=8, domain_share=0.7)
    rows = bl.build_rows(setup, tokenizer, general, domain, exclude)
    assert len(rows) == 160 and all(len(r.input_ids) <= setup.seq for r in rows)
    product_ids = {tuple(ids) for ids in tokenizer(sorted(exclude), verbose=False)["input_ids"]}
    starts = [0, *np.cumsum([n for r in rows for n in r.doc_lengths])]
    flat = [t for r in rows for t in r.input_ids]
    docs = {tuple(flat[a:b]) for a, b in zip(starts[:-1], starts[1:])}
    assert not docs & product_ids  # the scored products never reach training
    assert texts and all(t in exclude for t in texts)


def test_variants_resolve_to_one_swapped_component():
    ref, ours = bl.VARIANTS["reference"].resolved(), bl.VARIANTS["rexbert"].resolved()
    assert (ref.model, ref.masking, ref.optimizer, ref.schedule) == ("hf", "hf", "adamw", "constant")
    assert (ours.model, ours.masking, ours.schedule) == ("rexbert", "ours", "wsd")
    assert ours.optimizer == "stableadamw"
    swapped = bl.VARIANTS["rexbert:adamw"].resolved()
    assert swapped.optimizer == "adamw" and swapped.model == "rexbert" and swapped.loop == "rexbert"


@pytest.mark.slow
def test_both_loops_train_the_same_steps_and_are_scored(corpus, tmp_path, data_dir):
    results = bl.run(TINY, ["reference", "rexbert"], data_dir, tmp_path)
    assert [r["variant"] for r in results] == ["reference", "rexbert"]
    for r in results:
        assert 0.0 <= r["unseen_top1"] <= 1.0 and np.isfinite(r["final_loss"])
        assert r["steps"] == TINY.steps


def test_t_interval_matches_scipy():
    from scipy import stats

    values = [0.41, 0.44, 0.43, 0.47]
    mean, low, high = bl.t_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and (low, high) == pytest.approx(ref)
    assert bl.t_interval([0.5]) == (0.5, 0.5, 0.5)


def test_precision_report_pairs_bf16_with_fp32_by_seed():
    fp32 = {0: 0.50, 1: 0.52, 2: 0.54}
    bf16 = {0: 0.51, 1: 0.52, 2: 0.56}  # +0.01, 0, +0.02: paired mean +0.01
    results = [
        {"variant": "rexbert", "seed": s, "precision": "fp32", "unseen_top1": v} for s, v in fp32.items()
    ]
    results += [
        {"variant": "rexbert", "seed": s, "precision": "bf16", "unseen_top1": v} for s, v in bf16.items()
    ]
    text = "\n".join(bl.precision_report(results))
    _, low, high = bl.t_interval([0.01, 0.0, 0.02])
    assert "| rexbert | fp32 | 3 | 0.5200 |" in text and "| rexbert | bf16 | 3 | 0.5300 |" in text
    assert f"bf16 - fp32 = +0.0100 [{low:+.4f}, {high:+.4f}] (paired by seed, 3 seeds)" in text
    assert "bf16 mean inside the fp32 95% interval" in text
    far = [dict(r, unseen_top1=r["unseen_top1"] + 0.2) if r["precision"] == "bf16" else r for r in results]
    assert "bf16 mean OUTSIDE the fp32 95% interval" in "\n".join(bl.precision_report(far))


@pytest.mark.slow
def test_precisions_train_each_seeds_rows_and_differ_only_in_precision(tmp_path, data_dir):
    results = bl.run_grid(
        TINY, ["rexbert", "reference"], data_dir, tmp_path, seeds=[0, 1], precisions=["fp32", "bf16"]
    )
    cells = {(r["seed"], r["precision"], r["variant"]): r for r in results}
    assert len(cells) == 8 and all(r["steps"] == TINY.steps for r in results)
    for seed in (0, 1):
        for variant in ("rexbert", "reference"):
            fp32, bf16 = cells[(seed, "fp32", variant)], cells[(seed, "bf16", variant)]
            assert fp32["final_loss"] != bf16["final_loss"]  # bf16 autocast really ran
            assert abs(fp32["final_loss"] - bf16["final_loss"]) < 0.05 * fp32["final_loss"]  # same rows, init
    assert cells[(0, "fp32", "rexbert")]["final_loss"] != cells[(1, "fp32", "rexbert")]["final_loss"]
