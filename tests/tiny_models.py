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
