"""The labelling sample from keys: per task the smallest seeded keys per domain, merged globally -- the same
sample as the bottom-k rule applied to every document at once, for any task count and input order; no text
is kept; the merge's memory does not grow with the input or the task count."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from datatrove.data import Document

from curation.filters import normalise_domain
from curation.sampling import ChooseSample, SampleKeys, merge_key_files, read_chosen, sample_key
from rexbert_common.errors import UserError


def _docs(n: int, domains: int = 3) -> list[Document]:
    return [
        Document(text=f"text {i}", id=f"doc{i}", metadata={"domain": f"d{i % domains}", "route": "filter"})
        for i in range(n)
    ]


def _reference(docs: list[Document], per_domain: int, seed: int) -> list[tuple[str, str]]:
    """The sampling rule on the whole input in one place: per domain the smallest (key, id)."""
    rows = sorted(
        (d.metadata["domain"], sample_key(seed, d.id), d.id) for d in docs if d.metadata["route"] == "filter"
    )
    out, taken = [], {}
    for domain, _, doc_id in rows:
        taken[domain] = taken.get(domain, 0) + 1
        if taken[domain] <= per_domain:
            out.append((domain, doc_id))
    return out


def _sample(docs, tasks: int, folder: Path, per_domain: int, seed: int = 1) -> list[tuple[str, str]]:
    step = SampleKeys(str(folder / "keys"), per_domain, seed)
    for rank in range(tasks):
        passed = list(step.run(iter(docs[rank::tasks]), rank, tasks))
        assert passed == docs[rank::tasks]  # every document flows on
    ChooseSample(str(folder / "keys"), str(folder / "sample"), per_domain, tasks).run()
    rows = []
    for rank in range(tasks):
        table = read_chosen(str(folder / "sample"), rank)
        assert set(table.column_names) == {"domain", "key", "id"}  # keys only, never a text
        chosen_ids = table.column("id").to_pylist()
        assert set(chosen_ids) <= {d.id for d in docs[rank::tasks]}  # filed under the rank that read it
        rows += zip(table.column("domain").to_pylist(), chosen_ids)
    return sorted(rows, key=lambda r: (r[0], sample_key(seed, r[1]), r[1]))


@pytest.mark.parametrize("tasks", [1, 3, 8])
def test_the_sample_is_the_bottom_k_rule_for_any_task_count_and_order(tmp_path, tasks):
    docs = _docs(900) + [Document(text="x", id="direct", metadata={"domain": "d9", "route": "direct"})]
    shuffled = docs[:]
    random.Random(tasks).shuffle(shuffled)
    assert _sample(shuffled, tasks, tmp_path, 50) == _reference(docs, 50, seed=1)
    summary = json.loads((tmp_path / "sample" / "sample.json").read_text())
    assert summary == {"per_domain": {"d0": 50, "d1": 50, "d2": 50}, "total": 150}


def test_a_domain_smaller_than_the_sample_is_taken_whole_and_the_seed_matters(tmp_path):
    docs = _docs(40, domains=2)
    assert _sample(docs, 4, tmp_path / "a", 30) == _reference(docs, 30, seed=1)  # 20 per domain: all
    assert _sample(_docs(600), 2, tmp_path / "b", 20, seed=2) != _sample(_docs(600), 2, tmp_path / "c", 20)


def test_sample_is_roughly_uniform(tmp_path):
    docs = [
        Document(text="t", id=f"doc{i}", metadata={"domain": "d", "route": "filter"}) for i in range(10_000)
    ]
    chosen = _sample(docs, 2, tmp_path, 2_000)
    low_half = sum(int(i[3:]) < 5_000 for _, i in chosen)
    assert 900 < low_half < 1_100  # binomial(2000, 0.5): sd ~22


def test_a_missing_key_file_is_an_error_not_a_smaller_sample(tmp_path):
    _sample(_docs(30), 2, tmp_path, 5)
    (tmp_path / "keys" / "00001.parquet").unlink()
    with pytest.raises(UserError, match=r"00001\.parquet.*1 of 2"):
        merge_key_files(str(tmp_path / "keys"), 5, 2)
    (tmp_path / "sample" / "chosen" / "00000.parquet").unlink()
    with pytest.raises(UserError, match="chosen/00000.parquet is missing"):
        read_chosen(str(tmp_path / "sample"), 0)


_MEASURE = """
import random, sys, tracemalloc
import pyarrow as pa
from datatrove.io import get_datafolder
from curation.sampling import bottom_k, merge_key_files, write_keys
folder, tasks = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
for rank in range(tasks):  # what a prepare task writes when it saw more than per_domain documents per domain
    rows = [(f"d{i % 4}", rng.getrandbits(64), f"r{rank}-{i}") for i in range(4 * 300)]
    write_keys(get_datafolder(folder), f"{rank:05d}.parquet", bottom_k(rows, 300))
tracemalloc.start()
merge_key_files(folder, 300, tasks)
print(tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory())
"""


def _merge_peak(tmp_path: Path, tasks: int) -> int:
    root = str(Path(__file__).resolve().parents[2])
    command = [sys.executable, "-c", _MEASURE, str(tmp_path / str(tasks)), str(tasks)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env={"PYTHONPATH": root})
    return int(out.stdout.split()[-1])


def test_the_merge_holds_the_sample_not_every_tasks_keys(tmp_path):
    """Peak memory of the sample stage's merge (Python + Arrow, a fresh process each) over 2, 8 and 32 tasks'
    key files of 1,200 keys each: flat (a merge that read every task's keys into one table grows 16x). The
    keys a task writes are capped by per_domain, so a larger input changes nothing here either."""
    base, eight, many = (_merge_peak(tmp_path, tasks) for tasks in (2, 8, 32))
    assert max(eight, many) < 1.25 * base, (base, eight, many)


def test_domain_names_are_normalised():
    assert [normalise_domain(d) for d in ("Music & Dance", "News", " beauty ")] == [
        "music_and_dance",
        "news",
        "beauty",
    ]
