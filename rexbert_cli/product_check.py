"""What the demo model learned, on products it never saw.

``masked_top1``: product title + short description, truncated to ``max_length`` tokens; a ``mask_share`` of
the tokens is picked and each is masked on its own (one copy of the row per masked token), so a prediction
never depends on other masks. The paper's span protocol lives in ``rexbert eval mlm``; this single-token
score is the one the demo's acceptance figure uses. ``fill_mask``: transformers' fill-mask pipeline on
product titles with one word masked, to show what the numbers mean. ``unseen_products_report``: both for
several models, under the precision ``rexbert eval --dtype`` would pick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FILL_MASK_WORDS = ("cartridge", "notebook", "cable", "adapter", "monitor", "keyboard", "black", "battery")


@dataclass(frozen=True)
class MaskedTop1:
    accuracy: float
    masked_tokens: int
    texts: int


def product_texts(rows: list[dict]) -> list[str]:
    """Icecat-style texts: the title, then the short description when there is one."""
    texts = []
    for row in rows:
        parts = [row.get("title") or "", row.get("short_description") or ""]
        text = "\n".join(p.strip() for p in parts if p and p.strip())
        if text:
            texts.append(text)
    return texts


def _load(model_dir: str):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForMaskedLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    return tokenizer, model


def masked_rows(
    tokenizer, texts: list[str], max_length: int = 128, mask_share: float = 0.15, seed: int = 0
) -> tuple[list[tuple[list[int], int]], list[int]]:
    """(input ids with one position masked, that position) per masked token, and the original tokens."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    rows, targets = [], []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        candidates = [i for i, t in enumerate(ids) if t not in special]
        if not candidates:
            continue
        n_masked = max(1, round(mask_share * len(candidates)))
        for position in sorted(rng.choice(candidates, size=n_masked, replace=False)):
            masked = list(ids)
            masked[position] = tokenizer.mask_token_id
            rows.append((masked, int(position)))
            targets.append(ids[position])
    return rows, targets


@torch.no_grad()
def masked_top1(
    model_dir: str,
    texts: list[str],
    max_length: int = 128,
    mask_share: float = 0.15,
    seed: int = 0,
    batch_rows: int = 64,
) -> MaskedTop1:
    """Top-1 accuracy of single-token masked prediction (see the module docstring)."""
    tokenizer, model = _load(model_dir)
    return masked_top1_of(model, tokenizer, texts, max_length, mask_share, seed, batch_rows)


@torch.no_grad()
def masked_top1_of(
    model,
    tokenizer,
    texts: list[str],
    max_length: int = 128,
    mask_share: float = 0.15,
    seed: int = 0,
    batch_rows: int = 64,
) -> MaskedTop1:
    """:func:`masked_top1` of a loaded masked-LM ``model`` (in eval mode) and its tokenizer."""
    rows, targets = masked_rows(tokenizer, texts, max_length, mask_share, seed)
    correct = 0
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start : start + batch_rows]
        batch = tokenizer.pad({"input_ids": [ids for ids, _ in chunk]}, return_tensors="pt")
        logits = model(**batch).logits  # (rows, seq, vocab)
        positions = torch.tensor([p for _, p in chunk])
        predicted = logits[torch.arange(len(chunk)), positions].argmax(-1)  # (rows,)
        correct += int((predicted == torch.tensor(targets[start : start + batch_rows])).sum())
    return MaskedTop1(correct / max(len(rows), 1), len(rows), len(texts))


def fill_mask_prompts(titles: list[str], tokenizer, limit: int = 3) -> list[str]:
    """Titles with one common product word replaced by the mask token (words the tokenizer keeps whole)."""
    prompts = []
    for word in FILL_MASK_WORDS:
        if len(tokenizer.tokenize(" " + word)) != 1:
            continue
        for title in titles:
            words = title.split()
            if word in words:
                words[words.index(word)] = tokenizer.mask_token
                prompts.append(" ".join(words))
                break
        if len(prompts) == limit:
            break
    return prompts


def fill_mask(model_dir: str, prompts: list[str], top_k: int = 3) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (token, probability) answers of transformers' fill-mask pipeline for each prompt."""
    from transformers import pipeline

    tokenizer, model = _load(model_dir)
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device="cpu")
    # a bare-whitespace token would print as nothing
    return [
        [(a["token_str"].strip() or "␣", float(a["score"])) for a in fill(p, top_k=top_k)] for p in prompts
    ]


def unseen_products_report(
    models: dict[str, str],
    rows: list[dict],
    max_texts: int = 400,
    max_length: int = 128,
    mask_share: float = 0.15,
    dtype: str = "auto",
) -> dict:
    """Masked-token top-1 of each of ``models`` (name -> folder) on the held-out Icecat ``rows`` and the
    fill-mask answers on their titles (prompts cut with the last model's tokenizer), computed under the
    ``dtype`` precision (auto | bf16 | fp32, ``rexbert_common.precision``), which the protocol records."""
    from transformers import AutoTokenizer

    from rexbert_common.precision import resolve_precision

    texts = product_texts(rows)[:max_texts]
    precision = resolve_precision(dtype, "cpu")
    with precision.autocast("cpu"):
        scores = {name: masked_top1(path, texts, max_length, mask_share) for name, path in models.items()}
        tokenizer = AutoTokenizer.from_pretrained(list(models.values())[-1], trust_remote_code=True)
        prompts = fill_mask_prompts([r["title"] for r in rows], tokenizer)
        answers = {name: fill_mask(path, prompts) for name, path in models.items()}
    return {
        "protocol": {
            "max_length": max_length,
            "mask_share": mask_share,
            "one_mask_per_row": True,
            "precision": precision.as_dict(),
        },
        "scores": {name: vars(score) for name, score in scores.items()},
        "fill_mask": {"prompts": prompts, "answers": answers},
    }
