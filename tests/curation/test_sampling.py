"""Labelling candidates: per task the smallest seeded keys per domain; merged, the same sample for any
task count, uniform over the input."""

import random

from datatrove.data import Document

from curation.filters import normalise_domain
from curation.shards import SampleCandidates, merged_sample


def _docs(n: int) -> list[Document]:
    return [
        Document(text=f"text {i}", id=f"doc{i}", metadata={"domain": f"d{i % 3}", "route": "filter"})
        for i in range(n)
    ]


def _sample(docs, tasks: int, folder, per_domain: int, seed: int = 1):
    step = SampleCandidates(str(folder), per_domain, seed)
    for rank in range(tasks):
        passed = list(step.run(iter(docs[rank::tasks]), rank, tasks))
        assert passed == docs[rank::tasks]  # every document flows on
    table = merged_sample(str(folder), per_domain, tasks)
    return list(zip(table.column("domain").to_pylist(), table.column("id").to_pylist()))


def test_sample_is_seeded_sized_and_independent_of_task_count_and_order(tmp_path):
    docs = _docs(600) + [Document(text="x", id="direct", metadata={"domain": "d9", "route": "direct"})]
    one = _sample(docs, 1, tmp_path / "one", 50)
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert _sample(shuffled, 4, tmp_path / "four", 50) == one
    assert {d: sum(1 for x, _ in one if x == d) for d in ("d0", "d1", "d2")} == {"d0": 50, "d1": 50, "d2": 50}
    assert all(int(i[3:]) % 3 == int(d[1]) for d, i in one)  # the right domain, no direct-route document
    assert _sample(docs, 1, tmp_path / "seed2", 50, seed=2) != one


def test_sample_is_roughly_uniform(tmp_path):
    docs = [
        Document(text="t", id=f"doc{i}", metadata={"domain": "d", "route": "filter"}) for i in range(10_000)
    ]
    chosen = _sample(docs, 2, tmp_path, 2_000)
    low_half = sum(int(i[3:]) < 5_000 for _, i in chosen)
    assert 900 < low_half < 1_100  # binomial(2000, 0.5): sd ~22


def test_a_missing_task_file_is_an_error_not_a_smaller_sample(tmp_path):
    import pytest

    from rexbert_common.errors import UserError

    _sample(_docs(30), 2, tmp_path, 5)
    (tmp_path / "00001.parquet").unlink()
    with pytest.raises(UserError, match="00001.parquet"):
        merged_sample(str(tmp_path), 5, 2)


def test_domain_names_are_normalised():
    assert [normalise_domain(d) for d in ("Music & Dance", "News", " beauty ")] == [
        "music_and_dance",
        "news",
        "beauty",
    ]
