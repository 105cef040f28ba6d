"""Tiny random-weight checkpoints for tests: one place that knows how to build them."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_modernbert(tokenizer, seed: int = 0, **overrides):
    """A 2-layer, 32-wide transformers ``ModernBertForMaskedLM`` whose special ids are ``tokenizer``'s."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        mask_token_id=tokenizer.mask_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    return ModernBertForMaskedLM(ModernBertConfig(**settings))


def save_tiny_modernbert(folder: Path, tokenizer, seed: int = 0, **overrides) -> Path:
    """:func:`tiny_modernbert` saved with its tokenizer into ``folder`` (a Hub-style model folder)."""
    tiny_modernbert(tokenizer, seed, **overrides).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


_PRODUCT_WORDS = (
    "stainless steel water bottle blue cap litres wireless earbuds cotton shirt size leather wallet"
)


def tiny_bpe_tokenizer(vocab_size: int = 300):
    """A ModernBERT-style byte-level BPE ([CLS]/[SEP]/[PAD]/[MASK]/[UNK]) trained in about a second on
    product-like lines, as :func:`training.tokenizer.train_bpe_tokenizer` trains the real one."""
    from training.tokenizer import train_bpe_tokenizer

    words = _PRODUCT_WORDS.split()
    texts = [
        f"{words[i % len(words)]} {words[(3 * i) % len(words)]} model {i} size {i % 13}" for i in range(400)
    ]
    return train_bpe_tokenizer(texts, vocab_size=vocab_size)
