"""Tokenizers for RexBERT: load any Hugging Face tokenizer, or train a ModernBERT-style byte-level BPE.

ModernBERT uses an OLMo-derived byte-level BPE (50,368 ids) with BERT-style special tokens and a
``[CLS] A [SEP]`` post-processor. :func:`train_bpe_tokenizer` builds the same kind of tokenizer on a
user corpus with HF ``tokenizers``; :func:`padded_vocab_size` gives the model's (padded) vocabulary.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

# ModernBERT's special tokens (the model config needs the ids of cls/sep/pad/mask).
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}


def load_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerFast:
    """Load any tokenizer (Hub id or local folder) and check it has the tokens MLM needs.

    Raises:
        UserError: naming the tokenizer when it cannot be loaded (no such folder, a Hub id offline).
        ValueError: naming the missing special token(s).
    """
    from rexbert_common.errors import UserError

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        reason = " ".join(str(error).split())
        raise UserError(f"tokenizer {name_or_path!r} cannot be loaded: {reason}") from None
    missing = [
        name
        for name in ("mask_token", "pad_token", "cls_token", "sep_token")
        if getattr(tokenizer, name) is None
    ]
    if missing:
        raise ValueError(f"tokenizer {name_or_path!r} lacks {missing}: MLM pre-training needs all four")
    return tokenizer


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 32_768,
    min_frequency: int = 2,
    model_max_length: int = 8192,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a ModernBERT-style byte-level BPE on ``texts``.

    Args:
        texts: the corpus (an iterable of documents; consumed once).
        vocab_size: target size *including* the 5 special tokens (ModernBERT: 50,368).
        min_frequency: minimum pair count for a merge.
        model_max_length: stored in the tokenizer config (the longest context it will be used with).

    Returns:
        A fast tokenizer wrapping text as ``[CLS] text [SEP]`` (pairs: ``[CLS] A [SEP] B [SEP]``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = list(SPECIAL_TOKENS.values())
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    # Byte-level: every string is representable, so [UNK] is never produced in practice.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    n_docs = 0

    def _counted(stream: Iterable[str]):
        nonlocal n_docs
        for text in stream:
            if text and not text.isspace():
                n_docs += 1
                yield text

    bpe.train_from_iterator(_counted(texts), trainer=trainer)
    if n_docs == 0:
        raise ValueError("cannot train a tokenizer on an empty corpus (no non-whitespace document)")
    cls_id, sep_id = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, model_max_length=model_max_length, **SPECIAL_TOKENS)


def padded_vocab_size(tokenizer: PreTrainedTokenizerFast, multiple: int = 64) -> int:
    """The model's vocabulary: ``len(tokenizer)`` rounded up to ``multiple`` (50,368 = 787·64)."""
    return -(-len(tokenizer) // multiple) * multiple


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The model-config special ids a RexBERT / ModernBERT config takes from its tokenizer ([CLS] / [SEP]
    double as BOS / EOS, as in ModernBERT)."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "mask_token_id": tokenizer.mask_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike) -> None:
    """Save atomically: write into a temporary folder, then move the files into place, ``tokenizer.json``
    last -- its presence is what marks the folder complete (a run killed between two moves retrains)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tokenizer.save_pretrained(tmp)
        for name in sorted(os.listdir(tmp), key=lambda name: name == "tokenizer.json"):
            os.replace(os.path.join(tmp, name), directory / name)


def save_for_model(
    tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike, model_max_length: int
) -> None:
    """Save the tokenizer that ships with a model: ``model_max_length`` is the model's context (so
    ``truncation=True`` yields inputs the model accepts), no load-time options are written, and the files
    load in transformers 4.x as in 5.x (:func:`modeling_rexbert.conversion.save_portable_tokenizer`)."""
    from modeling_rexbert.conversion import save_portable_tokenizer

    save_portable_tokenizer(tokenizer, directory, model_max_length=model_max_length)
