import numpy as np
import pytest

from evaluation import reports
from evaluation.blocks import word_blocks
from evaluation.mlm_recovery import MLMRecoveryConfig, build_examples, run_mlm, score_examples
from evaluation.mlm_scoring import MaskedTokenRanker, load_mlm


def _rows(record):
    return {(r["task"], r["setting"], r["metric"]): r for r in record["results"]}


def test_run_mlm_real_esci_paired_and_deterministic(data_dir, tiny_bert_dir, tiny_modernbert_dir):
    cfg = MLMRecoveryConfig(block_sizes=(64, 128), max_texts=40)
    models = [str(tiny_bert_dir), str(tiny_modernbert_dir)]
    first = run_mlm(models, cfg, progress=False)
    again = run_mlm(models, cfg, progress=False)
    assert [r["results"] for r in first] == [r["results"] for r in again], "same seed -> same numbers"
    rows = [_rows(r) for r in first]
    assert set(rows[0]) == set(rows[1])
    for key in rows[0]:  # paired: the same tokenizer sees the same masked tokens in both models
        assert rows[0][key]["n"] == rows[1][key]["n"] > 0
    fields = {k[0] for k in rows[0]}
    assert fields == {"mlm_title", "mlm_description"}
    assert {k[2] for k in rows[0]} == {"top1_accuracy", "top3_accuracy", "top5_accuracy"}
    for row in rows[0].values():
        assert 0.0 <= row["value"] <= 1.0
    table = reports.mlm_table(first)
    assert "title 64" in table and "description 128" in table and str(tiny_bert_dir) in table


def test_topk_accuracy_monotone_and_matches_ranks(tiny_bert_dir, titles):
    model, tokenizer = load_mlm(str(tiny_bert_dir))
    cfg = MLMRecoveryConfig(top_k=(1, 5, 50, 1000))
    examples = build_examples(titles * 4, tokenizer, 64, cfg)
    ranks = MaskedTokenRanker(model, tokenizer.pad_token_id).ranks(examples)
    rows = {r["metric"]: r["value"] for r in score_examples(examples, ranks, cfg, "mlm_title", "block64")}
    flat = np.concatenate(ranks)
    assert rows["top1000_accuracy"] == pytest.approx((flat < 1000).mean())
    assert (
        rows["top1_accuracy"] <= rows["top5_accuracy"] <= rows["top50_accuracy"] <= rows["top1000_accuracy"]
    )


def test_word_protocol_scores_same_words_across_tokenizers(tiny_bert_dir, bpe_tokenizer, titles):
    _, bert = load_mlm(str(tiny_bert_dir))
    cfg = MLMRecoveryConfig(protocol="word", mask_probability=0.2)
    texts = titles * 3
    shared = word_blocks(texts, [bert, bpe_tokenizer], 48, "block")
    a = build_examples(texts, bert, 48, cfg, shared)
    b = build_examples(texts, bpe_tokenizer, 48, cfg, shared)
    assert [sorted(set(x.groups)) for x in a] == [sorted(set(x.groups)) for x in b]
    # A word counts only if all its sub-tokens are recovered: word ranks are the max over its tokens.
    ranks = [np.arange(len(x.positions)) for x in a]
    rows = {
        r["metric"]: r
        for r in score_examples(
            a, ranks, MLMRecoveryConfig(protocol="word", top_k=(1,)), "mlm_title", "block48"
        )
    }
    n_words = sum(len(set(x.groups)) for x in a)
    assert rows["top1_word_accuracy"]["n"] == n_words
    first_token_only = sum(1 for x in a for g in set(x.groups) if x.groups.count(g) == 1 and x.groups[0] == g)
    assert rows["top1_word_accuracy"]["value"] == pytest.approx(first_token_only / n_words)


def test_collator_protocol_runs(data_dir, tiny_modernbert_dir):
    cfg = MLMRecoveryConfig(protocol="collator", fields=("title",), block_sizes=(64,), max_texts=30)
    record = run_mlm([str(tiny_modernbert_dir)], cfg, progress=False)[0]
    assert {r["metric"] for r in record["results"]} == {"top1_accuracy", "top3_accuracy", "top5_accuracy"}


def test_rexbert_remote_code_through_mlm(data_dir, tiny_rexbert_dir):
    cfg = MLMRecoveryConfig(fields=("title",), block_sizes=(64,), max_texts=30)
    record = run_mlm([str(tiny_rexbert_dir)], cfg, trust_remote_code=True, progress=False)[0]
    assert record["model"]["num_parameters"] > 0 and len(record["results"]) == 3


def test_config_validation():
    with pytest.raises(ValueError, match="protocol"):
        MLMRecoveryConfig(protocol="bert")
    with pytest.raises(ValueError, match="mask_probability"):
        MLMRecoveryConfig(mask_probability=1.5)
