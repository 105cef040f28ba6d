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


def split_long(doc: TokenizedDoc, max_len: int) -> list[TokenizedDoc]:
    """Cut a document into pieces of at most ``max_len`` tokens; spans are clipped to their piece."""
    ids = list(doc.input_ids)
    if len(ids) <= max_len:
        return [doc]
    pieces = []
    for start in range(0, len(ids), max_len):
        end = min(start + max_len, len(ids))
        spans = [(max(a, start) - start, min(b, end) - start) for a, b in doc.spans if a < end and b > start]
        pieces.append(TokenizedDoc(ids[start:end], spans))
    return pieces


def best_fit_pack(docs: Iterable[TokenizedDoc], max_len: int) -> list[PackedRow]:
    """Pack ``docs`` into rows of at most ``max_len`` tokens (best-fit decreasing).

    Returns the rows in creation order. Every token of every document appears exactly once.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    pieces = [p for d in docs for p in split_long(d, max_len) if len(p.input_ids) > 0]
    pieces.sort(key=lambda p: len(p.input_ids), reverse=True)  # stable: ties keep input order
    rows: list[PackedRow] = []
    free_keys: list[tuple[int, int]] = []  # sorted (room left, row index) of rows with room
    for piece in pieces:
        need = len(piece.input_ids)
        k = bisect.bisect_left(free_keys, (need, -1))  # tightest row with room >= need
        if k < len(free_keys):
            room, idx = free_keys.pop(k)
        else:
            room, idx = max_len, len(rows)
            rows.append(PackedRow())
        rows[idx].add(piece)
        if room - need > 0:
            bisect.insort(free_keys, (room - need, idx))
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
