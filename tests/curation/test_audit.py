import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from curation.audit import AuditRound, agreement_metrics, audit_round, run_audit_loop, stratified_subset


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    primary = rng.integers(0, 2, 200).tolist()
    auditor = [p if rng.random() < 0.8 else 1 - p for p in primary]
    m = agreement_metrics(primary, auditor)
    assert m["agreement"] == pytest.approx(np.mean(np.array(primary) == np.array(auditor)))
    assert m["cohen_kappa"] == pytest.approx(cohen_kappa_score(auditor, primary))
    assert m["confusion"] == confusion_matrix(auditor, primary, labels=[0, 1]).tolist()


def test_stratified_subset_covers_rare_strata():
    domains = ["a"] * 100 + ["b"] * 100
    labels = [1] * 95 + [0] * 5 + [0] * 100
    ids = [f"d{i}" for i in range(200)]
    chosen = stratified_subset(domains, labels, ids, per_stratum=10, seed=0)
    strata = {(domains[i], labels[i]) for i in chosen}
    assert strata == {("a", 1), ("a", 0), ("b", 0)}
    assert sum(1 for i in chosen if domains[i] == "a" and labels[i] == 0) == 5
    assert len(chosen) == 25 and chosen == stratified_subset(domains, labels, ids, 10, seed=0)


def test_round_records_disagreements_and_skips_missing():
    rnd = audit_round(
        "v1",
        ["a", "a", "b", "b"],
        ["1", "2", "3", "4"],
        ["t1", "t2", "t3", "t4"],
        [1, 0, 1, None],
        [1, 1, 1, 0],
    )
    assert rnd.overall["n"] == 3 and rnd.overall["skipped_missing_label"] == 1
    assert rnd.disagreements["a"] == [
        {"id": "2", "primary": "Not relevant", "auditor": "Relevant", "text": "t2"}
    ]
    assert rnd.per_domain["b"]["agreement"] == 1.0


def _round(version, agreement):
    return AuditRound(version, {"agreement": agreement}, {}, {})


@pytest.mark.parametrize(
    "scores, expected_rounds, chosen",
    [
        ({"v1": 0.95, "v2": 0.99}, 1, "v1"),  # target reached at once
        ({"v1": 0.70, "v2": 0.85, "v3": 0.86}, 3, "v3"),  # keeps revising while it improves
        ({"v1": 0.80, "v2": 0.805, "v3": 0.99}, 2, "v2"),  # stabilised: stops, keeps the best
        ({"v1": 0.80, "v2": 0.70}, 2, "v1"),  # a worse revision is recorded but not chosen
    ],
)
def test_audit_loop_stopping_rule(scores, expected_rounds, chosen):
    rounds, best = run_audit_loop(
        list(scores), lambda v: _round(v, scores[v]), target_agreement=0.9, min_improvement=0.01
    )
    assert len(rounds) == expected_rounds and best == chosen
    assert [r.prompt_version for r in rounds] == list(scores)[:expected_rounds]
