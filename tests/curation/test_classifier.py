import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from curation.classifier import DomainClassifier, choose_threshold, prf_curve, train_domain_classifier
from curation.config import ClassifierConfig


def test_prf_curve_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    scores = np.clip(y * 0.4 + rng.random(300) * 0.6, 0, 1)
    for row in prf_curve(y, scores, np.array([0.2, 0.5, 0.8])):
        p, r, f, _ = precision_recall_fscore_support(
            y, (scores >= row["threshold"]).astype(int), average="binary", zero_division=0
        )
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f))


def test_threshold_rules():
    curve = [
        {"threshold": 0.3, "precision": 0.7, "recall": 1.0, "f1": 0.82},
        {"threshold": 0.5, "precision": 0.92, "recall": 0.8, "f1": 0.86},
        {"threshold": 0.7, "precision": 0.97, "recall": 0.5, "f1": 0.66},
    ]
    assert choose_threshold(curve, "target_precision", 0.9) == (0.5, "precision>=0.9")
    assert choose_threshold(curve, "target_precision", 0.99)[0] == 0.5  # unreachable: max-F1 fallback
    assert choose_threshold(curve, "max_f1", 0.9) == (0.5, "max_f1")


def test_train_validate_save_reload(real_texts, tmp_path):
    commerce, other = real_texts
    texts = commerce[:120] + other[:120]
    labels = [1] * 120 + [0] * 120
    ids = [f"doc{i}" for i in range(len(texts))]
    record = train_domain_classifier(
        "hobby", ids, texts, labels, ClassifierConfig(kfold=3), tmp_path, truth=labels
    )
    assert record["n_heldout"] == 48 and record["cv_folds"] == 3
    assert record["heldout"]["precision"] >= 0.9 and record["heldout"]["recall"] >= 0.8
    assert sum(record["score_histogram"]["counts"]) == 48
    clf = DomainClassifier.load(tmp_path, "hobby")
    assert clf.threshold == record["threshold"]
    again = train_domain_classifier("hobby", ids, texts, labels, ClassifierConfig(kfold=3), tmp_path / "b")
    assert again["oof_curve"] == record["oof_curve"]  # single-threaded training is reproducible
    scores = clf.scores(["HP LaserJet toner cartridge, black, 2,000 pages, model CE285A", "And God said"])
    assert scores[0] > scores[1]


def test_single_class_labels_give_a_constant_decision(tmp_path):
    record = train_domain_classifier(
        "news", ["a", "b", "c"], ["x y", "y z", "z x"], [0, 0, 0], ClassifierConfig(), tmp_path
    )
    assert record["model_file"] is None
    assert DomainClassifier.load(tmp_path, "news").scores(["anything"]).tolist() == [0.0]


def test_training_does_not_depend_on_process_history(real_texts, tmp_path):
    """Regression: fastText trained inside a busy process (pytest after the labeler ran torch) gave other
    weights for the same file/args/seed than in a fresh interpreter, so a resumed pipeline chose other
    thresholds and kept other documents. Here: the same small, noisy domain trained in this process after
    torch work and in a clean subprocess must give byte-identical models and identical records."""
    import json
    import subprocess
    import sys

    import torch

    commerce, other = real_texts
    texts = commerce[:16] + other[:16]
    labels = [1] * 12 + [0] * 4 + [0] * 12 + [1] * 4  # noisy, tiny folds: sensitive to any weight change
    ids = [f"doc{i}" for i in range(len(texts))]
    torch.manual_seed(0)
    for _ in range(3):  # leave the process in the state a labelling stage leaves it in
        torch.nn.functional.gelu(torch.randn(256, 384) @ torch.randn(384, 1536)).sum().item()
    here = train_domain_classifier("hobby", ids, texts, labels, ClassifierConfig(kfold=3), tmp_path / "here")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"ids": ids, "texts": texts, "labels": labels}))
    script = (
        "import json, sys\n"
        "from curation.classifier import train_domain_classifier\n"
        "from curation.config import ClassifierConfig\n"
        "s = json.load(open(sys.argv[1]))\n"
        "train_domain_classifier('hobby', s['ids'], s['texts'], s['labels'], ClassifierConfig(kfold=3),"
        " sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(spec), str(tmp_path / "fresh")], check=True)
    fresh = json.loads((tmp_path / "fresh" / "hobby.json").read_text())
    assert here == fresh
    assert (tmp_path / "here" / "hobby.bin").read_bytes() == (tmp_path / "fresh" / "hobby.bin").read_bytes()


@pytest.mark.parametrize("kind", ["isotonic", "platt"])
def test_calibrator_matches_scikit_learn(kind):
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    from curation.classifier import Calibrator

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    raw = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    grid = np.linspace(0, 1, 37)
    calibrated = Calibrator.from_dict(Calibrator.fit(kind, raw, y).as_dict())(grid)  # through its saved form
    if kind == "isotonic":
        expected = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, y).predict(grid)
    else:
        expected = LogisticRegression().fit(raw.reshape(-1, 1), y).predict_proba(grid.reshape(-1, 1))[:, 1]
    assert calibrated == pytest.approx(expected, abs=1e-9)


def test_threshold_and_calibration_never_see_the_heldout_split(real_texts, tmp_path, monkeypatch):
    """The threshold is chosen on a curve of out-of-fold scores of the training part; flipping every held-out
    label changes the reported metrics but neither the threshold nor the calibrator."""
    import curation.classifier

    curve_sizes = []
    original = curation.classifier.prf_curve

    def spy(y_true, scores, thresholds):
        curve_sizes.append(len(y_true))
        return original(y_true, scores, thresholds)

    monkeypatch.setattr(curation.classifier, "prf_curve", spy)
    commerce, other = real_texts
    texts = commerce[:60] + other[:60]
    labels = [1] * 60 + [0] * 60
    ids = [f"doc{i}" for i in range(len(texts))]
    config = ClassifierConfig(kfold=3, epochs=10)
    record = train_domain_classifier("hobby", ids, texts, labels, config, tmp_path / "a")
    held = set(record["heldout_ids"])
    assert len(held) == record["n_heldout"] == 24
    # the one precision/recall curve (the threshold's) covers the training part's out-of-fold scores
    assert curve_sizes == [record["n_train"]] == [96]
    flipped = [1 - y if i in held else y for i, y in zip(ids, labels)]
    other_record = train_domain_classifier("hobby", ids, texts, flipped, config, tmp_path / "b")
    assert other_record["threshold"] == record["threshold"]
    assert other_record["calibrator"] == record["calibrator"]
    assert other_record["heldout"]["f1"] < 0.3 < record["heldout"]["f1"]


def test_the_filter_applies_the_chosen_threshold_with_the_curves_comparison(tmp_path):
    """A score exactly at the threshold (isotonic calibration makes ties common) counts as positive on the
    curve the threshold was chosen on, so the relevance filter must keep it: a filter that used `>` (or a
    curve that used `>`) would disagree on exactly these documents."""
    import numpy as np
    from datatrove.data import Document

    from curation.classifier import DomainClassifier, prf_curve
    from curation.filters import RelevanceFilter

    scores = np.array([0.25, 0.5, 0.5, 0.75])
    row = prf_curve(np.array([0, 1, 0, 1]), scores, np.array([0.5]))[0]
    assert row["recall"] == 1.0 and row["precision"] == pytest.approx(2 / 3)  # both 0.5s counted positive
    step = RelevanceFilter(str(tmp_path))
    step._loaded.models["news"] = DomainClassifier("news", threshold=0.5, model=None, constant_score=0.5)
    docs = [Document(text="t", id="a", metadata={"domain": "news", "route": "filter"})]
    assert step.judge_batch(docs) == [True]
    step._loaded.models["news"].constant_score = 0.4999
    assert step.judge_batch(docs) == [(False, "below_threshold")]
