import pytest

from evaluation.blocks import token_blocks, word_blocks


def test_token_blocks_block_packing(bert_tokenizer, titles):
    texts = titles * 10
    blocks = token_blocks(texts, bert_tokenizer, 32, "block")
    content = sum(len(bert_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert all(len(b.input_ids) <= 32 for b in blocks)
    assert all(
        b.input_ids[0] == bert_tokenizer.cls_token_id and b.input_ids[-1] == bert_tokenizer.sep_token_id
        for b in blocks
    )
    kept = sum(w >= 0 for b in blocks for w in b.word_ids)
    assert kept == content, "every text token lands in exactly one block"
    assert all(len(b.input_ids) == len(b.word_ids) for b in blocks)


def test_token_blocks_truncate(bert_tokenizer, titles):
    blocks = token_blocks(titles, bert_tokenizer, 12, "truncate")
    assert len(blocks) == len(titles)
    for block, text in zip(blocks, titles):
        expected = bert_tokenizer(text, truncation=True, max_length=12)["input_ids"]
        assert block.input_ids == expected


def test_word_blocks_fit_every_tokenizer(bert_tokenizer, bpe_tokenizer, titles):
    texts = titles * 6
    for packing in ("block", "truncate"):
        blocks = word_blocks(texts, [bert_tokenizer, bpe_tokenizer], 40, packing)
        assert blocks
        for text in blocks:
            for tok in (bert_tokenizer, bpe_tokenizer):
                assert len(tok(text)["input_ids"]) <= 40
        words = {w for t in texts for w in t.split()}
        assert all(w in words for b in blocks for w in b.split()), "blocks are made of whole words"
    assert len(word_blocks(texts, [bert_tokenizer], 40, "truncate")) == len(texts)


def test_bad_packing(bert_tokenizer):
    with pytest.raises(ValueError, match="packing"):
        token_blocks(["a"], bert_tokenizer, 8, "pack")
