import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from curation.audit import agreement_metrics, audit_round


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    primary = rng.integers(0, 2, 200).tolist()
    auditor = [p if rng.random() < 0.8 else 1 - p for p in primary]
    m = agreement_metrics(primary, auditor)
    assert m["agreement"] == pytest.approx(np.mean(np.array(primary) == np.array(auditor)))
    assert m["cohen_kappa"] == pytest.approx(cohen_kappa_score(auditor, primary))
    assert m["confusion"] == confusion_matrix(auditor, primary, labels=[0, 1]).tolist()


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
