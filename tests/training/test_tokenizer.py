import pytest

from training.tokenizer import load_tokenizer, padded_vocab_size, save_tokenizer, train_bpe_tokenizer


def _wiki_lines(data_dir, n=3000):
    lines = (data_dir / "wikitext2_raw_test" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:n]


def test_trains_modernbert_style_bpe_and_roundtrips(data_dir, tmp_path):
    tok = train_bpe_tokenizer(_wiki_lines(data_dir), vocab_size=2000)
    assert len(tok) <= 2000
    for name in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
        assert tok.convert_tokens_to_ids(name) is not None
    ids = tok("Robert Boulter is an English actor")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "Robert Boulter is an English actor"
    pair = tok("a b", "c")["input_ids"]
    assert pair.count(tok.sep_token_id) == 2
    assert padded_vocab_size(tok) % 64 == 0 and 0 <= padded_vocab_size(tok) - len(tok) < 64
    save_tokenizer(tok, tmp_path / "tok")
    again = load_tokenizer(str(tmp_path / "tok"))
    assert again("Robert Boulter")["input_ids"] == tok("Robert Boulter")["input_ids"]
    assert again.mask_token == "[MASK]"


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        train_bpe_tokenizer(["", "   \n"], vocab_size=300)


def test_a_save_killed_between_two_files_never_looks_complete(data_dir, tmp_path, monkeypatch):
    """The curriculum treats a folder with tokenizer.json as a trained tokenizer: it is moved in last."""
    import os

    tok = train_bpe_tokenizer(_wiki_lines(data_dir, 300), vocab_size=300)
    moved = []
    real_replace = os.replace

    def replace(src, dst):
        if moved:  # killed after the first file
            raise KeyboardInterrupt
        moved.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_tokenizer(tok, tmp_path / "tok")
    assert moved and moved[0] != "tokenizer.json" and not (tmp_path / "tok" / "tokenizer.json").exists()
