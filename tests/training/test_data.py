import gzip
import json

import pytest

from training.data import DataError, load_source
from training.mixture import MixtureSampler, domain_share, temperature_weights
from training.recipe import MixtureConfig, SourceConfig


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


def _src(tmp_path, name, n):
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(f"{name} {i}" for i in range(n)))
    return load_source(SourceConfig(name=name, path=str(path), doc_per_line=True, weight=1.0))


def test_temperature_and_annealing_schedule():
    assert temperature_weights([9, 1], 1.0).tolist() == pytest.approx([0.9, 0.1])
    assert temperature_weights([9, 1], 1e9).tolist() == pytest.approx([0.5, 0.5])
    mix = MixtureConfig(domain_start=0.2, domain_end=0.8)
    assert [domain_share(mix, p) for p in (0, 0.5, 1)] == pytest.approx([0.2, 0.5, 0.8])
    cos = MixtureConfig(domain_start=0.0, domain_end=1.0, schedule="cosine")
    assert domain_share(cos, 0.25) < 0.25 and domain_share(cos, 0.5) == pytest.approx(0.5)


def test_sampler_follows_the_annealed_share(tmp_path):
    general = [_src(tmp_path, "g", 50)]
    domain = [_src(tmp_path, "d", 50)]
    sampler = MixtureSampler(general, domain, MixtureConfig(domain_start=0.1, domain_end=0.9), 1.0, seed=0)
    early = sum(sampler.sample(0.0).is_domain for _ in range(2000)) / 2000
    late = sum(sampler.sample(1.0).is_domain for _ in range(2000)) / 2000
    assert abs(early - 0.1) < 0.03 and abs(late - 0.9) < 0.03


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 1.0)])
def test_source_weights_are_token_shares_not_document_shares(tmp_path, weights):
    """A source of long documents (ESCI pages) must not crowd out one of short records (Icecat titles):
    weights 2 : 1 give 2/3 of the group's tokens to the first source whatever the document lengths."""
    short = tmp_path / "short.txt"
    short.write_text("\n".join(f"usb cable {i}" for i in range(200)))
    long = tmp_path / "long.txt"
    long.write_text("\n".join(f"page {i} " + "bullet point text " * 40 for i in range(200)))
    sources = [
        load_source(SourceConfig(name=n, path=str(p), doc_per_line=True, weight=w))
        for n, p, w in (("short", short, weights[0]), ("long", long, weights[1]))
    ]
    sampler = MixtureSampler([], sources, MixtureConfig(domain_start=1.0, domain_end=1.0), 1.0, seed=0)
    chars = {"short": 0, "long": 0}
    for _ in range(3000):
        doc = sampler.sample_group(True)
        chars[doc.source] += len(doc.text)
    share = chars["short"] / sum(chars.values())
    assert share == pytest.approx(weights[0] / sum(weights), abs=0.01)


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
    records = data_module._records
    monkeypatch.setattr(data_module, "_records", lambda src, path: opened.append(path) or records(src, path))
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
