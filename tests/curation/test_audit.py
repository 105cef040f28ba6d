"""Audit statistics and the audit loop: weighted kappa (scikit-learn's), its stratified bootstrap interval
(scipy's on one stratum), the stratified design, the gate on the interval's lower bound, the best round kept,
and the one-line stops (same model, thin strata, too few pairs, missing labels), with scripted labelers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

import curation.labelers
from curation.audit import (
    AuditTooThin,
    LabelCoverageError,
    best_round,
    design_audit,
    run_audit,
    stratified_bootstrap,
    weighted_kappa,
)
from curation.labelers import LabelCache
from curation.labelers.base import Labeler, LabelResult
from rexbert_common.errors import UserError
from tests.curation.conftest import curation_config


def test_weighted_kappa_is_scikit_learns():
    rng = np.random.default_rng(0)
    primary = rng.integers(0, 2, 300)
    auditor = np.where(rng.random(300) < 0.8, primary, 1 - primary)
    weights = rng.uniform(0.5, 4.0, 300)
    assert weighted_kappa(primary, auditor, weights) == pytest.approx(
        cohen_kappa_score(auditor, primary, sample_weight=weights)
    )
    assert weighted_kappa(primary, auditor, np.ones(300)) == pytest.approx(
        cohen_kappa_score(auditor, primary)
    )
    batch = weighted_kappa(np.stack([primary, primary]), np.stack([auditor, primary]), np.ones((2, 300)))
    assert batch[0] == pytest.approx(cohen_kappa_score(auditor, primary)) and batch[1] == pytest.approx(1.0)


def test_one_stratum_interval_matches_scipys_percentile_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(1)
    primary = rng.integers(0, 2, 200)
    auditor = np.where(rng.random(200) < 0.85, primary, 1 - primary)
    kappa, low, high = stratified_bootstrap([0] * 200, primary, auditor, [1.0] * 200, 4000, 0.95, seed=3)
    reference = bootstrap(
        (primary, auditor),
        lambda p, a: cohen_kappa_score(a, p),
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=4,
    ).confidence_interval
    assert kappa == pytest.approx(cohen_kappa_score(auditor, primary))
    assert low == pytest.approx(reference.low, abs=0.02) and high == pytest.approx(reference.high, abs=0.02)
    assert low < kappa < high


def test_the_design_is_stratified_by_first_label_split_in_halves_and_weighted_by_the_pool():
    ids = [f"d{i}" for i in range(200)]
    domains = ["news" if i < 100 else "food" for i in range(200)]
    first = [int(i % 10 == 0) for i in range(200)]  # 10 Relevant per domain, 90 Not relevant
    design = design_audit(ids, domains, first, per_stratum=8, min_per_stratum=5, seed=0)
    assert set(design.selection).isdisjoint(design.confirmation)
    assert len(design.selection) == len(design.confirmation) == 16  # 4 strata x 8 / 2
    for half in (design.selection, design.confirmation):
        strata = [design.stratum[i] for i in half]
        assert {s: strata.count(s) for s in set(strata)} == {
            ("news", 0): 4,
            ("news", 1): 4,
            ("food", 0): 4,
            ("food", 1): 4,
        }
    rare = next(i for i in design.selection if design.stratum[i] == ("news", 1))
    common = next(i for i in design.selection if design.stratum[i] == ("news", 0))
    assert (design.weight[rare], design.weight[common]) == (10 / 4, 90 / 4)
    with pytest.raises(AuditTooThin, match=r"\(food/Relevant: 10, news/Relevant: 10\)"):
        design_audit(ids, domains, first, per_stratum=8, min_per_stratum=11, seed=0)


def test_the_best_round_is_kept_not_the_last():
    rounds = [
        {"prompt_version": v, "selection": {"cohen_kappa": k}}
        for v, k in (("v1", 0.5), ("v2", 0.2), ("v3", None))
    ]
    assert best_round(rounds)["prompt_version"] == "v1"
    tie = [{"prompt_version": v, "selection": {"cohen_kappa": 0.4}} for v in ("v1", "v2")]
    assert best_round(tie)["prompt_version"] == "v1"


TEXTS = [f"{'price list' if i % 3 else 'a poem'} number {i}" for i in range(240)]
IDS = [f"doc{i}" for i in range(240)]
DOMAINS = ["hobby" if i < 120 else "automotive" for i in range(240)]


class Scripted(Labeler):
    """Relevant iff 'price' is in the text. An auditor flips the label on every ``flip``-th text per prompt
    version; ``fail`` returns errors for the first ``fail`` calls per text."""

    def __init__(self, identity: str, weights: str, flip: dict[str, int] | None = None, fail: int = 0):
        self.identity, self.weights, self.flip, self.fail = identity, weights, flip or {}, fail
        self.asked: list[str] = []
        self.calls: dict[str, int] = {}

    @property
    def model_identity(self) -> str:
        return self.weights

    def label_batch(self, texts: Sequence[str], prompt) -> list[LabelResult]:
        out = []
        for text in texts:
            self.asked.append(text)
            self.calls[text] = self.calls.get(text, 0) + 1
            if self.calls[text] <= self.fail:
                out.append(LabelResult(None, "error", "HTTP 200 with an error body"))
                continue
            label = int("price" in text)
            step = self.flip.get(prompt.version)
            if step and int(text.rsplit(" ", 1)[1]) % step == 0:
                label = 1 - label
            out.append(LabelResult(label, "ok", ""))
        return out


def _config(tmp_path, **overrides):
    base = {
        "audit.allow_same_model": False,
        "audit.subset_per_class": 40,
        "audit.min_per_stratum": 10,
        "audit.min_pairs": 40,
        "audit.pool_per_domain": 200,
        "audit.on_target_missed": "continue",
    }
    return curation_config(tmp_path, [{"path": str(tmp_path)}], **{**base, **overrides})


def _audit(monkeypatch, tmp_path, primary, auditor, **overrides):
    monkeypatch.setattr(curation.labelers, "make_labeler", lambda c: auditor if c.chunks == 2 else primary)
    cache = LabelCache(tmp_path / "cache.sqlite")
    try:
        return run_audit(_config(tmp_path, **overrides), IDS, TEXTS, DOMAINS, cache)
    finally:
        cache.close()


def test_the_loop_stops_at_the_target_and_confirms_on_the_other_half(monkeypatch, tmp_path):
    primary = Scripted("p", "weights:a")
    auditor = Scripted("a", "weights:b", flip={"v1": 3})  # v1 disagrees on a third of the texts, v2 never
    overrides = {"audit.target_agreement": 0.8, "audit.prompt_versions": ["v1", "v2", "v1"]}
    result = _audit(monkeypatch, tmp_path, primary, auditor, **overrides)
    rounds = result.record["rounds"]
    assert [r["prompt_version"] for r in rounds] == ["v1", "v2"]  # stopped at v2: the third never ran
    assert rounds[0]["selection"]["cohen_kappa"] < 0.8 and rounds[1]["selection"]["cohen_kappa"] == 1.0
    assert result.chosen_version == "v2" and result.record["target_reached"]
    confirmation = result.record["confirmation"]
    assert confirmation["n"] == 80 and confirmation["kappa_interval"][0] == 1.0
    assert result.record["auditor_independent"] and result.record["gate_meaningful"]


def test_a_wide_interval_misses_the_target_even_when_the_point_kappa_reaches_it(monkeypatch, tmp_path):
    """The gate is the lower bound: kappa ~0.8 on 80 pairs has an interval reaching well below 0.75."""
    auditor = Scripted("a", "weights:b", flip={"v1": 9})
    overrides = {"audit.target_agreement": 0.75, "audit.prompt_versions": ["v1"]}
    result = _audit(monkeypatch, tmp_path, Scripted("p", "weights:a"), auditor, **overrides)
    confirmation = result.record["confirmation"]
    assert confirmation["cohen_kappa"] >= 0.75 > confirmation["kappa_interval"][0]
    assert not result.record["target_reached"]


def test_the_auditor_must_be_a_different_model_by_weights_not_by_name(monkeypatch, tmp_path):
    primary, auditor = Scripted("p:chars=300", "weights:same"), Scripted("a:chars=600", "weights:same")
    with pytest.raises(UserError, match=r"same model as the primary labeler \(weights:same\)"):
        _audit(monkeypatch, tmp_path, primary, auditor)
    result = _audit(monkeypatch, tmp_path, primary, auditor, **{"audit.allow_same_model": True})
    assert not result.record["auditor_independent"] and not result.record["gate_meaningful"]


def test_too_few_pairs_stop_with_the_counts(monkeypatch, tmp_path):
    with pytest.raises(AuditTooThin, match=r"on 80 pairs \(0 missing\) < audit.min_pairs=100"):
        _audit(monkeypatch, tmp_path, Scripted("p", "w:a"), Scripted("a", "w:b"), **{"audit.min_pairs": 100})


def test_missing_labels_stop_the_audit_and_are_asked_again(monkeypatch, tmp_path):
    primary = Scripted("p", "w:a", fail=1)
    with pytest.raises(LabelCoverageError, match=r"labels for 0 of 240 documents \(0\.0%\) < labeler"):
        _audit(monkeypatch, tmp_path, primary, Scripted("a", "w:b"))
    primary.asked.clear()
    _audit(monkeypatch, tmp_path, primary, Scripted("a", "w:b"))  # the endpoint recovered
    assert sorted(set(primary.asked)) == sorted(TEXTS)  # nothing was cached as a label
