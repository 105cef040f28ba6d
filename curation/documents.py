"""Documents and robust readers for FineFineWeb-style inputs (``text`` + ``domain``, optional ``url``/``id``).

Readers never raise on a bad record: they yield ``(None, reason)`` so the caller counts the drop. A file
that cannot be opened at all is a configuration error and raises with the path in the message.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Record = tuple["Doc | None", str]  # (doc, "") when valid, (None, drop_reason) otherwise


@dataclass
class Doc:
    id: str
    text: str
    domain: str
    url: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _as_str(value: Any) -> str | None:
    """Strict UTF-8: bytes that do not decode are rejected, never replaced (that would corrupt the corpus)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError -> counted as invalid_utf8 by the caller
    return value if isinstance(value, str) else None


def validate_record(
    row: dict[str, Any], default_id: str, text_field: str, domain_field: str, max_chars: int, source: str
) -> Record:
    """Turn one raw row into a :class:`Doc` or a named drop reason."""
    if not isinstance(row, dict):
        return None, "malformed_record"
    try:
        text = _as_str(row.get(text_field))
        domain = _as_str(row.get(domain_field))
        url = _as_str(row.get("url")) or ""
        raw_id = row.get("id")
        doc_id = (_as_str(raw_id) if isinstance(raw_id, (str, bytes)) else None) or (
            str(raw_id) if isinstance(raw_id, int) else default_id
        )
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    if text is None:
        return None, "missing_text"
    if not text.strip():
        return None, "empty_text"
    if len(text) > max_chars:
        return None, "too_long"
    if domain is None or not domain.strip():
        return None, "missing_domain"
    # Optional known relevance (the offline demo's source class): carried for reporting only.
    metadata = {"is_commerce": row["is_commerce"]} if "is_commerce" in row else {}
    return Doc(
        id=doc_id, text=text, domain=domain.strip().lower(), url=url, source=source, metadata=metadata
    ), ""


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_jsonl(path: Path, text_field: str, domain_field: str, max_chars: int) -> Iterator[Record]:
    with _open_bytes(path) as handle:
        for lineno, raw in enumerate(handle):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield None, "invalid_utf8"
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                yield None, "malformed_json"
                continue
            yield validate_record(
                row, f"{path.name}:{lineno}", text_field, domain_field, max_chars, path.name
            )


def iter_parquet(
    path: Path, text_field: str, domain_field: str, max_chars: int, batch_size: int = 2048
) -> Iterator[Record]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    index = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield validate_record(row, f"{path.name}:{index}", text_field, domain_field, max_chars, path.name)
            index += 1


def iter_hub(
    dataset_id: str, split: str, text_field: str, domain_field: str, max_chars: int
) -> Iterator[Record]:
    """Stream a Hub dataset (e.g. ``m-a-p/FineFineWeb``); needs network access, not exercised offline."""
    from datasets import load_dataset

    for index, row in enumerate(load_dataset(dataset_id, split=split, streaming=True)):
        yield validate_record(row, f"{dataset_id}:{index}", text_field, domain_field, max_chars, dataset_id)


def iter_source(
    spec: str,
    text_field: str = "text",
    domain_field: str = "domain",
    max_chars: int = 1_000_000,
    split: str = "train",
) -> Iterator[Record]:
    """Records from a local file/folder (``.jsonl[.gz]``, ``.json[.gz]`` lines, ``.parquet``) or ``hf://<id>``."""
    if spec.startswith("hf://"):
        yield from iter_hub(spec[len("hf://") :], split, text_field, domain_field, max_chars)
        return
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"curation input {spec!r} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        name = file.name.removesuffix(".gz")
        if name.endswith(".parquet"):
            yield from iter_parquet(file, text_field, domain_field, max_chars)
        elif name.endswith((".jsonl", ".json")):
            yield from iter_jsonl(file, text_field, domain_field, max_chars)
        elif path.is_file():
            raise ValueError(
                f"curation input {file}: unsupported format (use .jsonl[.gz], .json[.gz], .parquet)"
            )


DOC_COLUMNS = ("id", "text", "domain", "url", "source")


def docs_to_table(docs: list[Doc], extra: dict[str, list] | None = None):
    import pyarrow as pa

    columns = {name: [getattr(d, name) for d in docs] for name in DOC_COLUMNS}
    columns.update(extra or {})
    return pa.table(columns)


def table_to_docs(table) -> list[Doc]:
    cols = {name: table.column(name).to_pylist() for name in DOC_COLUMNS}
    return [Doc(**{name: cols[name][i] for name in DOC_COLUMNS}) for i in range(table.num_rows)]
