"""Masked-token recovery (paper Table 3): top-k accuracy on product titles and descriptions.

Example:
    >>> cfg = MLMRecoveryConfig(block_sizes=(128,), max_texts=200)
    >>> records = run_mlm(["answerdotai/ModernBERT-base", "thebajajra/RexBERT-base"], cfg)
    >>> print(reports.mlm_table(records))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from evaluation import blocks as blk
from evaluation.masking import MaskedExample, collator_mask, span_mask, word_mask
from evaluation.metrics import group_ranks, topk_accuracy
from evaluation.mlm_scoring import MaskedTokenRanker, load_mlm

logger = logging.getLogger(__name__)
PROTOCOLS = ("span", "word", "collator")


@dataclass
class MLMRecoveryConfig:
    """Args:
    protocol: ``span`` (paper protocol, same tokenizer: whole-word spans, 15% of tokens, all -> [MASK]),
        ``word`` (cross-tokenizer: 15% of whitespace words chosen from the text; a word counts if all its
        sub-tokens are recovered) or ``collator`` (DataCollatorForLanguageModeling 15%, 80/10/10).
    fields: product fields evaluated separately: ``title`` and/or ``description``.
    block_sizes: tokens per block, special tokens included (Table 3: 128/256/512).
    packing: ``block`` concatenates texts and cuts blocks (context grows with block size) or
        ``truncate`` keeps one text per block.
    mask_probability: fraction masked (paper: 15%).
    top_k: k values reported.
    seed: mask seed; the same seed gives the same masks for every model sharing a tokenizer (or text).
    max_texts: keep the first N distinct texts per field (quick runs); None = all.
    max_tokens: padded tokens per forward pass (length-bucketed batches).
    head: ``auto`` | ``labels`` | ``gather`` | ``full`` (see evaluation.mlm_scoring).
    """

    protocol: str = "span"
    fields: tuple[str, ...] = ("title", "description")
    block_sizes: tuple[int, ...] = (128, 256, 512)
    packing: str = "block"
    mask_probability: float = 0.15
    top_k: tuple[int, ...] = (1, 3, 5)
    seed: int = 0
    max_texts: int | None = None
    max_tokens: int = 16384
    head: str = "auto"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}: expected one of {PROTOCOLS}")
        if self.packing not in blk.PACKINGS:
            raise ValueError(f"packing={self.packing!r}: expected one of {blk.PACKINGS}")
        if not 0.0 < self.mask_probability < 1.0:
            raise ValueError(f"mask_probability={self.mask_probability}: expected 0 < p < 1")
        if not self.top_k or min(self.top_k) < 1:
            raise ValueError(f"top_k={self.top_k}: expected positive integers")


def build_examples(
    texts: Sequence[str],
    tokenizer,
    block_size: int,
    cfg: MLMRecoveryConfig,
    word_texts: Sequence[str] | None = None,
) -> list[MaskedExample]:
    """Masked examples of one field at one block size.

    ``word_texts`` are the shared word blocks for the ``word`` protocol (from :func:`blocks.word_blocks`
    over every compared tokenizer); built from this tokenizer alone when omitted.
    """
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no mask token")
    p = cfg.mask_probability
    if cfg.protocol == "word":
        word_texts = (
            word_texts
            if word_texts is not None
            else blk.word_blocks(texts, [tokenizer], block_size, cfg.packing)
        )
        examples = []
        for text in word_texts:
            enc = tokenizer(
                text,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
                truncation=True,
                max_length=block_size,
            )
            examples.append(
                word_mask(
                    text,
                    enc["input_ids"],
                    enc["offset_mapping"],
                    enc["special_tokens_mask"],
                    tokenizer.mask_token_id,
                    cfg.seed,
                    p,
                )
            )
        return examples
    token_blocks = blk.token_blocks(texts, tokenizer, block_size, cfg.packing)
    if cfg.protocol == "span":
        return [
            span_mask(b.input_ids, b.word_ids, tokenizer.mask_token_id, cfg.seed, p) for b in token_blocks
        ]
    return [collator_mask(b.input_ids, tokenizer, cfg.seed, p) for b in token_blocks]


def score_examples(
    examples: Sequence[MaskedExample],
    ranks: Sequence[np.ndarray],
    cfg: MLMRecoveryConfig,
    task: str,
    setting: str,
) -> list[dict]:
    """Result rows (schema rows of evaluation.reports) for one field / block size."""
    from evaluation.reports import result_row

    token_ranks = np.concatenate([r for r in ranks if len(r)]) if any(len(r) for r in ranks) else np.zeros(0)
    rows = [
        result_row(task, setting, f"top{k}_accuracy", acc, token_ranks.size)
        for k, acc in topk_accuracy(token_ranks, cfg.top_k).items()
    ]
    if cfg.protocol == "word":
        word_ranks = np.concatenate([group_ranks(r, e.groups) for r, e in zip(ranks, examples) if len(r)])
        rows += [
            result_row(task, setting, f"top{k}_word_accuracy", acc, word_ranks.size)
            for k, acc in topk_accuracy(word_ranks, cfg.top_k).items()
        ]
    return rows


def evaluate_model(
    model,
    tokenizer,
    texts_by_field: dict[str, list[str]],
    cfg: MLMRecoveryConfig,
    word_texts: dict | None = None,
    progress: bool = False,
) -> list[dict]:
    """All result rows of one model. ``word_texts[(field, block)]``: shared word blocks (word protocol)."""
    context = getattr(model.config, "max_position_embeddings", None)
    ranker = MaskedTokenRanker(
        model, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, cfg.max_tokens, cfg.head
    )
    rows = []
    for field, texts in texts_by_field.items():
        for block_size in cfg.block_sizes:
            if context is not None and block_size > context:
                logger.warning("skipping block %d: model context is %d tokens", block_size, context)
                continue
            shared = (word_texts or {}).get((field, block_size))
            examples = build_examples(texts, tokenizer, block_size, cfg, shared)
            ranks = ranker.ranks(examples, progress=progress)
            rows += score_examples(examples, ranks, cfg, f"mlm_{field}", f"block{block_size}")
    return rows


def run_mlm(
    models: Sequence[str],
    cfg: MLMRecoveryConfig,
    data: str | None = None,
    split: str | None = "test",
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Evaluate several models on the same masked positions; one schema record per model.

    Args:
        models: Hub ids or local folders of masked-LM checkpoints.
        data: ESCI parquet file/folder or Hub id (default: $REXBERT_DATA_DIR/esci_union_with_text).
        split: ESCI split whose products are used (None = all rows).
    """
    from transformers import AutoTokenizer

    from evaluation.data import load_esci, product_field_texts
    from evaluation.reports import make_record

    frame = load_esci(data, split)
    texts_by_field = {f: product_field_texts(frame, f)[: cfg.max_texts] for f in cfg.fields}
    word_texts = None
    if cfg.protocol == "word":  # blocks must fit every compared tokenizer so all models see the same words
        tokenizers = [AutoTokenizer.from_pretrained(m, trust_remote_code=trust_remote_code) for m in models]
        word_texts = {
            (f, b): blk.word_blocks(t, tokenizers, b, cfg.packing)
            for f, t in texts_by_field.items()
            for b in cfg.block_sizes
        }
    records = []
    for name in models:
        model, tokenizer = load_mlm(name, trust_remote_code, device)
        rows = evaluate_model(model, tokenizer, texts_by_field, cfg, word_texts, progress)
        params = sum(p.numel() for p in model.parameters())
        config = {**asdict(cfg), "data": frame.attrs.get("source")}
        if cfg.protocol == "word":  # the word blocks depend on every tokenizer compared in the run
            config["word_blocks_fit_tokenizers_of"] = list(models)
        records.append(make_record("mlm_recovery", name, config, rows, params))
        del model
    return records
