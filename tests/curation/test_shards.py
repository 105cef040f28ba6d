"""Prepared shards: written by task r, read back by task r in the same order, with a manifest: a task whose
documents were all dropped reads nothing; a missing manifest or shard is an error, never an empty task."""

import pytest
from datatrove.data import Document

from curation.shards import PreparedShardReader, ShardManifest, prepared_writer
from rexbert_common.errors import UserError


def _prepare(folder, rank, docs):
    for _ in ShardManifest(str(folder)).run(prepared_writer(str(folder)).run(iter(docs), rank, 3), rank, 3):
        pass


def test_round_trip_in_order_an_empty_task_and_a_missing_shard(tmp_path):
    docs = [
        Document(
            text=f"text {i}",
            id=f"id{i}",
            metadata={"domain": "hobby", "route": "filter", "url": "", "truth": 1, "language_score": 0.5},
        )
        for i in range(3)
    ]
    _prepare(tmp_path, 0, docs)
    _prepare(tmp_path, 1, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.json", "00000.parquet", "00001.json"]
    back = list(PreparedShardReader(str(tmp_path)).run(None, 0, 3))
    assert [(d.id, d.text, d.metadata["domain"], d.metadata["truth"]) for d in back] == [
        (f"id{i}", f"text {i}", "hobby", 1) for i in range(3)
    ]
    assert "relevance_score" not in back[0].metadata  # nulls are not turned into values
    assert list(PreparedShardReader(str(tmp_path)).run(None, 1, 3)) == []  # all dropped: nothing, no error
    with pytest.raises(UserError, match=r"00002\.json is missing: prepare task 2 did not complete"):
        list(PreparedShardReader(str(tmp_path)).run(None, 2, 3))
    (tmp_path / "00000.parquet").unlink()
    with pytest.raises(UserError, match=r"00000\.parquet \(3 documents\) is missing"):
        list(PreparedShardReader(str(tmp_path)).run(None, 0, 3))
