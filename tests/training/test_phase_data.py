"""One shard at a time: every token of every document read lands in one row, the Rust encoder gives the
tokenizer's own ids, spans stay inside their documents, the schedule anneals, and a task's memory does not
grow with the shard or the input."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from rexbert_common.executors import ExecutorConfig
from tests.training._tiny import prepare_recipe
from tests.training.conftest import copy_setup
from training.phase_data import PackedDataset, RowBatch
from training.prepare import PreparedInputs, PrepareLayout, prepared_rows, run_prepare


@pytest.fixture()
def prepared(tiny_setup):
    return tiny_setup


def _rows_of(batch: RowBatch) -> list[dict]:
    ends = np.cumsum(batch.row_lengths)
    doc_ends, span_ends = np.cumsum(batch.docs_per_row), np.cumsum(batch.spans_per_row)
    rows = []
    for r in range(batch.rows):
        a = ends[r] - batch.row_lengths[r]
        d = doc_ends[r] - batch.docs_per_row[r]
        s = span_ends[r] - batch.spans_per_row[r]
        rows.append(
            {
                "ids": batch.ids[a : ends[r]].tolist(),
                "docs": batch.doc_lengths[d : doc_ends[r]].tolist(),
                "spans": batch.spans[s : span_ends[r]].tolist(),
            }
        )
    return rows


def test_a_shard_packs_every_token_of_its_documents_once(prepared):
    inputs = PreparedInputs.load(PrepareLayout.of(prepare_recipe(prepared, "data.buffer_docs=6")))
    builder, plan = inputs.builder("phase1")
    tokenizer = inputs.tokenizer
    texts = []
    for r in plan.ranges(4):  # the documents the shard reads, source by source (a fresh reader: same docs)
        fresh = type(builder.sources[r.source].draws)(inputs.indexes[r.source], builder.seed, r.source)
        texts += [t for t in fresh.read(r.start, r.stop) if t is not None]
    batches: list[RowBatch] = []
    marker = builder.build(4, batches.append)
    assert len(marker["buffers"]) == len(batches) >= 2  # one write per packing buffer
    rows = [row for batch in batches for row in _rows_of(batch)]
    assert sum(b.rows for b in batches) == marker["rows"] and marker["positions"] == len(texts)
    # the Rust encoder gives the transformers tokenizer's ids; truncation at data.max_doc_tokens
    expected = [ids[:200] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    pieces = []
    for row in rows:
        assert sum(row["docs"]) == len(row["ids"]) <= 64
        start = 0
        for n in row["docs"]:
            pieces.append(row["ids"][start : start + n])
            start += n
        for a, b in row["spans"]:
            assert 0 <= a < b <= len(row["ids"])
            ends = np.cumsum(row["docs"])
            assert np.searchsorted(ends, a, side="right") == np.searchsorted(ends, b - 1, side="right")
    documents = sorted(tuple(ids[k : k + 64]) for ids in expected for k in range(0, len(ids), 64))
    assert sorted(map(tuple, pieces)) == documents  # every token exactly once, documents cut at 64
    lengths = [len(r["ids"]) for r in _rows_of(batches[0])]
    assert lengths != sorted(lengths, reverse=True)  # best-fit order shuffled within the buffer


def test_spans_map_alike_through_the_encodings_and_through_the_offsets(prepared, monkeypatch):
    """Short documents map their spans through the encoding's lookups, long ones through the offsets'
    numpy pass, and the lookups defer to the offsets when a span edge lies in no token: the rows are the
    same whichever path each document takes."""
    import training.phase_data as phase_data

    inputs = PreparedInputs.load(PrepareLayout.of(prepare_recipe(prepared, "data.buffer_docs=6")))
    builder, _ = inputs.builder("phase1")

    def rows() -> list[dict]:
        batches: list[RowBatch] = []
        for shard in (3, 4):
            builder.build(shard, batches.append)
        return [row for batch in batches for row in _rows_of(batch)]

    monkeypatch.setattr(phase_data, "SHORT_DOC_TOKENS", 0)  # every document through the offsets
    through_offsets = rows()
    monkeypatch.setattr(phase_data, "SHORT_DOC_TOKENS", 10**9)  # every document through the lookups
    through_lookups = rows()
    monkeypatch.setattr(phase_data, "encoding_token_spans", lambda encoding, spans: None)
    deferred = rows()
    assert sum(len(row["spans"]) for row in through_offsets) >= 20
    assert through_lookups == through_offsets == deferred


def test_the_domain_share_anneals_over_the_phase(prepared, tmp_path):
    copy_setup(prepared, tmp_path)
    recipe = prepare_recipe(tmp_path, "phase1.mixture.domain_start=0.0", "phase1.mixture.domain_end=1.0")
    run_prepare(recipe, ["phase1"], ExecutorConfig(tasks=1, workers=1))
    rows = prepared_rows(PrepareLayout.of(recipe), "phase1")
    summary = rows.summary()
    domain = sum(summary["tokens_per_source"].get(s, 0) for s in ("icecat", "esci_products"))
    assert domain / sum(summary["tokens_per_source"].values()) == pytest.approx(0.5, abs=0.1)
    realised = summary["realised_domain_share"]
    assert sum(realised[:3]) + 1.0 < sum(realised[-3:]), realised
    dataset = PackedDataset(rows.table)
    spans = [bool(dataset[i]["spans"]) for i in range(len(dataset))]
    third = len(spans) // 3
    assert sum(spans[-third:]) > sum(spans[:third])  # mined product rows come late


def _traced_peak(fn, repeats: int = 2) -> int:
    """The smallest traced peak over a few runs: cyclic garbage freed whenever the collector happens to run
    inflates single peaks by megabytes."""
    peaks = []
    for _ in range(repeats):
        gc.collect()
        tracemalloc.start()
        try:
            fn()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return min(peaks)


@pytest.mark.slow
def test_a_task_memory_is_flat_in_the_shard_size_and_the_input_size(prepared, tmp_path, data_dir):
    """One shard of 1 vs 10 packing buffers, over sources of 1 vs 10 copies of the files: the rows go to
    disk buffer by buffer and one block per source is held, so the traced peak (Python objects and numpy
    arrays) stays flat, while the rows themselves grow 10×."""
    import shutil

    from training.phase_build import build_shard
    from training.tokenizer import load_tokenizer

    def builder(copies: int, shard_buffers: int):
        out = tmp_path / f"c{copies}"
        wiki = out / "wiki"
        if not wiki.exists():
            wiki.mkdir(parents=True)
            for k in range(copies):
                (wiki / f"part{k}.raw").symlink_to(data_dir / "wikitext2_raw_test/wiki.test.raw")
        sets = [f"data.general.{i}.path={wiki}" for i in range(2)] + [f"data.shard_buffers={shard_buffers}"]
        sets += ["data.buffer_docs=320", "phase1.tokens=10000000", "data.max_doc_tokens=300"]
        sets += [f"data.general.{i}.max_docs=100000" for i in range(2)]
        recipe = prepare_recipe(out, *sets)
        if not (out / "tokenizer").exists():
            shutil.copytree(prepared / "tokenizer", out / "tokenizer")
            run_prepare(recipe, [], ExecutorConfig(tasks=1, workers=1))
        inputs = PreparedInputs.load(PrepareLayout.of(recipe))
        made, _ = inputs.builder("phase1")
        return made

    def one_shard(copies: int, shard_buffers: int):
        """A shard build, each call with a fresh builder (nothing cached: it reads its blocks)."""
        fresh = [builder(copies, shard_buffers) for _ in range(3)]
        folder = tmp_path / f"rows{copies}-{shard_buffers}"
        folder.mkdir(exist_ok=True)
        return lambda: build_shard(fresh.pop(), folder, 3, vocab, 1 << 16)

    vocab = len(load_tokenizer(str(prepared / "tokenizer")))
    build_shard_small, build_shard_large = one_shard(1, 1), one_shard(1, 10)
    build_shard_small()  # warm-up: imports, caches
    small, large = _traced_peak(build_shard_small), _traced_peak(build_shard_large)
    rows = {n: (tmp_path / f"rows1-{n}" / "shard-00003.arrow").stat().st_size for n in (1, 10)}
    assert rows[10] > 8 * rows[1]
    # a shard's rows as the builder holds them (int32 ids: twice the uint16 file) must not stay in memory
    held = 2 * rows[10]
    print(f"traced peaks: {small:,} (1 buffer), {large:,} (10 buffers, rows {held:,} bytes)")
    assert large - small < 0.5 * held, (small, large, held)
    tenfold, thirtyfold = _traced_peak(one_shard(10, 1)), _traced_peak(one_shard(30, 1))
    print(f"traced peak over 10 / 30 copies of the input: {tenfold:,} / {thirtyfold:,}")
    # a source of one file is one block, read once; from 10 files on the shard's ranges cross blocks (one
    # block per source at a time): a fixed step over 1x, then nothing that grows with the input
    assert tenfold < 1.5 * small, (small, tenfold)
    assert thirtyfold < 1.05 * tenfold, (tenfold, thirtyfold)
