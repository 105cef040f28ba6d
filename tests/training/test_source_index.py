"""Documents addressed by position: block counts, epochs, ranges that split anywhere, bounded reads."""

from __future__ import annotations

import gzip
import json
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.data import DataError
from training.recipe import SourceConfig
from training.source_index import DrawOrder, SourceIndex, count_blocks, hub_data_files, list_files


def _parquet_folder(folder, files=4, rows=50, row_group=10):
    folder.mkdir()
    for k in range(files):
        texts = [f"doc {k}-{i}" for i in range(rows)]
        pq.write_table(pa.table({"text": texts}), folder / f"part-{k:05d}.parquet", row_group_size=row_group)
    return {f"doc {k}-{i}" for k in range(files) for i in range(rows)}


def _index(src: SourceConfig) -> SourceIndex:
    return SourceIndex.from_counts(src, {f: count_blocks(src, f) for f in list_files(src)})


def test_parquet_blocks_are_row_groups_counted_from_the_footer(tmp_path, monkeypatch):
    _parquet_folder(tmp_path / "c")
    src = SourceConfig(name="c", path=str(tmp_path / "c"))

    def no_data(*args, **kwargs):
        raise AssertionError("counting read a row group")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", no_data)
    index = _index(src)
    assert len(index.blocks) == 20 and index.counts.tolist() == [10] * 20 and index.documents == 200
    capped = SourceIndex.from_counts(
        SourceConfig(name="c", path=src.path, max_docs=25), {f: count_blocks(src, f) for f in list_files(src)}
    )
    assert capped.counts.tolist() == [10, 10, 5]  # the first 25 documents in file order


def test_every_epoch_visits_every_document_once_in_a_new_order(tmp_path):
    every = _parquet_folder(tmp_path / "c")
    draws = DrawOrder(_index(SourceConfig(name="c", path=str(tmp_path / "c"))), seed=3, number=0)
    epoch1, epoch2 = list(draws.read(0, 200)), list(draws.read(200, 400))
    assert set(epoch1) == set(epoch2) == every and len(epoch1) == len(epoch2) == 200
    assert epoch1 != epoch2
    other_source = DrawOrder(draws.index, seed=3, number=1)
    assert list(other_source.read(0, 200)) != epoch1  # each source has its own order
    # documents of one block are not consecutive in file order (shuffled inside the block too)
    assert [d.split("-")[1] for d in epoch1[:10]] != [str(i) for i in range(10)]

    def blocks(epoch):  # the order the epoch visits the 20 row groups of 10 documents in
        return list(
            dict.fromkeys(doc.split("-")[0] + "/" + str(int(doc.split("-")[1]) // 10) for doc in epoch)
        )

    assert len(blocks(epoch1)) == 20 and blocks(epoch1) != blocks(epoch2)  # a new block order too


def test_any_split_of_the_positions_reads_the_same_documents(tmp_path):
    """The property every task count relies on: a range reads what a longer read has at those positions."""
    _parquet_folder(tmp_path / "c")
    index = _index(SourceConfig(name="c", path=str(tmp_path / "c")))
    whole = list(DrawOrder(index, 7, 2).read(0, 450))
    cuts = sorted(np.random.default_rng(0).choice(np.arange(1, 450), 9, replace=False).tolist())
    pieces = []
    for start, stop in zip([0, *cuts], [*cuts, 450]):
        pieces += list(DrawOrder(index, 7, 2).read(start, stop))  # a fresh reader: another task
    assert pieces == whole


def test_a_range_reads_only_the_blocks_that_hold_it(tmp_path):
    _parquet_folder(tmp_path / "c", files=10, rows=100, row_group=20)  # 50 blocks
    index = _index(SourceConfig(name="c", path=str(tmp_path / "c")))
    draws = DrawOrder(index, 0, 0)
    assert len(list(draws.read(300, 340))) == 40
    assert draws.blocks_read <= 3  # 40 documents span at most 3 blocks of 20: not the 50 of the source


def test_text_zip_and_jsonl_blocks_hold_usable_documents(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n   \nsecond line\n")
    with zipfile.ZipFile(tmp_path / "books.zip", "w") as archive:
        archive.writestr("b.txt", "one\ntwo\nthree\n")
        archive.writestr("a.txt", "alpha\n")
    with gzip.open(tmp_path / "pages.jsonl.gz", "wt") as handle:
        for text in ("x", "  ", None, "y"):
            handle.write(json.dumps({"body": text}) + "\n")
    text = SourceConfig(name="t", path=str(tmp_path / "a.txt"), doc_per_line=True)
    assert count_blocks(text, text.path) == [2]  # blank and whitespace-only lines are not documents
    books = SourceConfig(name="b", path=str(tmp_path / "books.zip"), doc_per_line=True)
    assert count_blocks(books, books.path) == [1, 3]  # one block per member, in name order
    index = _index(books)
    assert index.read(0) == ["alpha"] and index.read(1) == ["one", "two", "three"]
    pages = SourceConfig(name="p", path=str(tmp_path / "pages.jsonl.gz"), text_fields=["body"])
    assert _index(pages).read(0) == ["x", "y"]


def test_parquet_rows_without_text_stay_empty_positions(tmp_path):
    pq.write_table(pa.table({"text": ["a", None, " ", "b"]}), tmp_path / "p.parquet")
    index = _index(SourceConfig(name="p", path=str(tmp_path / "p.parquet")))
    assert index.documents == 4 and index.read(0) == ["a", None, None, "b"]


def test_bad_sources_fail_naming_source_and_file(tmp_path, data_dir):
    icecat = str(data_dir / "icecat_products_chorus/icecat_text.parquet")
    with pytest.raises(DataError, match=r"source 'f': text field 'body' not in .*icecat_text.parquet"):
        count_blocks(SourceConfig(name="f", path=icecat, text_fields=["body"]), icecat)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
    bad = SourceConfig(name="j", path=str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match=r"source 'j': .*bad.jsonl: line 2 is not valid JSON"):
        count_blocks(bad, bad.path)
    (tmp_path / "blank.txt").write_text("\n  \n")
    blank = SourceConfig(name="w", path=str(tmp_path / "blank.txt"), doc_per_line=True)
    with pytest.raises(DataError, match=r"source 'w': no usable document in .*blank.txt"):
        _index(blank)


def test_a_hub_dataset_is_read_through_its_data_files(tmp_path):
    """The Hub path resolves a dataset's data files as ``datasets`` does; a local dataset repository
    (README-less folder of parquet files per split) exercises the same resolution offline."""
    (tmp_path / "repo" / "data").mkdir(parents=True)
    for split in ("train", "test"):
        pq.write_table(
            pa.table({"text": [f"{split} {i}" for i in range(5)]}),
            tmp_path / "repo" / "data" / f"{split}-00000.parquet",
        )
    src = SourceConfig(name="h", path=str(tmp_path / "repo"), split="test")
    files = hub_data_files(src)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["test-00000.parquet"]
    index = SourceIndex.from_counts(src, {f: count_blocks(src, f) for f in files})
    assert sorted(index.read(0)) == [f"test {i}" for i in range(5)]
    with pytest.raises(DataError, match="no data files for split 'validation'"):
        hub_data_files(SourceConfig(name="h", path=str(tmp_path / "repo"), split="validation"))
