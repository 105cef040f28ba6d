"""The training benchmark: its FLOP accounting, the HF baseline's setup, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import ModernBertConfig
from transformers.trainer_pt_utils import LengthGroupedSampler

from benchmarks import bench_training as bt
from modeling_rexbert import RexBertConfig
from training.tokenizer import train_bpe_tokenizer


@pytest.mark.parametrize("window", [4, 128])
def test_attention_pairs_match_a_brute_force_count(window):
    lengths = np.array([1, 3, 7, 64, 65, 200])
    global_pairs, local_pairs = bt.attention_pairs(lengths, window)
    brute_local = 0
    for n in lengths:
        i, j = np.meshgrid(np.arange(n), np.arange(n))
        brute_local += int((np.abs(i - j) <= window // 2).sum())
    assert global_pairs == float((lengths**2).sum())
    assert local_pairs == brute_local


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"product {i} blue cotton shirt size {i % 7} fits well" for i in range(200)]
    return train_bpe_tokenizer(texts, vocab_size=300)


def test_both_paths_are_counted_with_the_same_layer_types(tokenizer):
    kwargs = bt._model_kwargs(tokenizer, "micro")
    rope = {k: kwargs.pop(k) for k in ("global_rope_theta", "local_rope_theta")}
    hf = ModernBertConfig(**kwargs)
    rex = RexBertConfig(**kwargs, **rope, mask_token_id=tokenizer.mask_token_id)
    assert hf.layer_types == rex.layer_types and "sliding_attention" in hf.layer_types
    lengths = np.array([30, 512, 300, 5])
    assert bt.useful_flops(hf, lengths) == bt.useful_flops(rex, lengths)


def _slots_per_epoch(trainer) -> tuple[int, int]:
    real = slots = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        slots += batch["input_ids"].numel()
    return real, slots


def test_hf_baseline_groups_by_length_with_a_sparse_head(tokenizer, tmp_path):
    rng = np.random.default_rng(0)
    pieces = [list(rng.integers(10, 250, size=n)) for n in rng.choice([8, 20, 60, 300, 512], size=96)]
    budget = sum(map(len, pieces)) // 2
    trainer = bt.hf_trainer(tokenizer, pieces, rows=8, out=tmp_path, budget=budget, size="tiny")
    assert trainer.model.config.sparse_prediction
    assert trainer.data_collator.collator.mlm_probability == bt.MLM_PROBABILITY
    real, grouped_slots = _slots_per_epoch(trainer)
    assert budget <= real < budget + 8 * bt.SEQ  # whole batches up to the budget, documents uncut
    torch.manual_seed(0)
    trainer.args.train_sampling_strategy = "random"
    _, random_slots = _slots_per_epoch(trainer)
    assert grouped_slots < 0.8 * random_slots  # grouping removes most of the padding


def test_grouped_batches_are_whole_batches_of_transformers_length_grouped_sampler():
    lengths = list(np.random.default_rng(1).integers(1, 512, size=400))
    chosen = bt.grouped_batches(lengths, rows=4, budget=10_000)
    epoch = list(LengthGroupedSampler(4, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    epoch_batches = {tuple(epoch[i : i + 4]) for i in range(0, 400, 4)}
    batches = [tuple(chosen[i : i + 4]) for i in range(0, len(chosen), 4)]
    assert set(batches) <= epoch_batches and len(set(chosen)) == len(chosen)
    total = sum(lengths[i] for i in chosen)
    assert total >= 10_000 > total - sum(lengths[i] for i in batches[-1])
    # drawn across the epoch, not its first (longest-first) batches
    assert sorted(epoch.index(b[0]) // 4 for b in batches) != list(range(len(batches)))


@pytest.mark.parametrize("bf16", [True, False])
def test_hf_baseline_trains_in_the_requested_precision(tokenizer, tmp_path, bf16):
    pieces = [[5, 6, 7, 8]] * 16
    trainer = bt.hf_trainer(tokenizer, pieces, rows=4, out=tmp_path, budget=32, size="tiny", bf16=bf16)
    assert trainer.args.bf16 is bf16


@pytest.mark.slow
def test_tiny_benchmark_trains_both_paths_on_the_same_budget(tmp_path):
    """In bf16 both paths train under autocast, and transformers' path also in fp32: the ratio is taken
    against its faster precision."""
    out = tmp_path / "result.json"
    argv = ["--quick", "--repeats", "1", "--dtype", "bf16", "--out", str(tmp_path), "--json", str(out)]
    assert bt.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["precision"] == {"precision": "bf16", "reason": "forced: bf16"}
    runs = result["runs"]
    assert {name: [e["precision"] for e in entries] for name, entries in runs.items()} == {
        "rexbert": ["bf16"],
        "hf": ["bf16"],
        "hf-fp32": ["fp32"],
    }
    fastest = max(result["hf_tokens_per_s"], result["hf-fp32_tokens_per_s"])
    assert result["speedup_vs_fastest_hf"] == pytest.approx(result["rexbert_tokens_per_s"] / fastest)
    fastest_cpu = max(result["hf_tokens_per_cpu_s"], result["hf-fp32_tokens_per_cpu_s"])
    assert result["cpu_speedup_vs_fastest_hf"] == pytest.approx(
        result["rexbert_tokens_per_cpu_s"] / fastest_cpu
    )
    (rex,), (hf,), (hf32,) = runs["rexbert"], runs["hf"], runs["hf-fp32"]
    paired = rex["tokens_per_s"] / max(hf["tokens_per_s"], hf32["tokens_per_s"])
    assert result["paired_speedups_vs_fastest_hf"] == pytest.approx([paired])
    # the hf run takes whole batches up to the rexbert run's real tokens: at most one batch more
    assert 0.95 * 4096 <= rex["real_tokens"] <= 4096
    assert rex["optimizer_steps"] == 4096 // (2 * bt.SEQ)
    assert rex["real_tokens"] <= hf["real_tokens"] < rex["real_tokens"] + hf["rows_per_step"] * bt.SEQ
    # padding depends on the corpus (the embedded sample's long documents fill whole grouped batches)
    assert 0 < hf["real_share_of_slots"] <= 1.0 and rex["real_share_of_slots"] == rex["real_tokens"] / 4096
    assert result["transformers"].startswith("5.")


def test_rexbert_rows_are_a_shuffled_sample_of_the_corpus():
    """Best-fit packing lists the full single-document rows first: the benchmark's rows must mix them with
    the packed short documents as the corpus does, not train rexbert on long documents only."""
    pieces = [[5] * bt.SEQ] * 20 + [[6] * 50] * 200  # 20 full rows, 20 rows of 10 short documents
    rows = bt.packed_rows(pieces, steps=2, rows=4)
    assert len(rows) == 8
    docs = [list(r.doc_lengths) for r in rows]
    assert [bt.SEQ] in docs and any(d == [50] * 10 for d in docs), docs
