"""Curation's file formats, written atomically (``rexbert_common.files``): a killed run never leaves a
half-written output behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rexbert_common.files import atomic_write, write_text_atomic
from rexbert_common.files import write_json_atomic as _write_json_atomic

__all__ = ["atomic_write", "read_json", "write_json_atomic", "write_parquet_atomic", "write_text_atomic"]


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return _write_json_atomic(path, obj, indent=2, sort_keys=True, ensure_ascii=False)


def write_parquet_atomic(path: str | Path, table) -> Path:
    import pyarrow.parquet as pq

    # Fixed writer options keep the bytes identical between an interrupted-and-resumed run and a clean one.
    return atomic_write(
        path, lambda tmp: pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    )


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
