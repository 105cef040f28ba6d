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
