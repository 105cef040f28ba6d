import numpy as np
import pytest
import torch

from training.attribute_miner import AttributeMiner
from training.collator import STATS_KEY, PackedMLMCollator
from training.data import load_source
from training.masking import IGNORE_INDEX, MaskingConfig, SpanMasker
from training.packing import PackedRow
from training.phase_data import PackedDataset, build_phase_data, plan_batches
from training.recipe import DataConfig, MixtureConfig, PhaseConfig, SourceConfig
from training.tokenizer import train_bpe_tokenizer


def _rows(n, length=100):
    return [PackedRow(list(range(length)), [length], []) for _ in range(n)]


def test_plan_batches_warmup_and_processes():
    phase = PhaseConfig(batch_size=16, micro_batch_size=4, batch_warmup_tokens=2000)
    plan, steps = plan_batches(_rows(200), phase, world_size=2)
    sizes = [len(b) for b in plan]
    # grad_accum = 16 / (4·2) = 2 → 4 micro-batches per step, all of one size within a step
    per_step = [sizes[i : i + 4] for i in range(0, len(sizes), 4)]
    assert len(per_step) == steps and all(len(set(s)) == 1 for s in per_step)
    assert per_step[0][0] == 1 and per_step[-1][0] == 4
    assert [s[0] for s in per_step] == sorted(s[0] for s in per_step)
    flat = [i for b in plan for i in b]
    assert flat == list(range(len(flat)))  # every row once, in order
    with pytest.raises(ValueError, match="fewer than one batch"):
        plan_batches(_rows(3), phase, world_size=1)


def test_build_phase_data_and_collate(data_dir):
    icecat_path = str(data_dir / "icecat_products_chorus/icecat_text.parquet")
    icecat = load_source(
        SourceConfig(
            name="icecat",
            path=icecat_path,
            text_fields=["title", "short_description"],
            max_docs=400,
            mine_attributes=True,
        )
    )
    wiki = load_source(
        SourceConfig(
            name="wiki",
            path=str(data_dir / "wikitext2_raw_test/wiki.test.raw"),
            doc_per_line=True,
            max_docs=400,
        )
    )
    tok = train_bpe_tokenizer(wiki.texts + icecat.texts, vocab_size=1000)
    miner = AttributeMiner().fit(t.split("\n")[0] for t in icecat.texts)
    phase = PhaseConfig(
        tokens=20000,
        max_seq_len=128,
        mixture=MixtureConfig(domain_start=0.0, domain_end=1.0),
        masking=MaskingConfig(mlm_probability=0.15, guided_fraction=0.5),
    )
    data = build_phase_data([wiki], [icecat], DataConfig(buffer_docs=64), phase, tok, miner, seed=0)
    assert sum(len(r.input_ids) for r in data.rows) >= 20000 and data.packing_efficiency > 0.9
    assert data.mined_spans > 0 and set(data.docs_per_source) == {"icecat", "wiki"}
    shares = [s for _, s in data.domain_share_log]
    assert shares[0] == 0.0 and shares[-1] == 1.0
    # the realised token share follows the schedule: ∫ share = 0.5 overall, rising along the phase
    # (per-tenth values are noisy here: a tenth is only ~10 wiki paragraphs)
    total = data.tokens_per_source["icecat"] / sum(data.tokens_per_source.values())
    assert abs(total - 0.5) < 0.1
    realised = data.realised_domain_share
    assert sum(realised[:3]) + 0.5 < sum(realised[-3:]), realised
    # annealing: the domain share of rows grows along the phase
    first, last = data.rows[: len(data.rows) // 3], data.rows[-len(data.rows) // 3 :]
    assert sum(bool(r.spans) for r in last) > sum(bool(r.spans) for r in first)
    again = build_phase_data([wiki], [icecat], DataConfig(buffer_docs=64), phase, tok, miner, seed=0)
    assert [r.input_ids for r in again.rows] == [r.input_ids for r in data.rows]  # deterministic

    masker = SpanMasker(phase.masking, tok.mask_token_id, [0, 1, 2, 3, 4], len(tok))
    collate = PackedMLMCollator(masker, tok.pad_token_id, seed=1)
    dataset = PackedDataset(data.rows, phase_index=0)
    items = [dataset[i] for i in range(len(dataset) - 8, len(dataset))]
    batch = collate(items)
    stats = batch.pop(STATS_KEY)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["document_ids"].shape
    assert stats["real_tokens"] == int(batch["attention_mask"].sum())
    assert torch.all(batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX)
    # each document is one contiguous run of ids, starting with [CLS] (or a split piece)
    row = batch["document_ids"][0].numpy()
    assert np.all(np.diff(row) >= 0)
    # same rows → same masks (masks are seeded by row id, not by call order)
    again = collate(list(reversed(items)))
    assert torch.equal(again["labels"].flip(0), batch["labels"])
