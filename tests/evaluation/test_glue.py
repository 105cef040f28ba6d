import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score

from evaluation.data import DataError, glue_task
from evaluation.glue import (
    DEFAULT_HPARAMS,
    GlueConfig,
    default_hparams,
    glue_metrics,
    run_glue,
    training_arguments,
)

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


def _learnable_sst2(folder, n_train=160, n_dev=80, seed=0):
    """An SST-2-format task a tiny model can learn: the label is which of two word sets a sentence uses."""
    rng = np.random.default_rng(seed)
    positive, negative = ["good", "great", "lovely", "superb"], ["bad", "awful", "poor", "dreadful"]
    filler = ["the", "film", "was", "really", "quite", "plot", "acting", "story"]

    def rows(n):
        out = []
        for _ in range(n):
            label = int(rng.integers(0, 2))
            words = list(rng.choice(filler, 4)) + [rng.choice(positive if label else negative)]
            rng.shuffle(words)
            out.append(f"{' '.join(words)}\t{label}")
        return "sentence\tlabel\n" + "\n".join(out) + "\n"

    task = folder / "glue_sst2"
    task.mkdir()
    (task / "train.tsv").write_text(rows(n_train))
    (task / "dev.tsv").write_text(rows(n_dev))
    return folder


def test_fine_tuning_learns_a_learnable_task(tmp_path, tiny_bert_dir):
    data = _learnable_sst2(tmp_path)
    quick = {"epochs": 10, "batch_size": 8, "max_seq_length": 16, "warmup_ratio": 0.0}
    cfg = GlueConfig(tasks=("sst2",), seeds=(0,), overrides={**quick, "learning_rate": 3e-3})
    tuned = run_glue([str(tiny_bert_dir)], cfg, data_dir=str(data), progress=False)[0]["results"][0]
    frozen = GlueConfig(tasks=("sst2",), seeds=(0,), overrides={**quick, "learning_rate": 0.0})
    untrained = run_glue([str(tiny_bert_dir)], frozen, data_dir=str(data), progress=False)[0]["results"][0]
    assert tuned["value"] >= 0.9, tuned
    assert untrained["value"] <= 0.7, "without updates the random head stays near chance"
    assert (tuned["dataset_id"], tuned["dataset_config"], tuned["dataset_split"]) == (
        "nyu-mll/glue",
        "sst2",
        "validation",
    )


@pytest.mark.slow
def test_learning_rate_sweep_picks_on_train_slice(tmp_path, tiny_bert_dir):
    data = _learnable_sst2(tmp_path)
    quick = {"epochs": 10, "batch_size": 8, "max_seq_length": 16, "warmup_ratio": 0.0}
    cfg = GlueConfig(
        tasks=("sst2",), seeds=(0,), overrides=quick, sweep_learning_rates=(0.0, 3e-3), sweep_fraction=0.25
    )
    row = run_glue([str(tiny_bert_dir)], cfg, data_dir=str(data), progress=False)[0]["results"][0]
    assert row["learning_rate"] == 3e-3 and set(row["sweep"]) == {"0.0", "0.003"}
    assert row["sweep"]["0.003"] > row["sweep"]["0.0"]


def test_hparams_per_size_with_sources():
    base = default_hparams("base")
    assert all(
        hp.source.startswith("ModernBERT paper") and "arXiv:2412.13663" in hp.source for hp in base.values()
    )
    assert all("UNVERIFIED" in hp.source for hp in base.values()), "an unchecked citation says so"
    mini = default_hparams("mini")
    assert mini["sst2"].learning_rate == base["sst2"].learning_rate
    assert "size 'mini': Ettin (arXiv:2507.11412) publishes no per-task GLUE settings" in mini["sst2"].source
    assert "ettin-encoder-vs-decoder@6cbf954" in mini["sst2"].source
    assert "size 'large': ModernBERT-large" in default_hparams("large")["qqp"].source
    assert "no published settings are known" in default_hparams("xl")["qqp"].source


def test_trainer_optimiser_follows_the_task_settings(tmp_path, tiny_bert_dir):
    """lr, weight decay and ModernBERT's AdamW betas / eps reach the optimiser the Trainer builds."""
    from transformers import AutoModelForSequenceClassification, Trainer

    hp = default_hparams("base")["qnli"]
    args = training_arguments(hp, seed=0, output_dir=str(tmp_path))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    optimizer = Trainer(model=model, args=args).create_optimizer()
    assert optimizer.defaults["lr"] == hp.learning_rate == 8e-5
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    assert decayed and all(g["weight_decay"] == hp.weight_decay == 5e-6 for g in decayed)
    assert args.num_train_epochs == hp.epochs and args.per_device_train_batch_size == hp.batch_size
