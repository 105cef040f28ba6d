"""Step 5, per-domain fastText distillation of the LLM labels, saved as ``<domain>.bin`` + ``<domain>.json``.

The labelled sample is split once: a held-out part used only for the reported metrics, and a training part
whose k-fold out-of-fold scores fit the calibrator (isotonic or Platt) and choose the threshold.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.config import ClassifierConfig
from curation.io_utils import atomic_write, read_json, write_json_atomic
from curation.sampling import sample_key

_TOKEN = re.compile(r"\w+|[^\w\s]")
MAX_CLASSIFIER_CHARS = 10_000  # a prefix decides commerce relevance; bounds the cost of huge pages


def fasttext_text(text: str) -> str:
    """Lower-cased, punctuation split off, one line (fastText reads one example per line)."""
    return " ".join(_TOKEN.findall(text[:MAX_CLASSIFIER_CHARS].lower()))


def _train(texts: Sequence[str], labels: Sequence[int], config: ClassifierConfig):
    import fasttext

    from curation.fasttext_train import train_in_fresh_process

    workdir = tempfile.mkdtemp(prefix="rexbert_fasttext_")
    path, model_path = os.path.join(workdir, "train.txt"), os.path.join(workdir, "model.bin")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            for text, label in zip(texts, labels):
                handle.write(f"__label__{int(label)} {fasttext_text(text)}\n")
        lr = config.lr
        for _ in range(4):
            # thread=1: fastText's Hogwild updates make multi-threaded training non-deterministic; a fresh
            # process: in-process training also depended on the process's history (see fasttext_train).
            kwargs = {
                "epoch": config.epochs,
                "lr": lr,
                "wordNgrams": config.word_ngrams,
                "dim": config.dim,
                "minCount": config.min_count,
                "bucket": config.bucket,
                "thread": 1,
                "seed": config.seed,
                "verbose": 0,
            }
            try:
                train_in_fresh_process(path, model_path, kwargs)
                return fasttext.load_model(model_path)
            except RuntimeError as error:  # "Encountered NaN": lr too high for a tiny fold; halve it
                if "NaN" not in str(error):
                    raise
                lr /= 2
        raise RuntimeError(f"fastText diverged (NaN) even at lr={lr * 2} on {len(texts)} examples")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def relevant_scores(model, texts: Sequence[str]) -> np.ndarray:
    """(N,) probability of __label__1, batched in one fastText call."""
    if not texts:
        return np.zeros(0)
    labels, probs = model.predict([fasttext_text(t) for t in texts], k=2)
    out = np.zeros(len(texts))
    for i, (labs, ps) in enumerate(zip(labels, probs)):
        for lab, p in zip(labs, ps):
            if lab == "__label__1":
                out[i] = min(1.0, max(0.0, float(p)))  # fastText can return 1.00001
    return out


def passes(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The one comparison of a score with a threshold (a score equal to it passes): the threshold chosen on
    the calibration curve, the held-out metrics and the relevance filter all apply it."""
    return np.asarray(scores) >= threshold


def prf_curve(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> list[dict[str, float]]:
    from sklearn.metrics import precision_recall_fscore_support

    rows = []
    for t in thresholds:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, passes(scores, t).astype(int), average="binary", zero_division=0
        )
        rows.append(
            {"threshold": float(round(t, 4)), "precision": float(p), "recall": float(r), "f1": float(f)}
        )
    return rows


def choose_threshold(curve: list[dict[str, float]], rule: str, target_precision: float) -> tuple[float, str]:
    """``target_precision``: the lowest threshold whose precision reaches the target (most recall at that
    precision); if none does, fall back to max F1. ``max_f1``: the threshold with the best F1
    (FineWeb-Edu)."""
    if rule == "target_precision":
        ok = [row for row in curve if row["precision"] >= target_precision and row["recall"] > 0]
        if ok:
            return min(ok, key=lambda r: r["threshold"])["threshold"], f"precision>={target_precision}"
    best = max(curve, key=lambda r: (r["f1"], -r["threshold"]))
    return best[
        "threshold"
    ], "max_f1" if rule == "max_f1" else f"max_f1 (no threshold reached {target_precision})"


class Calibrator:
    """Maps raw fastText scores to calibrated probabilities: scikit-learn's isotonic regression or Platt
    scaling (a logistic regression on the score), fitted on out-of-fold scores and saved as plain numbers."""

    def __init__(self, kind: str, params: dict[str, Any]):
        self.kind, self.params = kind, params

    @classmethod
    def fit(cls, kind: str, scores: np.ndarray, labels: np.ndarray) -> Calibrator:
        if kind == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
            return cls(kind, {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
        from sklearn.linear_model import LogisticRegression

        platt = LogisticRegression().fit(scores.reshape(-1, 1), labels)
        return cls(kind, {"a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])})

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.kind == "isotonic":  # IsotonicRegression.predict is this piecewise-linear interpolation
            return np.interp(scores, self.params["x"], self.params["y"])
        return 1.0 / (1.0 + np.exp(-(self.params["a"] * scores + self.params["b"])))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibrator | None:
        if not data:
            return None
        data = dict(data)
        return cls(data.pop("kind"), data)


@dataclass
class DomainClassifier:
    domain: str
    threshold: float
    model: Any = None  # None: single-class labels; every doc gets constant_score
    constant_score: float = 0.0
    calibrator: Calibrator | None = None

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) calibrated P(relevant); the threshold applies to these."""
        if self.model is None:
            return np.full(len(texts), self.constant_score)
        raw = relevant_scores(self.model, texts)
        return self.calibrator(raw) if self.calibrator else raw

    @classmethod
    def load(cls, folder: str | Path, domain: str) -> DomainClassifier:
        meta = read_json(Path(folder) / f"{domain}.json")
        model = None
        if meta.get("model_file"):
            import fasttext

            model = fasttext.load_model(str(Path(folder) / meta["model_file"]))
        return cls(
            domain,
            float(meta["threshold"]),
            model,
            float(meta.get("constant_score", 0.0)),
            Calibrator.from_dict(meta.get("calibrator")),
        )


def _split(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = sorted(range(len(ids)), key=lambda i: sample_key(seed + 7, ids[i]))
    n_held = max(1, int(round(len(ids) * fraction)))
    return sorted(order[n_held:]), sorted(order[:n_held])


def train_domain_classifier(
    domain: str,
    ids: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[int],
    config: ClassifierConfig,
    out_dir: str | Path,
    truth: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train, validate, calibrate and save one domain's classifier; returns its metrics record.

    truth: optional independent labels (e.g. the demo's known source class) reported next to LLM-label
    metrics.
    """
    from sklearn.metrics import precision_recall_fscore_support

    out_dir = Path(out_dir)
    y = np.asarray(labels, dtype=int)
    record: dict[str, Any] = {
        "domain": domain,
        "n_labelled": int(len(y)),
        "n_relevant": int(y.sum()),
        "threshold_rule": config.threshold_rule,
    }
    if len(set(y.tolist())) < 2 or len(y) < 2 * config.kfold:
        # Nothing to learn from: keep everything if all labels say relevant, nothing otherwise.
        constant = 1.0 if len(y) and y.all() else 0.0
        record.update(
            {
                "model_file": None,
                "threshold": 0.5,
                "constant_score": constant,
                "note": "single class or too few labels: constant decision",
            }
        )
        write_json_atomic(out_dir / f"{domain}.json", record)
        return record
    train_idx, held_idx = _split(ids, config.heldout_fraction, config.seed)
    train_texts = [texts[i] for i in train_idx]
    y_train = y[train_idx]
    # Out-of-fold scores on the training part: each document scored by a model that never saw it. The
    # calibrator and the threshold are fit on these; the held-out split is only ever used for the metrics.
    fold_of = np.array([sample_key(config.seed + 11, ids[i]) % config.kfold for i in train_idx])
    oof = np.full(len(train_idx), np.nan)
    cv_f1 = []
    for k in range(config.kfold):
        fit, val = np.where(fold_of != k)[0], np.where(fold_of == k)[0]
        if len(val) == 0 or len(set(y_train[fit].tolist())) < 2:
            continue
        model = _train([train_texts[i] for i in fit], y_train[fit], config)
        oof[val] = relevant_scores(model, [train_texts[i] for i in val])
        cv_f1.append(
            float(
                precision_recall_fscore_support(
                    y_train[val], passes(oof[val], 0.5).astype(int), average="binary", zero_division=0
                )[2]
            )
        )
    scored = ~np.isnan(oof)
    calibrator = Calibrator.fit(config.calibration, oof[scored], y_train[scored])
    oof_calibrated = calibrator(oof[scored])
    curve = prf_curve(y_train[scored], oof_calibrated, np.round(np.arange(0.05, 1.0, 0.05), 2))
    threshold, reason = choose_threshold(curve, config.threshold_rule, config.target_precision)
    model = _train(train_texts, y_train, config)
    held_texts = [texts[i] for i in held_idx]
    held_scores = calibrator(relevant_scores(model, held_texts))
    y_held = y[held_idx]
    p, r, f, _ = precision_recall_fscore_support(
        y_held, passes(held_scores, threshold).astype(int), average="binary", zero_division=0
    )
    hist, edges = np.histogram(held_scores, bins=10, range=(0.0, 1.0))
    record.update(
        {
            "model_file": f"{domain}.bin",
            "threshold": threshold,
            "threshold_reason": reason + " on out-of-fold calibrated scores",
            "n_train": len(train_idx),
            "n_heldout": len(held_idx),
            "heldout_ids": sorted(ids[i] for i in held_idx),
            "heldout": {"precision": float(p), "recall": float(r), "f1": float(f)},
            "cv_f1_mean": float(np.mean(cv_f1)) if cv_f1 else None,
            "cv_f1_sd": float(np.std(cv_f1)) if cv_f1 else None,
            "cv_folds": len(cv_f1),
            "calibrator": calibrator.as_dict(),
            "oof_curve": curve,
            "score_histogram": {"counts": hist.tolist(), "edges": edges.round(2).tolist()},
        }
    )
    if truth is not None:
        t_held = np.asarray(truth, dtype=int)[held_idx]
        tp, tr, tf, _ = precision_recall_fscore_support(
            t_held, passes(held_scores, threshold).astype(int), average="binary", zero_division=0
        )
        record["heldout_vs_truth"] = {"precision": float(tp), "recall": float(tr), "f1": float(tf)}
    atomic_write(out_dir / f"{domain}.bin", lambda tmp: model.save_model(tmp))
    write_json_atomic(out_dir / f"{domain}.json", record)  # written last: its presence marks the domain done
    return record
