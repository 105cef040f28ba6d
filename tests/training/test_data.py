import gzip
import json

import pytest

from training.data import DataError, load_source
from training.recipe import SourceConfig


def test_local_formats_and_whitespace_drop(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n   \nsecond line\n\n", encoding="utf-8")
    src = load_source(SourceConfig(name="t", path=str(tmp_path / "a.txt"), doc_per_line=True))
    assert src.texts == ["first line", "second line"] and src.stats.dropped_whitespace == 2
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        for text in ("doc one", " \t", "doc two"):
            f.write(json.dumps({"body": text}) + "\n")
    src = load_source(SourceConfig(name="j", path=str(tmp_path / "*.jsonl.gz"), text_fields=["body"]))
    assert src.texts == ["doc one", "doc two"] and src.stats.dropped_whitespace == 1


def test_real_sources(data_dir, full_data):
    icecat_path = str(data_dir / "icecat_products_chorus/icecat_text.parquet")
    icecat = load_source(
        SourceConfig(
            name="icecat", path=icecat_path, text_fields=["title", "short_description"], max_docs=100
        )
    )
    assert len(icecat.texts) == 100 and "\n" in icecat.texts[0]
    books = load_source(SourceConfig(name="gb", path=str(data_dir / "gutenberg_nltk/gutenberg.zip")))
    # ~4,000-character blocks: 10.5 MB of books, or the sample's 15 x 70,000 characters
    assert len(books.texts) > (500 if full_data else 200) and max(len(t) for t in books.texts) < 50_000


def test_clear_errors(tmp_path, data_dir):
    with pytest.raises(DataError, match="source 'm'.*not found"):
        load_source(SourceConfig(name="m", path=str(tmp_path / "missing.parquet")))
    (tmp_path / "empty.txt").write_text("  \n\n \n")
    with pytest.raises(DataError, match="no usable document.*3 whitespace-only"):
        load_source(SourceConfig(name="e", path=str(tmp_path / "empty.txt"), doc_per_line=True))
    with pytest.raises(DataError, match="text field 'body' not in"):
        load_source(
            SourceConfig(
                name="f",
                path=str(data_dir / "icecat_products_chorus/icecat_text.parquet"),
                text_fields=["body"],
            )
        )
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read"):
        load_source(SourceConfig(name="b", path=str(tmp_path / "bad.parquet")))


def _parquet_shards(folder, shards=4, rows=50):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    for k in range(shards):
        texts = [f"doc {k}-{i}" for i in range(rows)]
        pq.write_table(pa.table({"text": texts}), folder / f"part-{k:05d}.parquet", row_group_size=10)
    return {f"doc {k}-{i}" for k in range(shards) for i in range(rows)}


def test_streaming_local_folder_is_lazy_and_reshuffled_each_epoch(tmp_path, monkeypatch):
    import itertools

    import numpy as np

    from training import data as data_module

    every = _parquet_shards(tmp_path / "curated")  # a curation-style folder of parquet shards
    opened = []
    records = data_module.records
    monkeypatch.setattr(data_module, "records", lambda src, path: opened.append(path) or records(src, path))
    src = load_source(
        SourceConfig(name="c", path=str(tmp_path / "curated"), streaming=True), shuffle_buffer=16
    )
    assert src.texts is None and len(opened) == 1  # only the first file is opened to check it
    opened.clear()
    stream = src.cycle(np.random.default_rng(3))
    first = list(itertools.islice(stream, 20))
    assert len(opened) <= 2  # 20 documents need at most two of the four 50-document files
    second_epoch_start = list(itertools.islice(stream, 180))
    epoch1 = first + second_epoch_start
    epoch2 = list(itertools.islice(stream, 200))
    assert set(epoch1) == set(epoch2) == every  # each epoch is every document once
    assert epoch1 != epoch2  # in a new order
    again = list(itertools.islice(load_source(src.config, 16).cycle(np.random.default_rng(3)), 400))
    assert again == epoch1 + epoch2  # deterministic from the seed


def test_streaming_source_errors_fail_at_load(tmp_path, data_dir):
    with pytest.raises(DataError, match="text field 'body' not in"):
        icecat = str(data_dir / "icecat_products_chorus/icecat_text.parquet")
        load_source(SourceConfig(name="f", path=icecat, text_fields=["body"], streaming=True))
