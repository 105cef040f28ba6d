import pytest


def test_buckets_pad_less_and_both_sides_agree_on_a_random_model(data_dir):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from benchmarks._common import bert_tokenizer, esci_product_texts
    from benchmarks.bench_evaluation import baseline, ours, padding_stats

    texts = esci_product_texts()[:40]
    tokenizer = bert_tokenizer()
    naive, bucketed = padding_stats(tokenizer, texts)
    assert 1.0 <= bucketed <= 1.1 < naive, (naive, bucketed)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForMaskedLM(config).eval()
    # a random model recovers ~5/V of the targets whichever loop scores it
    assert baseline(model, tokenizer, texts) == pytest.approx(ours(model, tokenizer, texts), abs=0.02)
