import json

import numpy as np
import pandas as pd
import pytest

from evaluation.data import DataError, load_glue, load_stsb_original
from evaluation.esci_similarity import (
    SimilarityConfig,
    build_evaluator,
    load_sentence_model,
    pair_cosines,
    stsb_pairs,
)
from evaluation.metrics import ESCI_GAINS, ranking_metrics
from evaluation.mteb_tasks import (
    esci_reranking_frame,
    esci_reranking_split,
    load_esci_reranking_pairs,
    local_mteb_scores,
    run_local_mteb,
)


def _original_layout(folder, n=60):
    """A ``glue_stsb/original/sts-test.tsv`` in the STS benchmark layout, from GLUE STS-B dev rows."""
    dev = load_glue("stsb", "validation")[:n]
    rows = [
        f"g\tf\t2012\t{i:04d}\t{r.label:.3f}\t{r.sentence1}\t{r.sentence2}"
        for i, r in enumerate(dev.itertuples())
    ]
    (folder / "glue_stsb" / "original").mkdir(parents=True)
    (folder / "glue_stsb" / "original" / "sts-test.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_rexbert_runs_through_mteb_and_agrees_with_our_harness(data_dir, tiny_rexbert_dir, tmp_path):
    data = _original_layout(tmp_path / "data")
    model = load_sentence_model(
        str(tiny_rexbert_dir), SimilarityConfig(max_seq_length=64), trust_remote_code=True
    )
    scores = run_local_mteb(model, data_dir=str(data), output=str(tmp_path / "mteb"))
    assert set(scores) == {"STSBenchmark"}
    pairs = stsb_pairs(load_stsb_original("test", str(data)))
    assert len(pairs) == 60
    ours = build_evaluator(pairs, "test")(model)["test_spearman_cosine"]
    assert scores["STSBenchmark"] == pytest.approx(ours, abs=1e-4)
    assert list((tmp_path / "mteb").rglob("STSBenchmark.json")), "mteb wrote its result file"


@pytest.mark.slow
def test_minilm_through_mteb_matches_the_published_stsbenchmark_score(data_dir, tmp_path):
    model = load_sentence_model("all-MiniLM-L6-v2", SimilarityConfig())
    score = run_local_mteb(model, output=str(tmp_path / "mteb"))["STSBenchmark"]
    assert score == pytest.approx(0.8203, abs=0.005)  # model card, MTEB STSBenchmark test cos_sim_spearman


def _ours(pairs, cosines, k=10):
    """Our ranking metrics with MTEB's definition of relevant (any positive gain)."""
    gains = pairs["label"].map(ESCI_GAINS).to_numpy()
    return ranking_metrics(
        pairs["sentence1"], cosines, gains, k, relevant_min_gain=min(g for g in gains if g > 0)
    )


def _mteb_pair_scores(folder, pairs):
    """MTEB's saved score of every (query, product) pair, in ``pairs`` order."""
    predictions = json.loads(next(folder.rglob("ESCIReranking_predictions.json")).read_text())["us"]["test"]
    query_ids = {q: f"q{i}" for i, q in enumerate(dict.fromkeys(pairs["sentence1"]))}
    return np.array([predictions[query_ids[q]][d] for q, d in zip(pairs["sentence1"], pairs["doc_id"])])


def _tied(pairs, scores):
    """(N,) whether a pair's score equals another candidate's of the same query."""
    return (
        pd.Series(scores)
        .groupby(pairs["sentence1"].to_numpy())
        .transform(lambda s: s.duplicated(keep=False))
        .to_numpy()
    )


def _assert_mteb_agrees(model, tmp_path):
    """Same pairs, same embeddings, same metrics: MTEB's numbers are ours.

    MTEB scores each pair with the cosine of the same embeddings (to float noise: it batches the texts
    differently). On exactly the scores MTEB used, our metrics equal MTEB's (which rounds nDCG and MAP to
    5 decimals); on our own cosines they may differ where float noise reorders two near-tied products.
    """
    folder = tmp_path / "predictions"
    scores = local_mteb_scores(
        model, ("ESCIReranking",), output=str(tmp_path / "mteb"), prediction_folder=str(folder)
    )
    scores = scores["ESCIReranking"]
    pairs = load_esci_reranking_pairs()
    used = _mteb_pair_scores(folder, pairs)
    np.testing.assert_allclose(used, pair_cosines(model, pairs), atol=1e-5)
    # pytrec_eval orders exactly tied scores by document id, descending (products with identical text);
    # ours averages over tie orders. Breaking the ties MTEB's way makes the definitions identical:
    tie_order = pairs.groupby("sentence1")["doc_id"].rank(method="dense").to_numpy()
    ours = _ours(pairs, used + 1e-12 * tie_order * _tied(pairs, used))
    assert ours["ndcg_queries"] == ours["map_queries"] == pairs["sentence1"].nunique()
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=5e-6)
    assert scores["map_at_1000"] == pytest.approx(ours["map"], abs=5e-6)
    assert scores["mrr_at_1000"] == pytest.approx(ours["mrr"], abs=1e-12)
    return scores, pairs


def test_esci_reranking_split_keeps_rankable_queries_with_esci_relevance():
    pairs = pd.DataFrame(
        {
            "sentence1": ["a", "a", "a", "b", "c", "c"],
            "sentence2": ["shoe", "boot", "hat", "sock", "pan", "pot"],
            "label": ["E", "S", "I", "E", "I", "I"],
            "product_id": ["p1", "p2", "p3", "p4", "p5", "p1"],
        }
    )
    kept = esci_reranking_frame(pairs)
    assert kept["sentence1"].tolist() == ["a", "a", "a"], "b: one candidate; c: no positive gain"
    split = esci_reranking_split(kept)
    assert split["relevant_docs"] == {"q0": {"p1": 100, "p2": 10, "p3": 0}}
    assert split["top_ranked"] == {"q0": ["p1", "p2", "p3"]}
    assert split["queries"]["text"] == ["a"] and split["corpus"]["text"] == ["shoe", "boot", "hat"]
    # one product, two texts (title-only and described rows of a merged copy): two documents
    variants = pd.concat([kept, kept.iloc[[0]].assign(sentence1="d", sentence2="shoe\nleather", label="E")])
    variants = pd.concat([variants, kept.iloc[[2]].assign(sentence1="d")])
    split = esci_reranking_split(esci_reranking_frame(variants))
    assert split["corpus"]["id"] == ["p1#0", "p2", "p3", "p1#1"]
    assert split["relevant_docs"]["q1"] == {"p1#1": 100, "p3": 0}
    with pytest.raises(DataError, match="no query has two or more judged products"):
        esci_reranking_frame(pairs[pairs["sentence1"] != "a"])


def test_rexbert_through_mteb_esci_reranking_matches_our_ranking_metrics(
    data_dir, tiny_rexbert_dir, tmp_path
):
    model = load_sentence_model(
        str(tiny_rexbert_dir), SimilarityConfig(max_seq_length=64), trust_remote_code=True
    )
    scores, pairs = _assert_mteb_agrees(model, tmp_path)
    assert pairs["sentence1"].nunique() == 101, "offline: 101 test queries with >= 2 candidates and an E/S/C"
    assert scores["main_score"] == scores["map_at_1000"] and scores["hf_subset"] == "us"
    assert list((tmp_path / "mteb").rglob("ESCIReranking.json")), "mteb wrote its result file"


# all-MiniLM-L6-v2 (offline package, its own 256 tokens) on the 101 offline ESCI reranking queries, measured
# through MTEB 2.26 and our metrics (identical): nDCG@10 0.8390, MAP 0.8766, MRR 0.9058 (E/S/C relevant).
@pytest.mark.slow
def test_minilm_through_mteb_esci_reranking(data_dir, tmp_path):
    model = load_sentence_model("all-MiniLM-L6-v2", SimilarityConfig())
    scores, _ = _assert_mteb_agrees(model, tmp_path)
    assert (scores["ndcg_at_10"], scores["map_at_1000"], scores["mrr_at_1000"]) == pytest.approx(
        (0.8390, 0.8766, 0.9058), abs=2e-4
    )


def test_two_local_models_keep_their_own_mteb_result_folders(data_dir, tiny_rexbert_dir, tmp_path):
    """Two local folders evaluated into one output folder: MTEB files each under its own name (the path),
    not both under ``no_model_name__available`` where the second overwrites the first."""
    import shutil

    from evaluation.mteb_eval import MTEBConfig, run_mteb

    data = _original_layout(tmp_path / "data", n=20)
    models = [tmp_path / "a" / "final", tmp_path / "b" / "final"]
    for folder in models:
        shutil.copytree(tiny_rexbert_dir, folder)
    cfg = MTEBConfig(tasks=("STSBenchmark",), max_seq_length=16, data_dir=str(data))
    records = run_mteb([str(m) for m in models], cfg, trust_remote_code=True, output=str(tmp_path / "out"))
    files = sorted((tmp_path / "out").rglob("STSBenchmark.json"))
    folders = {f.parent.parent.name for f in files}
    assert len(files) == 2 and len(folders) == 2, files
    assert not any("no_model_name" in str(f) for f in files)
    for record, model in zip(records, models):
        folder = record["config"]["mteb_model_name"].replace("/", "__")
        assert folder in folders and folder.endswith("a__final" if model.parent.name == "a" else "b__final")
