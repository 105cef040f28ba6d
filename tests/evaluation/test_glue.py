import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score

from evaluation.data import DataError, glue_task
from evaluation.glue import DEFAULT_HPARAMS, GlueConfig, glue_metrics, run_glue

QUICK = {"epochs": 1, "batch_size": 16, "max_seq_length": 32}


def test_glue_metrics_against_sklearn_scipy():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 2)), rng.integers(0, 2, 50)
    assert glue_metrics(glue_task("sst2"), logits, labels)["accuracy"] == accuracy_score(
        labels, logits.argmax(1)
    )
    preds, gold = rng.normal(size=(50, 1)), rng.uniform(0, 5, 50)
    got = glue_metrics(glue_task("stsb"), preds, gold)
    assert got["pearson"] == pytest.approx(pearsonr(preds[:, 0], gold)[0])
    assert got["spearman"] == pytest.approx(spearmanr(preds[:, 0], gold)[0])


def test_sst2_stsb_seeds_mean_sd_and_determinism(data_dir, tiny_bert_dir):
    cfg = GlueConfig(
        tasks=("sst2", "stsb"), seeds=(0, 1), overrides=QUICK, max_train_examples=48, max_eval_examples=24
    )
    first = run_glue([str(tiny_bert_dir)], cfg, progress=False)[0]
    again = run_glue([str(tiny_bert_dir)], cfg, progress=False)[0]
    assert first["results"] == again["results"], "same seeds -> same numbers"
    rows = {(r["task"], r["metric"]): r for r in first["results"]}
    assert set(rows) == {("sst2", "accuracy"), ("stsb", "pearson"), ("stsb", "spearman")}
    for row in rows.values():
        assert len(row["runs"]) == 2 and row["n"] == 24
        assert row["value"] == pytest.approx(np.mean(row["runs"]))
        assert row["sd"] == pytest.approx(np.std(row["runs"], ddof=1))
    assert first["config"]["hparams"]["sst2"]["learning_rate"] == DEFAULT_HPARAMS["sst2"].learning_rate


def test_missing_offline_split_fails_before_training(data_dir, tiny_bert_dir):
    with pytest.raises(DataError, match="qnli split 'train'"):
        run_glue([str(tiny_bert_dir)], GlueConfig(tasks=("sst2", "qnli")), progress=False)


def test_rexbert_remote_code_through_glue(data_dir, tiny_rexbert_dir):
    cfg = GlueConfig(
        tasks=("sst2",), seeds=(0,), overrides=QUICK, max_train_examples=32, max_eval_examples=16
    )
    record = run_glue([str(tiny_rexbert_dir)], cfg, trust_remote_code=True, progress=False)[0]
    assert record["results"][0]["metric"] == "accuracy" and record["results"][0]["sd"] is None


def test_config_validation():
    with pytest.raises(ValueError, match="overrides"):
        GlueConfig(overrides={"lr": 1e-5})
    with pytest.raises(DataError, match="unknown GLUE task"):
        GlueConfig(tasks=("wnli",))
