"""A model folder whose tokenizer has more tokens than the model has ids is refused when loaded, naming
both sizes, for every evaluator (it used to fail with an IndexError inside the first forward)."""

from __future__ import annotations

import pytest

from tests.tiny_models import tiny_modernbert


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory, bert_tokenizer):
    folder = tmp_path_factory.mktemp("mismatched")
    tiny_modernbert(bert_tokenizer, vocab_size=64, pad_token_id=0, cls_token_id=1, sep_token_id=2,
                    bos_token_id=1, eos_token_id=2, mask_token_id=3).save_pretrained(folder)  # fmt: skip
    bert_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "mlm", "--max-texts", "4", "--block-sizes", "32"],
        ["eval", "esci", "--epochs", "0", "--folds", "2"],
    ],
)
def test_a_tokenizer_larger_than_the_vocabulary_is_one_line(mismatched, tmp_path, capsys, command):
    from rexbert_cli.main import main

    assert main([*command[:2], str(mismatched), *command[2:], "--output-dir", str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert (
        len(errors) == 1
        and f"{mismatched}: its tokenizer has 30522 tokens but the model only 64 ids" in errors[0]
    )
    assert not (tmp_path / "out").exists()
