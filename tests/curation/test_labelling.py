"""The label stage (sharded, cached, coverage-gated) and the train stage (one task per domain), through
datatrove's executor, with a scripted labeler (no model, no network)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

import curation.labelers
from curation.config import config_to_dict
from curation.labelers.base import Labeler, LabelResult
from curation.labelling import LabelShard, TrainDomain, measure_cleaning, read_rows
from rexbert_common.errors import UserError
from rexbert_common.executors import ExecutorConfig, Stage, run_stages
from tests.curation.conftest import curation_config

TEXTS = [
    f"{'price list for cables and adapters' if i % 2 else 'a poem about the sea'} number {i}"
    for i in range(60)
]


class Scripted(Labeler):
    identity = "scripted"

    def __init__(self, fail_first: int = 0):
        self.fail_first, self.asked = fail_first, []

    def label_batch(self, texts: Sequence[str], prompt) -> list[LabelResult]:
        out = []
        for text in texts:
            self.asked.append(text)
            if len(self.asked) <= self.fail_first:
                out.append(LabelResult(None, "error", "no content"))
            else:
                out.append(LabelResult(int("price" in text), "ok", ""))
        return out


FILES = 6  # input files; document i is record i of file i % FILES


def _doc_id(i: int) -> str:
    return f"src/part-{i % FILES}.jsonl#{i}"


def _index(doc_id: str) -> int:
    return int(doc_id.rsplit("#", 1)[1])


def _fetched(folder, tasks: int = 2):
    """The fetched shards of a ``tasks``-task run as the fetch stage writes them (task r holds the documents
    of input files[r::tasks]), plus the audit's decision."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.fetch import fetched_schema

    for rank in range(tasks):
        rows = [
            ("hobby" if i % 3 else "automotive", i, _doc_id(i), TEXTS[i], int("price" in TEXTS[i]), "")
            for i in range(len(TEXTS))
            if (i % FILES) % tasks == rank
        ]
        table = pa.table(dict(zip(fetched_schema().names, zip(*rows))), schema=fetched_schema())
        (folder / "fetched").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "fetched" / f"{rank:05d}.parquet")
    (folder / "audit").mkdir()
    (folder / "audit" / "decision.json").write_text(json.dumps({"prompt_version": "v2"}))


def _stages(tmp_path, config, tasks: int = 2, cache=None):
    c = config_to_dict(config)
    label = Stage(
        "label",
        tasks,
        [
            LabelShard(
                c["labeler"],
                config.labeler.min_coverage,
                str(config.prompts_dir()),
                str(tmp_path / "audit"),
                str(tmp_path / "fetched"),
                str(tmp_path / "label" / "labels"),
                str(cache or tmp_path / "cache"),
            )
        ],
        tmp_path / "label",
        "fp",
    )
    train = Stage(
        "train",
        2,
        [TrainDomain(c, str(tmp_path / "label" / "labels"), tasks, str(tmp_path / "train"))],
        tmp_path / "train",
        "fp",
    )
    return [label, train]


@pytest.fixture()
def labeler(monkeypatch):
    made = Scripted()
    monkeypatch.setattr(curation.labelers, "make_labeler", lambda c: made)
    return made


def _config(tmp_path):
    return curation_config(
        tmp_path, [{"path": str(tmp_path)}], **{"domains.filter_required": ["hobby", "automotive"]}
    )


def test_labels_are_sharded_and_the_classifiers_trained_per_domain(labeler, tmp_path):
    _fetched(tmp_path)
    config = _config(tmp_path)
    run_stages(_stages(tmp_path, config), ExecutorConfig(kind="local", workers=1))
    rows = list(read_rows(str(tmp_path / "label" / "labels"), 2, ("id", "label", "status")))
    assert sorted(r["id"] for r in rows) == sorted(_doc_id(i) for i in range(60))
    assert all(r["status"] == "ok" and r["label"] == int("price" in TEXTS[_index(r["id"])]) for r in rows)
    for domain in ("automotive", "hobby"):
        record = json.loads((tmp_path / "train" / "classifiers" / f"{domain}.json").read_text())
        assert record["n_sampled"] == record["n_labelled"] == (20 if domain == "automotive" else 40)


def test_a_shard_below_the_coverage_minimum_fails_in_one_line_and_its_rerun_asks_only_the_missing(
    labeler, tmp_path
):
    _fetched(tmp_path)
    config = _config(tmp_path)
    labeler.fail_first = 3  # 3 of the first shard's 30 documents: 90% < 99%
    with pytest.raises(UserError) as caught:
        run_stages(_stages(tmp_path, config)[:1], ExecutorConfig(kind="local", workers=1))
    message = str(caught.value)
    assert "\n" not in message and "stage 'label': 2 of 2 tasks did not complete" in message
    assert "label task 0: labels for 27 of 30 documents (90.0%) < labeler.min_coverage 99.0%" in message
    labeler.asked.clear()
    labeler.fail_first = 0  # the endpoint recovered
    run_stages(_stages(tmp_path, config)[:1], ExecutorConfig(kind="local", workers=1))
    assert len(labeler.asked) == 3 + 30  # the 3 that failed (nothing cached for them) + the second shard


@pytest.mark.parametrize("first, second", [(2, 3), (3, 1)])
def test_cached_labels_are_found_whatever_the_task_split(labeler, tmp_path, first, second):
    """Changing --tasks recomputes the stages, but every document keeps its input file, and labels are
    cached per input file: the second run asks the labeler nothing and writes the same labels."""
    config, cache = _config(tmp_path), tmp_path / "shared_cache"
    runs = []
    for tasks in (first, second):
        folder = tmp_path / f"run{tasks}"
        _fetched(folder, tasks)
        run_stages(_stages(folder, config, tasks, cache)[:1], ExecutorConfig(kind="local", workers=1))
        rows = read_rows(str(folder / "label" / "labels"), tasks, ("id", "text", "label", "status"))
        runs.append(sorted(rows, key=lambda r: r["id"]))
        if tasks == first:
            assert len(labeler.asked) == len(TEXTS)
            labeler.asked.clear()
    assert labeler.asked == []  # zero new labeler calls
    assert runs[0] == runs[1] and len(runs[0]) == len(TEXTS)


def test_a_missing_fetched_shard_is_an_error(labeler, tmp_path):
    _fetched(tmp_path)
    (tmp_path / "fetched" / "00001.parquet").unlink()
    with pytest.raises(UserError, match=r"fetched/00001.parquet is missing"):
        run_stages(_stages(tmp_path, _config(tmp_path))[:1], ExecutorConfig(kind="local", workers=1))


def test_the_adult_false_positive_rate_is_measured_on_documents_labelled_relevant(tmp_path):
    config = curation_config(tmp_path, [{"path": str(tmp_path)}], **{"cleaning.adult.url_filter": False})
    texts = [
        "Naked palette, nude shades. Add to bag.",
        "porn porn porn porn " * 3,
        "Ford Escort parts\nAdvertisement",
    ]
    cleaned, report = measure_cleaning(
        config, texts, ["", "", ""], ["beauty", "beauty", "automotive"], [1, 1, 1]
    )
    assert (
        report["beauty"]["adult_false_positive_rate"] == 0.5
        and report["automotive"]["adult_false_positive_rate"] == 0
    )
    assert cleaned[2] == "Ford Escort parts" and report["automotive"]["boilerplate_char_share"] > 0
