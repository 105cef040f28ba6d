"""Masked-token recovery (paper Table 3): top-k accuracy on product titles and descriptions.

Example:
    >>> cfg = MLMRecoveryConfig(block_sizes=(128,), max_texts=200)
    >>> records = run_mlm(["answerdotai/ModernBERT-base", "thebajajra/RexBERT-base"], cfg)
    >>> print(reports.mlm_table(records))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from evaluation import blocks as blk
from evaluation.copy_baseline import BASELINES, CopyPredictor
from evaluation.masking import MaskedExample, collator_mask, span_mask, word_mask
from evaluation.metrics import group_topk_accuracy, topk_accuracy
from evaluation.mlm_scoring import MaskedTokenRanker, load_mlm, load_mlm_tokenizer
from rexbert_common import UserError

logger = logging.getLogger(__name__)
PROTOCOLS = ("span", "word", "collator")
MISMATCH_POLICIES = ("refuse", "word")
MIN_BLOCK = 8


class MLMConfigError(UserError, ValueError):
    """An MLM-recovery setting that cannot give a publishable number (bad value, mismatched models)."""


@dataclass
class MLMRecoveryConfig:
    """Args:
    protocol: ``span`` (paper protocol, same tokenizer: whole-word spans, 15% of tokens, all -> [MASK]),
        ``word`` (cross-tokenizer: 15% of whitespace words chosen from the text; a word counts if all its
        sub-tokens are recovered) or ``collator`` (DataCollatorForLanguageModeling 15%, 80/10/10).
    fields: product fields evaluated separately: ``title`` and/or ``description``.
    block_sizes: tokens per block, special tokens included (Table 3: 128/256/512).
    packing: ``truncate`` keeps one text per block (default: a masked word can only be read from its own
        text) or ``block`` concatenates texts and cuts blocks (context grows with block size, and so does
        what can be copied from the other texts: see the ``copy`` baseline).
    shuffle: shuffle the texts with ``seed`` before packing (ESCI files are grouped by query: in file order,
        neighbouring titles leak the masked words). False = file order, only to reproduce old numbers.
    mask_probability: fraction masked (paper: 15%).
    top_k: k values reported.
    seed: text order and masks; the same seed gives the same blocks and masks for every model sharing a
        tokenizer (or, for ``word``, the block tokenizer).
    max_texts: keep the first N distinct texts per field (quick runs); None = all.
    max_tokens: padded tokens per forward pass (length-bucketed batches).
    head: ``auto`` | ``labels`` | ``gather`` | ``full`` (see evaluation.mlm_scoring).
    block_tokenizer: ``word`` protocol: the tokenizer (Hub id / folder) whose token counts cut the blocks;
        None = the first model's. Fixed blocks make a model's score independent of the others in the run.
    tokenizer_mismatch: what ``span`` / ``collator`` do when the models' tokenizers differ (their blocks
        and masks would not be paired): ``refuse`` (error) or ``word`` (switch to the word protocol, with a
        warning and ``protocol_switched_from`` in the record).
    baselines: model-free rows scored on the same blocks and masks (``copy``: the leak floor, see
        :mod:`evaluation.copy_baseline`); empty = none.
    """

    protocol: str = "span"
    fields: tuple[str, ...] = ("title", "description")
    block_sizes: tuple[int, ...] = (128, 256, 512)
    packing: str = "truncate"
    shuffle: bool = True
    mask_probability: float = 0.15
    top_k: tuple[int, ...] = (1, 3, 5)
    seed: int = 0
    max_texts: int | None = None
    max_tokens: int = 16384
    head: str = "auto"
    block_tokenizer: str | None = None
    tokenizer_mismatch: str = "refuse"
    baselines: tuple[str, ...] = ("copy",)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise MLMConfigError(f"protocol={self.protocol!r}: expected one of {PROTOCOLS}")
        if self.packing not in blk.PACKINGS:
            raise MLMConfigError(f"packing={self.packing!r}: expected one of {blk.PACKINGS}")
        if not 0.0 < self.mask_probability < 1.0:
            raise MLMConfigError(f"mask_probability={self.mask_probability}: expected 0 < p < 1")
        if not self.top_k or min(self.top_k) < 1:
            raise MLMConfigError(f"top_k={self.top_k}: expected positive integers")
        if not self.block_sizes or min(self.block_sizes) < MIN_BLOCK:
            raise MLMConfigError(
                f"block_sizes={tuple(self.block_sizes)}: expected one or more sizes >= {MIN_BLOCK} tokens"
            )
        if not self.fields:
            raise MLMConfigError("fields: expected title and/or description")
        self.baselines = tuple(self.baselines)
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise MLMConfigError(f"baselines={list(self.baselines)}: {unknown} unknown; expected {BASELINES}")
        if self.tokenizer_mismatch not in MISMATCH_POLICIES:
            raise MLMConfigError(
                f"tokenizer_mismatch={self.tokenizer_mismatch!r}: expected one of {MISMATCH_POLICIES}"
            )

    def setting(self, block_size: int) -> str:
        """The result key of one block size: protocol, packing, length (and file order when unshuffled)."""
        order = "" if self.shuffle else "-fileorder"
        return f"{self.protocol}-{self.packing}{order}-{block_size}"


def _without_unk_words(block: blk.TokenBlock, unk_id: int | None) -> list[int]:
    """Word ids with every word that contains [UNK] made unmaskable (-1): its target cannot be recovered."""
    if unk_id is None or unk_id not in block.input_ids:
        return block.word_ids
    unknown = {w for t, w in zip(block.input_ids, block.word_ids) if t == unk_id and w >= 0}
    return [-1 if w in unknown else w for w in block.word_ids]


def _unscored_unk(example: MaskedExample, unk_id: int | None) -> MaskedExample:
    """Drop scoring units (words / positions) with an [UNK] target; the input keeps its masks."""
    if unk_id is None or unk_id not in example.targets:
        return example
    bad = {g for g, t in zip(example.groups, example.targets) if t == unk_id}
    keep = [i for i, g in enumerate(example.groups) if g not in bad]
    return MaskedExample(
        example.input_ids,
        [example.positions[i] for i in keep],
        [example.targets[i] for i in keep],
        [example.groups[i] for i in keep],
    )


def build_examples(
    texts: Sequence[str],
    tokenizer,
    block_size: int,
    cfg: MLMRecoveryConfig,
    word_texts: Sequence[str] | None = None,
) -> list[MaskedExample]:
    """Masked examples of one field at one block size (texts are put in ``cfg``'s packing order here).

    ``word_texts`` are the shared word blocks for the ``word`` protocol (from :func:`blocks.word_blocks`
    over the block tokenizer); built from this tokenizer alone when omitted. [UNK] targets are never
    scored: an [UNK] word is not masked (``span``) or not counted (``word`` / ``collator``). Token
    protocols' examples carry the index of the text of every token (``text_ids``).
    """
    if tokenizer.mask_token_id is None:
        raise MLMConfigError(f"{type(tokenizer).__name__} has no mask token")
    p, unk = cfg.mask_probability, tokenizer.unk_token_id
    if cfg.protocol == "word":
        if word_texts is None:
            word_texts = word_block_texts(texts, tokenizer, block_size, cfg)
        examples = []
        for text in word_texts:
            # no truncation: the block tokenizer fixed the words; the caller checks the model's context
            enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
            example = word_mask(
                text,
                enc["input_ids"],
                enc["offset_mapping"],
                enc["special_tokens_mask"],
                tokenizer.mask_token_id,
                cfg.seed,
                p,
            )
            examples.append(_unscored_unk(example, unk))
        return examples
    ordered = blk.packing_order(texts, tokenizer, block_size, cfg.packing, cfg.seed, cfg.shuffle)
    token_blocks = blk.token_blocks(ordered, tokenizer, block_size, cfg.packing)
    if cfg.protocol == "span":
        examples = [
            span_mask(b.input_ids, _without_unk_words(b, unk), tokenizer.mask_token_id, cfg.seed, p)
            for b in token_blocks
        ]
    else:
        examples = [
            _unscored_unk(collator_mask(b.input_ids, tokenizer, cfg.seed, p), unk) for b in token_blocks
        ]
    return [replace(e, text_ids=b.text_ids) for e, b in zip(examples, token_blocks)]


def word_block_texts(
    texts: Sequence[str], block_tokenizer, block_size: int, cfg: MLMRecoveryConfig
) -> list[str]:
    """The ``word`` protocol's blocks: the texts in the packing order every protocol uses (seeded shuffle),
    cut into whole-word blocks of ``block_tokenizer``'s tokens."""
    ordered = blk.packing_order(texts, block_tokenizer, block_size, cfg.packing, cfg.seed, cfg.shuffle)
    return blk.word_blocks(ordered, [block_tokenizer], block_size, cfg.packing)


def score_examples(
    examples: Sequence[MaskedExample],
    ranks: Sequence[np.ndarray],
    cfg: MLMRecoveryConfig,
    task: str,
    block_size: int,
    blocks_from: str | None = None,
    split: str | None = "test",
) -> list[dict]:
    """Result rows (schema rows of evaluation.reports) for one field / block size.

    Every row carries its protocol, packing, block size and text order (and, for ``word``, the block
    tokenizer) beside the ``setting`` key that combines them, so merged runs never overwrite each other.
    """
    from evaluation.data import ESCI_HUB
    from evaluation.reports import dataset_fields, result_row

    scored = [(r, e) for r, e in zip(ranks, examples) if len(r)]
    if not scored:
        raise MLMConfigError(f"{task} block {block_size}: no maskable tokens (texts empty or all [UNK])")
    token_ranks = np.concatenate([r for r, _ in scored])  # (N, 2) [above, tied]
    setting = cfg.setting(block_size)
    if cfg.protocol == "word":
        setting += f"@{blocks_from}"
    extra = {
        # ESCI's real splits are train / test: rows of every split name no split (None) for card metadata
        **dataset_fields(ESCI_HUB, "default", split),
        "protocol": cfg.protocol,
        "packing": cfg.packing,
        "block_size": block_size,
        "shuffled": cfg.shuffle,
        **({"blocks_from": blocks_from} if cfg.protocol == "word" else {}),
    }
    rows = [
        {**result_row(task, setting, f"top{k}_accuracy", acc, len(token_ranks)), **extra}
        for k, acc in topk_accuracy(token_ranks, cfg.top_k).items()
    ]
    if cfg.protocol == "word":
        # words are numbered per example: make the unit ids unique across examples
        groups = np.concatenate([np.asarray(e.groups) + i * (1 << 32) for i, (_, e) in enumerate(scored)])
        n_words = len(np.unique(groups))
        rows += [
            {**result_row(task, setting, f"top{k}_word_accuracy", acc, n_words), **extra}
            for k, acc in group_topk_accuracy(token_ranks, groups, cfg.top_k).items()
        ]
    return rows


def _context(model_or_config) -> int | None:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "max_position_embeddings", None)


def _field_examples(
    tokenizer, texts_by_field, cfg, word_texts=None, context=None, name="model", blocks_from=None
):
    """(field, block size, examples) of every field and block size, each checked against ``context``."""
    for field, texts in texts_by_field.items():
        for block_size in cfg.block_sizes:
            if context is not None and block_size > context:
                raise MLMConfigError(
                    f"{name}: block size {block_size} exceeds the model's context ({context})"
                )
            shared = (word_texts or {}).get((field, block_size))
            examples = build_examples(texts, tokenizer, block_size, cfg, shared)
            longest = max((len(e.input_ids) for e in examples), default=0)
            if context is not None and longest > context:
                raise MLMConfigError(
                    f"{name}: a {field} word block of {block_size} {blocks_from} tokens is {longest} tokens "
                    f"for this model, over its context ({context}); use smaller --block-sizes"
                )
            yield field, block_size, examples


def evaluate_model(
    model,
    tokenizer,
    texts_by_field: dict[str, list[str]],
    cfg: MLMRecoveryConfig,
    word_texts: dict | None = None,
    progress: bool = False,
    blocks_from: str | None = None,
    name: str = "model",
    split: str | None = "test",
) -> list[dict]:
    """All result rows of one model. ``word_texts[(field, block)]``: shared word blocks (word protocol)."""
    context = _context(model)
    ranker = MaskedTokenRanker(
        model, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, cfg.max_tokens, cfg.head
    )
    rows = []
    for field, block_size, examples in _field_examples(
        tokenizer, texts_by_field, cfg, word_texts, context, name, blocks_from
    ):
        ranks = ranker.ranks(examples, progress=progress)
        rows += score_examples(examples, ranks, cfg, f"mlm_{field}", block_size, blocks_from, split)
    return rows


COPY_BASELINE_NAME = "copy (baseline)"


def evaluate_copy_baseline(
    tokenizer,
    texts_by_field: dict[str, list[str]],
    cfg: MLMRecoveryConfig,
    word_texts: dict | None = None,
    blocks_from: str | None = None,
    split: str | None = "test",
) -> list[dict]:
    """The ``copy`` baseline's rows on the blocks and masks a model sharing ``tokenizer`` is scored on:
    ``top{k}_accuracy`` (every vote) and, for the token protocols, ``across_texts_top{k}_accuracy`` (votes
    from the block's other texts only: what packing adds; 0 with ``truncate``)."""
    special = tokenizer.all_special_ids
    every, across = CopyPredictor(len(tokenizer), special), CopyPredictor(len(tokenizer), special, True)
    rows = []
    for field, block_size, examples in _field_examples(tokenizer, texts_by_field, cfg, word_texts):
        task = f"mlm_{field}"
        rows += score_examples(examples, every.ranks(examples), cfg, task, block_size, blocks_from, split)
        if cfg.protocol != "word":
            scored = score_examples(examples, across.ranks(examples), cfg, task, block_size, None, split)
            rows += [{**row, "metric": f"across_texts_{row['metric']}"} for row in scored]
    return rows


def same_tokenizer(first, second, probe: Sequence[str]) -> bool:
    """Same vocabulary and the same ids for every probe text (special tokens included)."""
    if first.get_vocab() != second.get_vocab():
        return False
    return first(list(probe))["input_ids"] == second(list(probe))["input_ids"]


def check_models(
    models: Sequence[str], cfg: MLMRecoveryConfig, probe: Sequence[str], trust_remote_code: bool = False
) -> tuple[MLMRecoveryConfig, dict]:
    """Before any scoring: every block size fits every model, and paired protocols share one tokenizer.

    Returns:
        the config to run (switched to ``word`` when tokenizers differ and ``tokenizer_mismatch="word"``)
        and the tokenizers by model name.
    """
    from transformers import AutoConfig

    from evaluation.models import load_error, model_source

    tokenizers = {name: load_mlm_tokenizer(name, trust_remote_code) for name in models}
    for name in models:
        try:
            context = _context(
                AutoConfig.from_pretrained(model_source(name), trust_remote_code=trust_remote_code)
            )
        except (OSError, ValueError) as error:
            raise load_error(name, error) from error
        too_long = [b for b in cfg.block_sizes if context is not None and b > context]
        if too_long:
            raise MLMConfigError(
                f"block_sizes={tuple(cfg.block_sizes)}: {too_long} exceed the context of {name} ({context})"
            )
    if cfg.protocol == "word" or len(models) < 2:
        return cfg, tokenizers
    first = models[0]
    differing = [m for m in models[1:] if not same_tokenizer(tokenizers[first], tokenizers[m], probe)]
    if not differing:
        return cfg, tokenizers
    if cfg.tokenizer_mismatch == "refuse":
        raise MLMConfigError(
            f"protocol={cfg.protocol!r} needs one tokenizer, but {differing} tokenize differently from "
            f"{first}: their blocks and masks would not be paired; use --protocol word "
            "(or --tokenizer-mismatch word)"
        )
    logger.warning(
        "tokenizers of %s differ from %s's: switching from the %s protocol to the word protocol",
        differing,
        first,
        cfg.protocol,
    )
    return replace(cfg, protocol="word"), tokenizers


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
    from evaluation.data import load_esci, product_field_texts
    from evaluation.reports import make_record

    if not models:
        raise MLMConfigError("no model to evaluate")
    frame = load_esci(data, split)
    texts_by_field = {f: product_field_texts(frame, f)[: cfg.max_texts] for f in cfg.fields}
    probe = [t for texts in texts_by_field.values() for t in texts[:50]]
    run_cfg, tokenizers = check_models(models, cfg, probe, trust_remote_code)
    word_texts, blocks_from = None, None
    copy_tokenizer = tokenizers[models[0]]  # the copy baseline reads the first model's blocks and masks
    if run_cfg.protocol == "word":  # blocks cut by one named tokenizer, whatever else is in the run
        blocks_from = run_cfg.block_tokenizer or models[0]
        block_tok = tokenizers.get(blocks_from) or load_mlm_tokenizer(blocks_from, trust_remote_code)
        copy_tokenizer = block_tok  # ... or the word blocks' tokens
        word_texts = {
            (f, b): word_block_texts(t, block_tok, b, run_cfg)
            for f, t in texts_by_field.items()
            for b in run_cfg.block_sizes
        }
    records = []
    for name in models:
        model, tokenizer = load_mlm(name, trust_remote_code, device)
        rows = evaluate_model(
            model, tokenizer, texts_by_field, run_cfg, word_texts, progress, blocks_from, name, split
        )
        params = sum(p.numel() for p in model.parameters())
        config = {**asdict(run_cfg), "data": frame.attrs.get("source"), "split": split}
        if blocks_from is not None:
            config["block_tokenizer"] = blocks_from
        if run_cfg.protocol != cfg.protocol:
            config["protocol_switched_from"] = cfg.protocol
        records.append(make_record("mlm_recovery", name, config, rows, params))
        del model
    if "copy" in run_cfg.baselines:
        rows = evaluate_copy_baseline(copy_tokenizer, texts_by_field, run_cfg, word_texts, blocks_from, split)
        config = {**asdict(run_cfg), "data": frame.attrs.get("source"), "split": split, "baseline": "copy"}
        config["tokenizer"] = blocks_from or models[0]
        records.append(make_record("mlm_recovery", COPY_BASELINE_NAME, config, rows, 0))
    return records
