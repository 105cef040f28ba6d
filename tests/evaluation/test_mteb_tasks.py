import pytest

from evaluation.data import load_glue, load_stsb_original
from evaluation.esci_similarity import SimilarityConfig, build_evaluator, load_sentence_model, stsb_pairs
from evaluation.mteb_tasks import run_local_mteb


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
