import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.documents import iter_source


def _collect(path, **kw):
    docs, reasons = [], []
    for doc, why in iter_source(str(path), **kw):
        (docs.append(doc) if doc else reasons.append(why))
    return docs, reasons


def test_bad_jsonl_records_are_counted_never_fatal(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    lines = [
        json.dumps({"id": "ok", "text": "fine text", "domain": "Hobby"}).encode(),
        b'{"id": "u", "text": "caf\xe9 \xff", "domain": "news"}',
        b'{"id": "j", "text": "unterminated',
        json.dumps({"id": "m", "domain": "news"}).encode(),
        json.dumps({"id": "e", "text": "  ", "domain": "news"}).encode(),
        json.dumps({"id": "d", "text": "no domain"}).encode(),
        json.dumps({"id": "h", "text": "x" * 101, "domain": "news"}).encode(),
        json.dumps([1, 2]).encode(),
    ]
    with gzip.open(path, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")
    docs, reasons = _collect(path, max_chars=100)
    assert [d.id for d in docs] == ["ok"] and docs[0].domain == "hobby"
    assert sorted(reasons) == sorted(
        [
            "invalid_utf8",
            "malformed_json",
            "missing_text",
            "empty_text",
            "missing_domain",
            "too_long",
            "malformed_record",
        ]
    )


def test_parquet_with_binary_non_utf8_and_missing_ids(tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.table(
        {"text": pa.array([b"good text", b"\xff\xfe bad"], pa.binary()), "domain": ["news", "news"]}
    )
    pq.write_table(table, path)
    docs, reasons = _collect(path)
    assert len(docs) == 1 and docs[0].text == "good text" and docs[0].id == "in.parquet:0"
    assert reasons == ["invalid_utf8"]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        list(iter_source(str(tmp_path / "does-not-exist.jsonl")))
