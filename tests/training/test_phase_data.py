import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from training import phase_data
from training.attribute_miner import AttributeMiner
from training.batch_plan import plan_batches
from training.collator import STATS_KEY, PackedMLMCollator
from training.data import load_source
from training.masking import MaskingConfig, SpanMasker
from training.phase_build import build_phase_rows
from training.phase_data import PackedDataset, build_phase_data
from training.recipe import DataConfig, MixtureConfig, PhaseConfig, SourceConfig
from training.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="module")
def corpus(data_dir):
    """Sources (wiki general, icecat domain with mined attributes), a small BPE and the miner."""
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
    return wiki, icecat, tok, miner


def test_build_phase_data_and_collate(corpus):
    wiki, icecat, tok, miner = corpus
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

    # masking the built rows guides about guided_fraction of the rows (rows with spans exist)
    masker = SpanMasker(phase.masking, tok.mask_token_id, [0, 1, 2, 3, 4], len(tok))
    collate = PackedMLMCollator(masker, seed=1)
    dataset = PackedDataset(data.rows)
    stats = collate([dataset[i] for i in range(len(dataset))])[STATS_KEY]
    assert abs(stats["guided_sequences"] / stats["rows"] - 0.5) < 0.15, stats


def _phase(tokens, seq=128):
    return PhaseConfig(
        tokens=tokens,
        max_seq_len=seq,
        batch_size=8,
        micro_batch_size=2,
        batch_warmup_tokens=3000,
        mixture=MixtureConfig(domain_start=0.2, domain_end=0.9),
    )


def _rows(build):
    return build.table["input_ids"].to_pylist()


def test_on_disk_rows_are_sharded_memory_mapped_and_equal_the_in_memory_rows(corpus, tmp_path):
    import pyarrow as pa

    wiki, icecat, tok, miner = corpus
    data, phase = DataConfig(buffer_docs=48, shard_buffers=2, max_doc_tokens=300), _phase(15000)
    memory = build_phase_data([wiki], [icecat], data, phase, tok, miner, seed=5)
    builds = []
    allocated = pa.total_allocated_bytes()
    disk = build_phase_rows(
        [wiki], [icecat], data, phase, tok, miner, 5, tmp_path / "rows", on_build=builds.append
    )
    # several shards, each an Arrow IPC *file* (footer index) with its completion marker; no leftovers
    shards = sorted(p.name for p in (tmp_path / "rows").glob("shard-*.arrow"))
    assert len(shards) >= 2 and all((tmp_path / "rows" / n).with_suffix(".json").exists() for n in shards)
    assert not (tmp_path / "rows.partial").exists()
    for name in shards:
        reader = pa.ipc.open_file(pa.memory_map(str(tmp_path / "rows" / name)))
        assert reader.num_record_batches >= 1
    # memory-mapped: opening the build allocates (next to) nothing, whatever the rows' size
    assert pa.total_allocated_bytes() - allocated < 100_000
    # a 1000-token vocabulary fits uint16: ~2 bytes per token on disk plus per-row/per-document offsets
    assert disk.table.schema.field("input_ids").type.value_type == pa.uint16()
    size = sum((tmp_path / "rows" / n).stat().st_size for n in shards)
    assert size < 4 * disk.stats.num_tokens, size
    # same rows, same order, same spans; same stats
    assert disk.table.num_rows == len(memory.rows) and disk.summary() == memory.summary()
    mem_items, disk_items = PackedDataset(memory.rows), PackedDataset(disk.table)
    for i in range(len(memory.rows)):
        a, b = mem_items[i], disk_items[i]
        assert a["row_id"] == b["row_id"] and a["input_ids"] == b["input_ids"], i
        assert a["doc_lengths"] == b["doc_lengths"] and list(a["spans"]) == b["spans"], i
    assert disk_items.__getitems__([3, 1])[1] == disk_items[1]
    # the plan from the lengths column equals the plan from the rows (batch warmup included)
    plan_rows = plan_batches([len(r.input_ids) for r in memory.rows], phase, world_size=2)
    plan_disk = plan_batches(disk.lengths, phase, world_size=2)
    np.testing.assert_array_equal(plan_rows.starts, plan_disk.starts)
    np.testing.assert_array_equal(plan_rows.rows, plan_disk.rows)
    assert len(set(plan_disk.rows.tolist())) > 1  # the warmup is exercised
    # a second call reuses the build; another seed invalidates it and rebuilds
    assert len(builds) == 1
    build_phase_rows([wiki], [icecat], data, phase, tok, miner, 5, tmp_path / "rows", on_build=builds.append)
    assert len(builds) == 1
    other = build_phase_rows(
        [wiki], [icecat], data, phase, tok, miner, 6, tmp_path / "rows", on_build=builds.append
    )
    assert len(builds) == 2 and other.fingerprint != disk.fingerprint
    assert _rows(other) != _rows(disk)


@pytest.mark.slow
def test_one_and_two_workers_build_identical_rows(corpus, tmp_path):
    wiki, icecat, tok, miner = corpus
    phase = _phase(20000)
    builds = {}
    for workers in (1, 2):
        data = DataConfig(buffer_docs=32, shard_buffers=1, max_doc_tokens=300, workers=workers)
        builds[workers] = build_phase_rows(
            [wiki], [icecat], data, phase, tok, miner, 3, tmp_path / f"w{workers}"
        )
    assert builds[1].fingerprint == builds[2].fingerprint  # the worker count is not part of the build
    assert _rows(builds[1]) == _rows(builds[2]) and len(list((tmp_path / "w2").glob("shard-*.arrow"))) > 2
    assert builds[1].table["spans"].to_pylist() == builds[2].table["spans"].to_pylist()
    assert builds[1].summary() == builds[2].summary()


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
def test_build_memory_does_not_grow_with_the_token_budget(corpus, tmp_path):
    wiki, icecat, tok, miner = corpus
    data = DataConfig(buffer_docs=32, shard_buffers=1, max_doc_tokens=300)
    small, large = _phase(20_000), _phase(100_000)

    def on_disk(phase, name):
        runs = iter(range(10))  # a fresh output folder per run: a finished build would be reused
        return lambda: build_phase_rows(
            [wiki], [icecat], data, phase, tok, miner, 0, tmp_path / f"{name}{next(runs)}", chunk_docs=2
        )

    def in_memory(phase):
        return lambda: build_phase_data([wiki], [icecat], data, phase, tok, miner, seed=0, chunk_docs=2)

    # one-time costs (lazy imports, caches filled by documents only the larger budget reaches) outside the
    # measurement: a warm-up at the larger budget
    on_disk(large, "warmup")()
    disk_growth = _traced_peak(on_disk(large, "large")) - _traced_peak(on_disk(small, "small"))
    memory_growth = _traced_peak(in_memory(large)) - _traced_peak(in_memory(small))
    # the in-memory rows grow with the 80k extra tokens (~MBs of Python objects); the on-disk build's
    # peak is set by one shard (one 32-document packing buffer here)
    assert memory_growth > 1_000_000, memory_growth
    assert disk_growth < 0.1 * memory_growth, (disk_growth, memory_growth)


def test_interrupted_build_keeps_its_finished_shards(corpus, tmp_path, monkeypatch):
    wiki, icecat, tok, miner = corpus
    data, phase = DataConfig(buffer_docs=32, shard_buffers=1, max_doc_tokens=300), _phase(12000)
    calls = []
    real_pack = phase_data.best_fit_pack

    def failing_pack(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # three one-buffer shards are finished
            raise KeyboardInterrupt("killed mid-build")
        return real_pack(*args, **kwargs)

    monkeypatch.setattr(phase_data, "best_fit_pack", failing_pack)
    with pytest.raises(KeyboardInterrupt):
        build_phase_rows([wiki], [icecat], data, phase, tok, miner, 0, tmp_path / "rows")
    partial = tmp_path / "rows.partial"
    assert not (tmp_path / "rows").exists() and len(list(partial.glob("shard-*.json"))) == 3
    finished = {p.name: p.stat().st_mtime_ns for p in partial.glob("shard-*.arrow")}
    monkeypatch.setattr(phase_data, "best_fit_pack", real_pack)
    done = build_phase_rows([wiki], [icecat], data, phase, tok, miner, 0, tmp_path / "rows")
    assert not partial.exists()
    for name, mtime in finished.items():  # reused, not rebuilt
        assert (tmp_path / "rows" / name).stat().st_mtime_ns == mtime, name
    reference = build_phase_data([wiki], [icecat], data, phase, tok, miner, seed=0)
    assert _rows(done) == [r.input_ids for r in reference.rows]
    assert done.summary() == reference.summary()


def test_a_corrupt_build_info_is_rebuilt(corpus, tmp_path):
    wiki, icecat, tok, miner = corpus
    data, phase = DataConfig(buffer_docs=32), _phase(5000)
    first = build_phase_rows([wiki], [icecat], data, phase, tok, miner, 0, tmp_path / "rows")
    (tmp_path / "rows" / "build.json").write_text("{not json")
    again = build_phase_rows([wiki], [icecat], data, phase, tok, miner, 0, tmp_path / "rows")
    assert _rows(again) == _rows(first)


_KILLED_BUILD = """
import sys, time
from pathlib import Path
from training import phase_data
from training.attribute_miner import AttributeMiner
from training.data import load_source
from training.phase_build import build_phase_rows
from training.recipe import DataConfig, MixtureConfig, PhaseConfig, SourceConfig
from training.tokenizer import load_tokenizer

data_dir, tok_dir, out = map(Path, sys.argv[1:4])
icecat_path = str(data_dir / "icecat_products_chorus/icecat_text.parquet")
icecat = load_source(SourceConfig(name="icecat", path=icecat_path,
    text_fields=["title", "short_description"], max_docs=400, mine_attributes=True))
wiki = load_source(SourceConfig(name="wiki", path=str(data_dir / "wikitext2_raw_test/wiki.test.raw"),
    doc_per_line=True, max_docs=400))
miner = AttributeMiner().fit(t.split("\\n")[0] for t in icecat.texts)
calls, real_pack = [], phase_data.best_fit_pack

def stalling_pack(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:  # three shards are on disk: signal the parent, then wait to be killed
        (out / "stalled").write_text("1")
        time.sleep(600)
    return real_pack(*args, **kwargs)

phase_data.best_fit_pack = stalling_pack
phase = PhaseConfig(tokens=12000, max_seq_len=128, mixture=MixtureConfig(domain_start=0.2, domain_end=0.9))
build_phase_rows([wiki], [icecat], DataConfig(buffer_docs=32, shard_buffers=1, max_doc_tokens=300), phase,
    load_tokenizer(str(tok_dir)), miner, 0, out / "rows")
"""


@pytest.mark.slow
def test_sigkilled_build_resumes_to_identical_rows(corpus, data_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from training.tokenizer import load_tokenizer, save_tokenizer

    wiki, icecat, tok, miner = corpus
    save_tokenizer(tok, tmp_path / "tok")
    tok = load_tokenizer(str(tmp_path / "tok"))
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, str(data_dir), str(tmp_path / "tok"), str(tmp_path)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "stalled").exists():
            assert child.poll() is None, f"the build process exited early ({child.returncode})"
            assert time.monotonic() < deadline, "the build did not reach its stall point"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)  # killed mid-build, with finished shards on disk
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    partial = tmp_path / "rows.partial"
    finished = {p.name: p.stat().st_mtime_ns for p in partial.glob("shard-*.arrow")}
    assert len(finished) == 3 and not (tmp_path / "rows").exists()
    data = DataConfig(buffer_docs=32, shard_buffers=1, max_doc_tokens=300)
    phase = PhaseConfig(
        tokens=12000, max_seq_len=128, mixture=MixtureConfig(domain_start=0.2, domain_end=0.9)
    )
    done = build_phase_rows([wiki], [icecat], data, phase, tok, miner, 0, tmp_path / "rows")
    for name, mtime in finished.items():
        assert (tmp_path / "rows" / name).stat().st_mtime_ns == mtime, name  # resumed, not redone
    reference = build_phase_data([wiki], [icecat], data, phase, tok, miner, seed=0)
    assert _rows(done) == [r.input_ids for r in reference.rows]
    assert done.table["spans"].to_pylist() == [[list(s) for s in r.spans] for r in reference.rows]
    assert not partial.exists()
