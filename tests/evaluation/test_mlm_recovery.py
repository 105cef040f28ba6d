from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evaluation import reports
from evaluation.blocks import neighbour_copy_rate, ordered_texts, packing_order, token_blocks, word_blocks
from evaluation.mlm_recovery import (
    COPY_BASELINE_NAME,
    MLMConfigError,
    MLMRecoveryConfig,
    build_examples,
    check_models,
    run_mlm,
    score_examples,
)
from evaluation.mlm_scoring import MaskedTokenRanker, load_mlm


def _rows(record):
    return {(r["task"], r["setting"], r["metric"]): r for r in record["results"]}


def test_run_mlm_real_esci_paired_and_deterministic(data_dir, tiny_bert_dir, tiny_modernbert_dir):
    cfg = MLMRecoveryConfig(block_sizes=(64, 128), max_texts=40)
    models = [str(tiny_bert_dir), str(tiny_modernbert_dir)]
    first = run_mlm(models, cfg, progress=False)
    again = run_mlm(models, cfg, progress=False)
    assert [r["results"] for r in first] == [r["results"] for r in again], "same seed -> same numbers"
    assert [r["model"]["name"] for r in first] == [*models, COPY_BASELINE_NAME]
    rows = [_rows(r) for r in first]
    assert set(rows[0]) == set(rows[1])
    for key in rows[0]:  # paired: the same tokenizer sees the same masked tokens in both models
        assert rows[0][key]["n"] == rows[1][key]["n"] == rows[2][key]["n"] > 0  # and the copy baseline
    fields = {k[0] for k in rows[0]}
    assert fields == {"mlm_title", "mlm_description"}
    assert {k[2] for k in rows[0]} == {"top1_accuracy", "top3_accuracy", "top5_accuracy"}
    for row in rows[0].values():
        assert 0.0 <= row["value"] <= 1.0
    table = reports.mlm_table(first)
    assert "title span-truncate-64" in table and "description span-truncate-128" in table
    assert str(tiny_bert_dir) in table and f"| {COPY_BASELINE_NAME} | top1_accuracy |" in table
    row = rows[0][("mlm_title", "span-truncate-64", "top1_accuracy")]
    assert (row["protocol"], row["packing"], row["block_size"], row["shuffled"]) == (
        "span",
        "truncate",
        64,
        True,
    )
    assert rows[2][("mlm_title", "span-truncate-64", "across_texts_top1_accuracy")]["value"] == 0.0


def test_topk_accuracy_monotone_and_matches_ranks(tiny_bert_dir, titles):
    model, tokenizer = load_mlm(str(tiny_bert_dir))
    cfg = MLMRecoveryConfig(top_k=(1, 5, 50, 1000))
    examples = build_examples(titles * 4, tokenizer, 64, cfg)
    ranks = MaskedTokenRanker(model, tokenizer.pad_token_id).ranks(examples)
    rows = {r["metric"]: r["value"] for r in score_examples(examples, ranks, cfg, "mlm_title", 64)}
    flat = np.concatenate(ranks)
    assert (flat[:, 1] == 0).all(), "random fp32 logits: no ties"
    assert rows["top1000_accuracy"] == pytest.approx((flat[:, 0] < 1000).mean())
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
    ranks = [np.stack([np.arange(len(x.positions)), np.zeros(len(x.positions), int)], 1) for x in a]
    rows = {
        r["metric"]: r
        for r in score_examples(
            a, ranks, MLMRecoveryConfig(protocol="word", top_k=(1,)), "mlm_title", 48, "b"
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
    with pytest.raises(MLMConfigError, match=r"block_sizes=\(\)"):
        MLMRecoveryConfig(block_sizes=())


# ------------------------------------------------------------------- scores of models with known outputs
class StubMLM(torch.nn.Module):
    """Logits = the same vector at every position: ``scores[v]`` for vocabulary entry v."""

    base_model_prefix = "none"  # no known head attribute: the ranker runs the full forward

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = torch.nn.Parameter(scores.float(), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=512)

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(logits=self.scores.expand(*input_ids.shape, -1))  # (B, S, V)


def _stub_scores(scores, tokenizer, titles, cfg):
    examples = build_examples(titles * 5, tokenizer, 64, cfg)
    ranks = MaskedTokenRanker(StubMLM(scores), tokenizer.pad_token_id, max_tokens=512).ranks(examples)
    rows = score_examples(examples, ranks, cfg, "mlm_title", 64)
    targets = np.concatenate([e.targets for e in examples]).astype(int)
    return {r["metric"]: r["value"] for r in rows}, targets


@pytest.mark.parametrize("protocol", ["span", "collator"])
def test_stub_with_known_ranks_gives_exact_topk(bert_tokenizer, titles, protocol):
    vocab = len(bert_tokenizer)
    cfg = MLMRecoveryConfig(protocol=protocol, top_k=(1, 3, 5, 2000))
    # the masked targets do not depend on the model: rank the distinct ones first (in a seeded order), so
    # every k cuts through targets and an off-by-one rank changes the scores
    targets = np.concatenate([e.targets for e in build_examples(titles * 5, bert_tokenizer, 64, cfg)]).astype(
        int
    )
    distinct = torch.as_tensor(np.unique(targets))
    first = distinct[torch.randperm(len(distinct), generator=torch.Generator().manual_seed(0))]
    rest = torch.as_tensor(np.setdiff1d(np.arange(vocab), distinct.numpy()))
    order = torch.cat([first, rest])  # order[r] = id at rank r
    scores = torch.empty(vocab)
    scores[order] = -torch.arange(vocab, dtype=torch.float)
    got, targets = _stub_scores(scores, bert_tokenizer, titles, cfg)
    rank_of = torch.empty(vocab, dtype=torch.long)
    rank_of[order] = torch.arange(vocab)
    rank = rank_of[torch.as_tensor(targets)].numpy()
    for k in cfg.top_k:
        assert got[f"top{k}_accuracy"] == (rank < k).mean()
    assert 0 < got["top1_accuracy"] < got["top5_accuracy"] < got["top2000_accuracy"] == 1.0


def test_constant_logits_score_k_over_vocab_and_nan_scores_zero(bert_tokenizer, titles):
    vocab = len(bert_tokenizer)
    cfg = MLMRecoveryConfig(top_k=(1, 5))
    got, _ = _stub_scores(torch.zeros(vocab), bert_tokenizer, titles, cfg)
    assert got == {"top1_accuracy": pytest.approx(1 / vocab), "top5_accuracy": pytest.approx(5 / vocab)}
    nan = torch.zeros(vocab)
    nan[7] = float("nan")
    got, _ = _stub_scores(nan, bert_tokenizer, titles, cfg)
    assert got == {"top1_accuracy": 0.0, "top5_accuracy": 0.0}


@pytest.mark.parametrize("protocol", ["span", "collator", "word"])
def test_unknown_token_targets_are_not_scored(bert_tokenizer, titles, protocol):
    texts = [f"{t} ☃☃ ✪ ⚘" for t in titles] * 3
    unk = bert_tokenizer.unk_token_id
    assert unk in bert_tokenizer(texts[0])["input_ids"], "the test needs [UNK] tokens"
    examples = build_examples(
        texts, bert_tokenizer, 48, MLMRecoveryConfig(protocol=protocol, mask_probability=0.5)
    )
    targets = [t for e in examples for t in e.targets]
    assert targets and unk not in targets


# --------------------------------------------------------------------------- packing order and the leak
def test_neighbour_copy_rate_by_hand():
    # text0 {a,b} shares a with text1; text1 {a,c} shares a; text2 {d} shares nothing (window 1)
    assert neighbour_copy_rate(["a b", "A c", "d"], window=1) == pytest.approx(2 / 5)


@pytest.mark.parametrize("packing", ["truncate", "block"])
def test_default_blocks_are_packed_in_shuffled_order(bert_tokenizer, titles, packing):
    texts = [f"{t} variant {i}" for i, t in enumerate(titles * 4)]
    cfg = MLMRecoveryConfig(packing=packing)
    shuffled = ordered_texts(texts, cfg.seed)
    assert shuffled != texts and sorted(shuffled) == sorted(texts)
    examples = build_examples(texts, bert_tokenizer, 64, cfg)
    blocks = token_blocks(
        packing_order(texts, bert_tokenizer, 64, packing, cfg.seed), bert_tokenizer, 64, packing
    )
    if packing == "truncate":
        assert [b.input_ids for b in blocks] == [
            b.input_ids for b in token_blocks(shuffled, bert_tokenizer, 64)
        ]
    assert [len(e.input_ids) for e in examples] == [len(b.input_ids) for b in blocks]
    unmasked = [
        np.where(np.isin(np.arange(len(b.input_ids)), e.positions), -1, b.input_ids)
        for e, b in zip(examples, blocks)
    ]
    assert all((u == np.where(u == -1, -1, e.input_ids)).all() for u, e in zip(unmasked, examples))


def test_shuffling_cuts_the_neighbour_copy_rate_of_esci_titles(data_dir):
    from evaluation.data import load_esci, product_field_texts

    titles = product_field_texts(load_esci(None, "test"), "title")
    assert len(titles) >= 100
    cfg = MLMRecoveryConfig()
    file_order = neighbour_copy_rate(ordered_texts(titles, cfg.seed, shuffle=False))
    default = neighbour_copy_rate(ordered_texts(titles, cfg.seed, cfg.shuffle))
    assert file_order > 1.4 * default, (file_order, default)


# ----------------------------------------------------------------------------- models that can't be paired
@pytest.fixture(scope="module")
def tiny_bpe_dir(tmp_path_factory, bpe_tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    t = bpe_tokenizer
    config = BertConfig(
        vocab_size=len(t),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        pad_token_id=t.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny_bpe")
    BertForMaskedLM(config).save_pretrained(path)
    t.save_pretrained(path)
    return path


def test_differing_tokenizers_are_refused_or_switched_to_word(tiny_bert_dir, tiny_bpe_dir, titles, caplog):
    models = [str(tiny_bert_dir), str(tiny_bpe_dir)]
    with pytest.raises(MLMConfigError, match="tokenize differently.*--protocol word"):
        check_models(models, MLMRecoveryConfig(block_sizes=(64,)), titles)
    cfg, _ = check_models(models, MLMRecoveryConfig(block_sizes=(64,), tokenizer_mismatch="word"), titles)
    assert cfg.protocol == "word" and "switching" in caplog.text
    same, _ = check_models(
        [str(tiny_bert_dir), str(tiny_bert_dir)], MLMRecoveryConfig(block_sizes=(64,)), titles
    )
    assert same.protocol == "span"


def test_block_larger_than_a_models_context_is_refused(tiny_bert_dir, tiny_bpe_dir, titles):
    models = [str(tiny_bpe_dir), str(tiny_bert_dir)]
    with pytest.raises(MLMConfigError, match=r"\[1024\] exceed the context of .*tiny_bpe.* \(512\)"):
        check_models(models, MLMRecoveryConfig(protocol="word", block_sizes=(64, 1024)), titles)


def test_word_blocks_do_not_depend_on_the_other_models(
    data_dir, tiny_bert_dir, tiny_bpe_dir, tiny_modernbert_dir
):
    cfg = MLMRecoveryConfig(protocol="word", fields=("title",), block_sizes=(64,), max_texts=40)
    alone = run_mlm([str(tiny_bert_dir)], cfg, progress=False)[0]
    paired = run_mlm([str(tiny_bert_dir), str(tiny_bpe_dir)], cfg, progress=False)[0]
    assert alone["results"] == paired["results"]
    assert alone["results"][0]["blocks_from"] == str(tiny_bert_dir)


def test_rows_name_a_real_esci_split_or_none(data_dir, tiny_bert_dir):
    cfg = MLMRecoveryConfig(fields=("title",), block_sizes=(32,), max_texts=8, top_k=(1,))
    (test_row,) = run_mlm([str(tiny_bert_dir)], cfg, split="test", progress=False)[0]["results"]
    assert (test_row["dataset_id"], test_row["dataset_config"], test_row["dataset_split"]) == (
        "tasksource/esci",
        "default",
        "test",
    )
    (all_rows,) = run_mlm([str(tiny_bert_dir)], cfg, split=None, progress=False)[0]["results"]
    assert all_rows["dataset_id"] == "tasksource/esci" and "dataset_split" not in all_rows, (
        "ESCI has no 'all'"
    )


def test_word_protocol_packs_its_texts_in_the_shuffled_order_like_the_others(
    data_dir, tiny_bert_dir, monkeypatch
):
    """run_mlm's cross-tokenizer path cuts its word blocks from the seeded shuffle every protocol uses,
    not from file order (where a title's neighbours are near-copies of it)."""
    from evaluation import blocks
    from evaluation.data import load_esci, product_field_texts
    from evaluation.mlm_scoring import load_mlm_tokenizer

    packed = []
    original = blocks.word_blocks
    monkeypatch.setattr(
        blocks, "word_blocks", lambda texts, *a, **k: packed.append(list(texts)) or original(texts, *a, **k)
    )
    cfg = MLMRecoveryConfig(protocol="word", fields=("title",), block_sizes=(64,), max_texts=60, baselines=())
    (record,) = run_mlm([str(tiny_bert_dir)], cfg, progress=False)
    file_order = product_field_texts(load_esci(None, "test"), "title")[:60]
    tokenizer = load_mlm_tokenizer(str(tiny_bert_dir))
    assert packed[0] == packing_order(file_order, tokenizer, 64, cfg.packing, cfg.seed)
    assert packed[0] != file_order and sorted(packed[0]) == sorted(file_order)
    assert record["results"][0]["shuffled"] is True
