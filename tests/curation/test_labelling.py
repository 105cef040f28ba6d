"""The audit loop and the label stage's failure modes, with scripted labelers (no model, no network)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import curation.labelers
from curation.labelers.base import Labeler, LabelResult
from curation.labelling import AuditTargetMissed, LabelsMissing, audited_subset, label_and_audit
from rexbert_common.errors import UserError
from tests.curation.conftest import curation_config

TEXTS = [f"{'price list' if i % 2 else 'a poem'} number {i}" for i in range(40)]
IDS = [f"doc{i}" for i in range(40)]
DOMAINS = ["hobby" if i < 20 else "automotive" for i in range(40)]


class Scripted(Labeler):
    """Relevant iff 'price' is in the text; the auditor disagrees on every third text under prompt ``v1``;
    ``fail`` makes the first ``fail`` calls per text return endpoint errors."""

    def __init__(self, identity: str, auditor: bool = False, fail: int = 0):
        self.identity, self.auditor, self.fail = identity, auditor, fail
        self.asked: list[str] = []
        self.calls: dict[str, int] = {}

    def label_batch(self, texts: Sequence[str], prompt) -> list[LabelResult]:
        out = []
        for text in texts:
            self.asked.append(text)
            self.calls[text] = self.calls.get(text, 0) + 1
            if self.calls[text] <= self.fail:
                out.append(LabelResult(None, "error", "HTTP 503"))
                continue
            label = int("price" in text)
            if self.auditor and prompt.version == "v1" and int(text.rsplit(" ", 1)[1]) % 3 == 0:
                label = 1 - label
            out.append(LabelResult(label, "ok", ""))
        return out


@pytest.fixture()
def labelers(monkeypatch):
    made = {"primary": Scripted("primary"), "auditor": Scripted("auditor", auditor=True)}
    monkeypatch.setattr(
        curation.labelers, "make_labeler", lambda c: made["auditor" if c.chunks == 2 else "primary"]
    )
    return made


def _config(tmp_path, **overrides):
    return curation_config(tmp_path, [{"path": str(tmp_path)}], **overrides)


def test_the_loop_revises_the_prompt_until_kappa_reaches_the_target_on_a_fixed_subset(labelers, tmp_path):
    config = _config(tmp_path, **{"audit.target_agreement": 0.9, "audit.prompt_versions": ["v1", "v2", "v1"]})
    result = label_and_audit(config, IDS, TEXTS, DOMAINS, tmp_path / "cache.sqlite")
    kappas = [r["overall"]["cohen_kappa"] for r in result["rounds"]]
    assert len(kappas) == 2 and kappas[0] < 0.9 and kappas[1] == 1.0  # stopped at v2: the third never ran
    assert result["target_reached"] and result["chosen_prompt_version"] == "v2"
    subset = audited_subset(DOMAINS, IDS, 2 * config.audit.subset_per_class, config.sampling.seed)
    audited = [t for t in labelers["auditor"].asked]
    assert audited == [TEXTS[i] for i in subset] * 2  # the same documents in both rounds
    assert result["labels"] == [int("price" in t) for t in TEXTS]


def test_a_missed_target_stops_with_the_per_round_report(labelers, tmp_path):
    config = _config(
        tmp_path,
        **{"audit.target_agreement": 0.99, "audit.prompt_versions": ["v1"], "audit.on_target_missed": "stop"},
    )
    result = label_and_audit(config, IDS, TEXTS, DOMAINS, tmp_path / "cache.sqlite")
    assert not result["target_reached"]
    from datatrove.data import Document

    from curation.labelling import LabelAndTrain
    from curation.shards import SampleCandidates

    step = SampleCandidates(str(tmp_path / "cand"), 100, 0)
    list(
        step.run(
            iter(
                [
                    Document(text=t, id=i, metadata={"domain": d, "route": "filter"})
                    for t, i, d in zip(TEXTS, IDS, DOMAINS)
                ]
            ),
            0,
            1,
        )
    )
    from curation.config import config_to_dict

    stage = LabelAndTrain(
        config_to_dict(config),
        str(tmp_path / "cand"),
        str(tmp_path / "label"),
        str(tmp_path / "cache.sqlite"),
        1,
    )
    with pytest.raises(AuditTargetMissed, match=r"kappa >= 0.99 \(per round: \[\('v1', 0\.\d+\)\]"):
        stage.run()
    assert (tmp_path / "label" / "audit.json").exists() and not (tmp_path / "label" / "summary.json").exists()


def test_the_auditor_must_not_be_the_primary_model(monkeypatch, tmp_path):
    same = Scripted("same-model")
    monkeypatch.setattr(curation.labelers, "make_labeler", lambda c: same)
    with pytest.raises(UserError, match="auditor|same"):
        label_and_audit(_config(tmp_path), IDS, TEXTS, DOMAINS, tmp_path / "cache.sqlite")


def test_failed_labels_fail_the_stage_are_not_cached_and_only_they_are_retried(labelers, tmp_path):
    labelers["primary"].fail = 1  # every text fails once: a flaky endpoint
    config = _config(tmp_path, **{"audit.prompt_versions": ["v2"]})
    with pytest.raises(LabelsMissing, match="40 labels missing"):
        label_and_audit(config, IDS, TEXTS, DOMAINS, tmp_path / "cache.sqlite")
    labelers["primary"].asked.clear()
    result = label_and_audit(config, IDS, TEXTS, DOMAINS, tmp_path / "cache.sqlite")  # the rerun
    assert sorted(labelers["primary"].asked) == sorted(TEXTS)  # asked again: nothing was cached
    assert None not in result["labels"]
    labelers["primary"].asked.clear()
    label_and_audit(config, IDS, TEXTS, DOMAINS, tmp_path / "cache.sqlite")
    assert labelers["primary"].asked == []  # now every answer is cached


def test_the_adult_false_positive_rate_is_measured_on_documents_labelled_relevant(tmp_path):
    from curation.labelling import measure_cleaning

    config = _config(tmp_path, **{"cleaning.adult.url_filter": False})
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


def test_the_label_stage_has_no_completion_marker_while_labels_are_missing(labelers, tmp_path):
    """Through datatrove's executor: a flaky endpoint fails the task (not done); the rerun completes."""
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor

    from curation.config import config_to_dict
    from curation.labelling import LabelAndTrain
    from curation.shards import SampleCandidates

    docs = [
        Document(text=t, id=i, metadata={"domain": d, "route": "filter"})
        for t, i, d in zip(TEXTS, IDS, DOMAINS)
    ]
    list(SampleCandidates(str(tmp_path / "cand"), 100, 0).run(iter(docs), 0, 1))
    config = _config(tmp_path, **{"audit.prompt_versions": ["v2"]})
    step = LabelAndTrain(
        config_to_dict(config), str(tmp_path / "cand"), str(tmp_path / "out"), str(tmp_path / "c.db"), 1
    )

    def run():
        LocalPipelineExecutor([step], tasks=1, workers=1, logging_dir=str(tmp_path / "logs")).run()

    labelers["primary"].fail = 1
    with pytest.raises(LabelsMissing):
        run()
    assert not (tmp_path / "logs" / "completions" / "00000").exists()
    run()  # the endpoint recovered: the rerun asks again and completes
    assert (tmp_path / "logs" / "completions" / "00000").exists()
    assert (tmp_path / "out" / "summary.json").exists() and (
        tmp_path / "out" / "classifiers" / "hobby.json"
    ).exists()
