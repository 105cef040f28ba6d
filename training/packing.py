"""Greedy best-fit packing of tokenized documents into fixed-length rows.

Documents longer than a row are split into row-sized pieces first. Pieces are then placed, longest
first within a buffer (best-fit decreasing), into the open row with the least room that still fits,
so rows fill up and padding stays small. A row keeps its documents' lengths: the collator turns
them into ``document_ids`` so attention never crosses documents and RoPE positions restart.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TokenizedDoc:
    """One tokenized document (``[CLS] ... [SEP]``) and optional Guided-MLM token spans [start, end)."""

    input_ids: Sequence[int]
    spans: Sequence[tuple[int, int]] = ()


@dataclass
class PackedRow:
    """A packed row: concatenated documents (no padding), their lengths, spans in row coordinates."""

    input_ids: list[int] = field(default_factory=list)
    doc_lengths: list[int] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)

    def add(self, doc: TokenizedDoc) -> None:
        offset = len(self.input_ids)
        self.input_ids.extend(int(t) for t in doc.input_ids)
        self.doc_lengths.append(len(doc.input_ids))
        self.spans.extend((a + offset, b + offset) for a, b in doc.spans)


def piece_bounds(
    length: int, spans: Sequence[tuple[int, int]], max_len: int
) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """``(start, end, spans)`` of the row-sized pieces a ``length``-token document is cut into (spans
    clipped to their piece, in piece coordinates)."""
    if length <= max_len:
        return [(0, length, list(spans))]
    pieces = []
    for start in range(0, length, max_len):
        end = min(start + max_len, length)
        clipped = [(max(a, start) - start, min(b, end) - start) for a, b in spans if a < end and b > start]
        pieces.append((start, end, clipped))
    return pieces


def split_long(doc: TokenizedDoc, max_len: int) -> list[TokenizedDoc]:
    """Cut a document into pieces of at most ``max_len`` tokens; spans are clipped to their piece."""
    if len(doc.input_ids) <= max_len:
        return [doc]
    ids = list(doc.input_ids)
    return [TokenizedDoc(ids[a:b], spans) for a, b, spans in piece_bounds(len(ids), doc.spans, max_len)]


def best_fit_rows(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """Best-fit decreasing on piece lengths (each <= ``max_len``): the rows, in creation order, as the
    indices of their pieces in placement order. Pieces are placed longest first (ties: input order) into
    the open row with the least room that still fits."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    rows: list[list[int]] = []
    free_keys: list[tuple[int, int]] = []  # sorted (room left, row index) of rows with room
    for piece in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable
        need = lengths[piece]
        k = bisect.bisect_left(free_keys, (need, -1))  # tightest row with room >= need
        if k < len(free_keys):
            room, idx = free_keys.pop(k)
        else:
            room, idx = max_len, len(rows)
            rows.append([])
        rows[idx].append(piece)
        if room - need > 0:
            bisect.insort(free_keys, (room - need, idx))
    return rows


def best_fit_pack(docs: Iterable[TokenizedDoc], max_len: int) -> list[PackedRow]:
    """Pack ``docs`` into rows of at most ``max_len`` tokens (best-fit decreasing, :func:`best_fit_rows`).

    Returns the rows in creation order. Every token of every document appears exactly once.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    pieces = [p for d in docs for p in split_long(d, max_len) if len(p.input_ids) > 0]
    rows = []
    for members in best_fit_rows([len(p.input_ids) for p in pieces], max_len):
        row = PackedRow()
        for piece in members:
            row.add(pieces[piece])
        rows.append(row)
    return rows


def pack_stream(docs: Iterable[TokenizedDoc], max_len: int, buffer_docs: int = 2048) -> Iterator[PackedRow]:
    """Pack a stream in buffers of ``buffer_docs`` documents (bounded memory, order roughly kept)."""
    buffer: list[TokenizedDoc] = []
    for doc in docs:
        buffer.append(doc)
        if len(buffer) >= buffer_docs:
            yield from best_fit_pack(buffer, max_len)
            buffer = []
    if buffer:
        yield from best_fit_pack(buffer, max_len)


def packing_efficiency(rows: Sequence[PackedRow], max_len: int) -> float:
    """Real tokens / slots (rows · max_len)."""
    return sum(len(r.input_ids) for r in rows) / max(1, len(rows) * max_len)


def document_ids_from_lengths(doc_lengths: Sequence[int], seq_len: int) -> np.ndarray:
    """(seq_len,) document index per token; the padding tail gets its own id (``len(doc_lengths)``)."""
    ids = np.repeat(np.arange(len(doc_lengths), dtype=np.int64), doc_lengths)
    return np.concatenate([ids, np.full(seq_len - ids.size, len(doc_lengths), dtype=np.int64)])
