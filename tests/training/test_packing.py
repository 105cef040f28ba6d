import numpy as np
import pytest

from training.packing import (
    TokenizedDoc,
    best_fit_pack,
    document_ids_from_lengths,
    pack_stream,
    packing_efficiency,
    split_long,
)


def _docs(seed=0, n=300, max_len=128):
    rng = np.random.default_rng(seed)
    docs, next_id = [], 0
    for length in rng.integers(5, 300, size=n):
        docs.append(TokenizedDoc(list(range(next_id, next_id + length)), [(1, 3)]))
        next_id += length
    return docs


def test_every_token_once_rows_fit_and_efficiency_high():
    docs = _docs()
    rows = best_fit_pack(docs, 128)
    all_tokens = sorted(t for r in rows for t in r.input_ids)
    assert all_tokens == sorted(t for d in docs for t in d.input_ids)
    assert all(len(r.input_ids) <= 128 and sum(r.doc_lengths) == len(r.input_ids) for r in rows)
    eff = packing_efficiency(rows, 128)
    assert eff > 0.95
    # best-fit needs no more rows than the lower bound + a few
    total = sum(len(d.input_ids) for d in docs)
    assert len(rows) <= -(-total // 128) + 3


def test_best_fit_beats_first_come_rows():
    docs = _docs(1)
    naive = 0
    room = 0
    for d in docs:
        for p in split_long(d, 128):
            if len(p.input_ids) > room:
                naive, room = naive + 1, 128
            room -= len(p.input_ids)
    assert len(best_fit_pack(docs, 128)) < naive


def test_split_long_keeps_spans_in_piece_coordinates():
    doc = TokenizedDoc(list(range(10)), [(2, 5), (3, 8)])
    a, b, c = split_long(doc, 4)
    assert [list(p.input_ids) for p in (a, b, c)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert a.spans == [(2, 4), (3, 4)] and b.spans == [(0, 1), (0, 4)] and c.spans == []


def test_spans_follow_documents_into_rows():
    rows = best_fit_pack([TokenizedDoc([7] * 5, [(1, 2)]), TokenizedDoc([9] * 3, [(0, 3)])], 16)
    (row,) = rows
    for a, b in row.spans:
        assert len(set(row.input_ids[a:b])) == 1


def test_document_ids_and_stream():
    np.testing.assert_array_equal(document_ids_from_lengths([2, 3], 7), [0, 0, 1, 1, 1, 2, 2])
    rows = list(pack_stream(_docs(), 128, buffer_docs=50))
    assert sum(len(r.input_ids) for r in rows) == sum(len(d.input_ids) for d in _docs())
    with pytest.raises(ValueError):
        best_fit_pack([], 0)
