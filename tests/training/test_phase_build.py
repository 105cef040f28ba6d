"""Shards on disk: durable before they are marked complete, rebuilt when a crash left them unmarked, cut at
the budget, memory-mapped by training."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pytest

from tests.training._tiny import prepare_recipe
from tests.training.conftest import copy_setup
from training import phase_build
from training.phase_build import build_shard, finalize_build, load_build, read_marker
from training.prepare import PreparedInputs, PrepareLayout


@pytest.fixture()
def built(tiny_setup, tmp_path):
    """``(builder, plan, phase, vocab, folder)`` for phase 1 of the tiny test recipe."""
    copy_setup(tiny_setup, tmp_path)
    recipe = prepare_recipe(tmp_path)
    inputs = PreparedInputs.load(PrepareLayout.of(recipe))
    builder, plan = inputs.builder("phase1")
    folder = tmp_path / "rows"
    folder.mkdir()
    return builder, plan, recipe.phase1, len(inputs.tokenizer), folder


def _finalize(builder, plan, phase, vocab, folder, calls=None):
    def build(index):
        if calls is not None:
            calls.append(index)
        return build_shard(builder, folder, index, vocab, 4096)

    return finalize_build(folder, phase, "fp", build, extra={"planned_shards": plan.shards})


def test_the_marker_is_written_only_after_the_rows_are_durable(built, monkeypatch):
    builder, _, _, vocab, folder = built
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    build_shard(builder, folder, 2, vocab, 4096)
    rows, marker = str(folder / "shard-00002.arrow"), str(folder / "shard-00002.json")
    (marker_tmp,) = [e[1] for e in events if e[0] == "rename" and e[2] == marker]  # a unique temporary name
    order = [
        ("fsync", rows + ".tmp"),  # the rows reach the disk
        ("rename", rows + ".tmp", rows),  # then get their name
        ("fsync", str(folder)),  # the rename itself is durable
        ("fsync", marker_tmp),  # only then the marker is written
        ("rename", marker_tmp, marker),
        ("fsync", str(folder)),
    ]
    assert events == order


def test_a_crash_between_rows_and_marker_rebuilds_the_shard(built, monkeypatch):
    builder, plan, phase, vocab, folder = built
    reference = _finalize(builder, plan, phase, vocab, folder)
    expected = load_build(folder, "fp").table.to_pydict()
    shutil.rmtree(folder)
    folder.mkdir()
    real_write = phase_build.write_text_atomic

    def crash_at_third_marker(path, text):
        if path.name == "shard-00002.json":
            raise KeyboardInterrupt("killed after the rows, before the marker")
        return real_write(path, text)

    monkeypatch.setattr(phase_build, "write_text_atomic", crash_at_third_marker)
    with pytest.raises(KeyboardInterrupt):
        for index in range(plan.shards):
            build_shard(builder, folder, index, vocab, 4096)
    assert (folder / "shard-00002.arrow").exists() and read_marker(folder, 2) is None
    monkeypatch.setattr(phase_build, "write_text_atomic", real_write)
    calls = []
    info = _finalize(builder, plan, phase, vocab, folder, calls)
    assert calls[0] == 2 and info["stats"] == reference["stats"]  # shards 0, 1 reused; 2 rebuilt
    assert load_build(folder, "fp").table.to_pydict() == expected


def test_a_marker_without_its_rows_file_is_not_trusted(built):
    builder, _, _, vocab, folder = built
    build_shard(builder, folder, 0, vocab, 4096)
    assert read_marker(folder, 0) is not None
    rows = folder / "shard-00000.arrow"
    rows.write_bytes(rows.read_bytes()[:-10])  # a torn file under a complete marker
    assert read_marker(folder, 0) is None
    rows.unlink()
    assert read_marker(folder, 0) is None


def test_finalize_cuts_at_the_budget_and_builds_what_is_missing(built):
    builder, plan, phase, vocab, folder = built
    for index in (0, 1, 3):  # shard 2's task "did not run"; the planned shards past the budget are extra
        build_shard(builder, folder, index, vocab, 4096)
    for index in range(plan.shards, plan.shards + 2):
        build_shard(builder, folder, index, vocab, 4096)
    calls = []
    info = _finalize(builder, plan, phase, vocab, folder, calls)
    kept = len(info["shards"])
    assert 2 in calls and info["built_by_finalize"] == calls
    assert sorted(p.name for p in folder.glob("shard-*.arrow")) == [
        f"shard-{k:05d}.arrow" for k in range(kept)
    ]
    rows = load_build(folder, "fp")
    lengths = rows.lengths.to_numpy()
    assert lengths.sum() >= phase.tokens > lengths[:-1].sum()
    assert rows.stats.num_tokens == lengths.sum() and rows.stats.num_rows == len(lengths)
    assert load_build(folder, "another fingerprint") is None


def test_finalize_goes_past_the_planned_shards_when_the_documents_were_shorter(built):
    """The plan expects the phase's tokens (+ a margin) from the sources' mean sizes; when the documents
    turn out shorter, the finalize task builds the next shards of the same endless order."""
    builder, plan, phase, vocab, folder = built
    short = type(phase)(**{**phase.__dict__, "tokens": int(phase.tokens * 1.6)})
    calls = []
    info = _finalize(builder, plan, short, vocab, folder, calls)
    assert max(calls) >= plan.shards and sum(load_build(folder, "fp").lengths.to_numpy()) >= short.tokens
    assert info["planned_shards"] == plan.shards


def test_rows_are_memory_mapped_uint16_and_compact(built):
    builder, plan, phase, vocab, folder = built
    _finalize(builder, plan, phase, vocab, folder)
    allocated = pa.total_allocated_bytes()
    rows = load_build(folder, "fp")
    assert pa.total_allocated_bytes() - allocated < 100_000  # opening allocates (next to) nothing
    assert rows.table.schema.field("input_ids").type.value_type == pa.uint16()
    size = sum(p.stat().st_size for p in folder.glob("shard-*.arrow"))
    assert size < 4 * sum(
        m["tokens"] for m in map(json.loads, map(lambda p: p.read_text(), folder.glob("shard-*.json")))
    )
    readers = [pa.ipc.open_file(pa.memory_map(str(p))) for p in folder.glob("shard-*.arrow")]
    assert max(r.num_record_batches for r in readers) > 1  # 4096-byte record batches: streamed, not one block


def test_a_corrupt_build_info_is_no_build(built):
    builder, plan, phase, vocab, folder = built
    _finalize(builder, plan, phase, vocab, folder)
    (folder / "build.json").write_text("{not json")
    assert load_build(folder, "fp") is None
