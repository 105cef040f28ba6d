import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from evaluation.data import DataError
from evaluation.esci_similarity import (
    SimilarityConfig,
    build_evaluator,
    build_loss,
    evaluate_split,
    finetune,
    load_sentence_model,
    make_splits,
    run_similarity,
)


def test_folds_are_query_grouped_and_cover_all_pairs(data_dir):
    splits = make_splits(SimilarityConfig(folds=5))
    assert len(splits) == 5
    held_out = 0
    for split in splits:
        train_q = set(split.train["group"]) | set(split.validation["group"])
        assert not train_q & set(split.test["group"]), "no query in both training and held-out data"
        assert not set(split.train["group"]) & set(split.validation["group"])
        held_out += len(split.test)
        assert len(split.train) + len(split.validation) + len(split.test) == 1281
    assert held_out == 1281
    assert set(splits[0].test["score"]) <= {0.0, 0.33, 0.66, 1.0}


def test_cosent_loss_matches_its_definition(minilm_dir):
    """Our loss object (scale 20) equals log(1 + sum_{s_i > s_j} exp(20 (cos_j - cos_i)))."""
    cfg = SimilarityConfig()
    model = load_sentence_model(str(minilm_dir), cfg)
    loss = build_loss(model, cfg)
    a = ["red shoes", "usb cable", "green tea", "frying pan"]
    b = ["running sneakers red", "hdmi adapter", "coffee beans", "cast iron skillet"]
    labels = torch.tensor([1.0, 0.33, 0.0, 0.66])
    features = [model.tokenize(a), model.tokenize(b)]
    with torch.no_grad():
        got = loss(features, labels).item()
        ea, eb = model.encode(a, convert_to_tensor=True), model.encode(b, convert_to_tensor=True)
    cos = torch.nn.functional.cosine_similarity(ea, eb).numpy()
    terms = [np.exp(20 * (cos[j] - cos[i])) for i in range(4) for j in range(4) if labels[i] > labels[j]]
    assert got == pytest.approx(np.log1p(np.sum(terms)), rel=1e-4)


def test_evaluator_spearman_matches_scipy(data_dir, minilm_dir):
    cfg = SimilarityConfig(max_seq_length=64)
    split = make_splits(SimilarityConfig(folds=5, max_pairs=300))[0]
    model = load_sentence_model(str(minilm_dir), cfg)
    scores = build_evaluator(split.test, "held")(model)
    ea = model.encode(split.test["sentence1"].tolist(), convert_to_tensor=True)
    eb = model.encode(split.test["sentence2"].tolist(), convert_to_tensor=True)
    cos = torch.nn.functional.cosine_similarity(ea, eb).numpy()
    assert scores["held_spearman_cosine"] == pytest.approx(spearmanr(cos, split.test["score"])[0], abs=1e-6)
    assert scores["held_pearson_cosine"] == pytest.approx(pearsonr(cos, split.test["score"])[0], abs=1e-6)


def test_minilm_zero_shot_esci_through_harness(data_dir):
    cfg = SimilarityConfig(folds=2, epochs=0, max_seq_length=64, max_pairs=200)
    record = run_similarity(["all-MiniLM-L6-v2"], cfg, progress=False)[0]
    rows = {r["metric"]: r for r in record["results"]}
    assert rows["spearman"]["setting"] == "zero_shot" and len(rows["spearman"]["runs"]) == 2
    assert rows["spearman"]["value"] > 0.2, "a pretrained sentence encoder ranks ESCI pairs far above chance"


def test_finetune_is_deterministic(data_dir, tiny_modernbert_dir, tmp_path):
    cfg = SimilarityConfig(
        folds=2,
        epochs=2,
        max_pairs=160,
        max_seq_length=32,
        batch_size=16,
        validation_fraction=0.3,
        learning_rate=1e-3,
    )
    split = make_splits(cfg)[0]
    first = evaluate_split(str(tiny_modernbert_dir), split, cfg, work_dir=str(tmp_path))
    second = evaluate_split(str(tiny_modernbert_dir), split, cfg, work_dir=str(tmp_path))
    assert first == second
    assert np.isfinite(first["spearman"]) and first["n"] == len(split.test)


def test_best_validation_checkpoint_is_loaded(data_dir, tiny_modernbert_dir, tmp_path):
    cfg = SimilarityConfig(
        folds=2, epochs=3, max_pairs=160, max_seq_length=32, validation_fraction=0.3, learning_rate=1e-3
    )
    split = make_splits(cfg)[0]
    model = load_sentence_model(str(tiny_modernbert_dir), cfg)
    state = finetune(model, split, cfg, str(tmp_path / "run"))
    history = [
        h["eval_validation_spearman_cosine"]
        for h in state.log_history
        if "eval_validation_spearman_cosine" in h
    ]
    assert len(history) == 3 and state.best_metric == max(history)
    final = build_evaluator(split.validation, "validation")(model)["validation_spearman_cosine"]
    assert final == pytest.approx(state.best_metric, abs=1e-6)


def test_rexbert_remote_code_through_similarity(data_dir, tiny_rexbert_dir, tmp_path):
    cfg = SimilarityConfig(folds=2, epochs=1, max_pairs=120, max_seq_length=32, validation_fraction=0.3)
    record = run_similarity(
        [str(tiny_rexbert_dir)], cfg, trust_remote_code=True, progress=False, work_dir=str(tmp_path)
    )[0]
    assert {r["metric"] for r in record["results"]} == {"spearman", "pearson"}


def test_constant_scores_are_rejected():
    import pandas as pd

    with pytest.raises(DataError, match="same score"):
        build_evaluator(
            pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [1.0, 1.0]}), "v"
        )


@pytest.mark.slow
def test_stsb_sanity_minilm_zero_shot(data_dir):
    """The harness reproduces all-MiniLM-L6-v2's known STS-B dev quality (Spearman ~0.87)."""
    record = run_similarity(["all-MiniLM-L6-v2"], SimilarityConfig(task="stsb", epochs=0), progress=False)[0]
    spearman = next(r for r in record["results"] if r["metric"] == "spearman")
    assert spearman["n"] == 1500 and 0.84 < spearman["value"] < 0.90
