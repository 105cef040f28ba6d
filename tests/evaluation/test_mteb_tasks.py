import pytest

from evaluation.data import load_stsb_original
from evaluation.esci_similarity import SimilarityConfig, build_evaluator, load_sentence_model, stsb_pairs
from evaluation.mteb_tasks import run_local_mteb


def _our_spearman(model, n):
    pairs = stsb_pairs(load_stsb_original("test"))[:n]
    return build_evaluator(pairs, "test")(model)["test_spearman_cosine"]


def test_rexbert_runs_through_mteb_and_agrees_with_our_harness(data_dir, tiny_rexbert_dir, tmp_path):
    model = load_sentence_model(
        str(tiny_rexbert_dir), SimilarityConfig(max_seq_length=64), trust_remote_code=True
    )
    scores = run_local_mteb(model, max_pairs=60, output=str(tmp_path / "mteb"))
    assert set(scores) == {"STSBenchmark"}
    assert scores["STSBenchmark"] == pytest.approx(_our_spearman(model, 60), abs=1e-4)
    assert list((tmp_path / "mteb").rglob("STSBenchmark.json")), "mteb wrote its result file"


@pytest.mark.slow
def test_minilm_through_mteb_matches_the_published_stsbenchmark_score(data_dir, tmp_path):
    model = load_sentence_model("all-MiniLM-L6-v2", SimilarityConfig())
    score = run_local_mteb(model, output=str(tmp_path / "mteb"))["STSBenchmark"]
    assert score == pytest.approx(0.8203, abs=0.005)  # model card, MTEB STSBenchmark test cos_sim_spearman
