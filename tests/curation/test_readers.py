"""Sharded readers: every bad record is a counted drop, ids are unique per path, domains come from the
record or the folder (with folder selection), and the files are split over tasks."""

from __future__ import annotations

import json

from curation.config import SourceConfig
from curation.readers import make_reader


def _read(source: SourceConfig, tasks: int = 1):
    docs, stats = [], {}
    for rank in range(tasks):
        reader = make_reader(source, max_chars=1000, name="src")
        docs += list(reader.run(None, rank, tasks))
        for key, value in reader.stats.stats.items():
            stats[key] = stats.get(key, 0) + value.total
    return docs, stats


def test_bad_lines_are_counted_drops_and_the_rest_of_the_file_is_read(tmp_path):
    lines = [
        json.dumps({"text": "good one", "domain": "news"}).encode(),
        b'{"text": "lone \\ud800 surrogate", "domain": "news"}',  # JSON-escaped lone surrogate
        b'{"text": "caf\xe9 latin-1", "domain": "news"}',  # not UTF-8
        b'{"text": "unterminated',
        json.dumps({"domain": "news"}).encode(),
        json.dumps({"text": "   ", "domain": "news"}).encode(),
        json.dumps({"text": 42, "domain": "news"}).encode(),
        json.dumps({"text": "no domain"}).encode(),
        json.dumps({"text": "x" * 1001, "domain": "news"}).encode(),
        json.dumps(["not", "a", "record"]).encode(),
        json.dumps({"text": "good two", "domain": "News ", "id": 7, "url": "https://a.example/x"}).encode(),
    ]
    (tmp_path / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    docs, stats = _read(SourceConfig(path=str(tmp_path)))
    assert [d.text for d in docs] == ["good one", "good two"]
    assert docs[1].metadata["source_id"] == "7" and docs[1].metadata["url"] == "https://a.example/x"
    assert {k: v for k, v in stats.items() if k.startswith("dropped_")} == {
        "dropped_invalid_unicode": 1,
        "dropped_invalid_utf8": 1,
        "dropped_malformed_json": 1,
        "dropped_missing_text": 1,
        "dropped_empty_text": 1,
        "dropped_text_not_a_string": 1,
        "dropped_missing_domain": 1,
        "dropped_too_long": 1,
        "dropped_malformed_record": 1,
    }


def test_same_named_files_in_two_folders_get_distinct_ids_and_a_single_file_path_works(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        rows = [{"text": f"{folder} {i}", "domain": "news", "id": i} for i in range(3)]
        (tmp_path / folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, _ = _read(SourceConfig(path=str(tmp_path)))
    assert len({d.id for d in docs}) == 6 and "src/a/data.jsonl#0" in {d.id for d in docs}
    single, _ = _read(SourceConfig(path=str(tmp_path / "b" / "data.jsonl")))
    assert [d.id for d in single] == ["src/data.jsonl#0", "src/data.jsonl#1", "src/data.jsonl#2"]


def test_domain_from_folder_with_folder_selection_split_over_tasks(tmp_path):
    """FineFineWeb's layout: one folder per domain; only the selected folders are listed and read."""
    for domain in ("hobby", "news", "mathematics"):
        (tmp_path / domain).mkdir()
        for part in range(3):
            rows = [{"text": f"{domain} {part} {i}"} for i in range(4)]
            (tmp_path / domain / f"{domain}_{part:06d}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows)
            )
    source = SourceConfig(path=str(tmp_path), domain_from="folder", folders=["hobby", "news"])
    one, _ = _read(source)
    assert {d.metadata["domain"] for d in one} == {"hobby", "news"} and len(one) == 24
    three, stats = _read(source, tasks=4)  # more tasks than some folders have files: fine
    assert sorted(d.id for d in three) == sorted(d.id for d in one) and stats["input_files"] == 6


def test_parquet_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "content": [
                    "a product page",
                    "\ud800 bad".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                ],
                "label": ["beauty", "beauty"],
            }
        ),
        tmp_path / "x.parquet",
    )
    docs, stats = _read(
        SourceConfig(path=str(tmp_path), format="parquet", text_field="content", domain_field="label")
    )
    assert [d.metadata["domain"] for d in docs] == ["beauty", "beauty"] and stats["forwarded"] == 2


def test_hf_dataset_source_is_split_over_tasks_by_dataset_shard(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    for k in range(3):
        rows = {"text": [f"page {k} {i}" for i in range(4)] + [""], "domain": ["beauty"] * 5}
        pq.write_table(pa.table(rows), tmp_path / "data" / f"train-{k:05d}-of-00003.parquet")
    source = SourceConfig(path=str(tmp_path), format="hf_dataset", split="train")
    one, stats = _read(source)
    assert len(one) == 12 and stats["dropped_empty_text"] == 3
    two, _ = _read(source, tasks=2)
    assert sorted(d.id for d in two) == sorted(d.id for d in one) and len({d.id for d in one}) == 12


def test_a_source_matching_no_file_is_an_error_naming_it(tmp_path, capsys):
    """A mistyped path or folder selection must not curate an empty dataset and exit 0."""
    from rexbert_cli.main import main

    (tmp_path / "data" / "news").mkdir(parents=True)
    (tmp_path / "data" / "news" / "a.jsonl").write_text('{"text": "x"}\n')
    out = tmp_path / "out"
    for source, expected in (
        (f"{{path: {tmp_path / 'nowhere'}}}", f"input source {tmp_path / 'nowhere'}: no "),
        (f"{{path: {tmp_path / 'data'}, format: parquet}}", ".parquet file matches"),
        (f"{{path: {tmp_path / 'data'}, domain_from: folder, folders: [sport]}}", "in the folders ['sport']"),
    ):
        argv = [
            "curate",
            "--output-dir",
            str(out),
            "--set",
            "input.demo=false",
            "--set",
            f"input.sources=[{source}]",
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("rexbert curate: error: ") and expected in err and err.count("\n") == 1, err
    assert not out.exists()
