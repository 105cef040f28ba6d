"""Prepared shards: written by task r, read back by task r in the same order; a task whose documents were
all dropped writes nothing and the next stage's task r reads nothing."""

from datatrove.data import Document

from curation.shards import PreparedShardReader, prepared_writer


def test_round_trip_in_order_and_an_empty_task(tmp_path):
    docs = [
        Document(
            text=f"text {i}",
            id=f"id{i}",
            metadata={"domain": "hobby", "route": "filter", "url": "", "truth": 1, "language_score": 0.5},
        )
        for i in range(3)
    ]
    for rank, batch in ((0, docs), (1, [])):
        writer = prepared_writer(str(tmp_path))
        list(writer.run(iter(batch), rank, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.parquet"]  # the empty task wrote no file
    back = list(PreparedShardReader(str(tmp_path)).run(None, 0, 2))
    assert [(d.id, d.text, d.metadata["domain"], d.metadata["truth"]) for d in back] == [
        (f"id{i}", f"text {i}", "hobby", 1) for i in range(3)
    ]
    assert "relevance_score" not in back[0].metadata  # nulls are not turned into values
    assert list(PreparedShardReader(str(tmp_path)).run(None, 1, 2)) == []
