"""Score one cell's final model through the evaluation stage's public functions.

* masked-token recovery top-1/3/5 (``evaluation.mlm_recovery.evaluate_model``, one or more protocols) on
  held-out product titles, product descriptions and general passages, each field separately;
* entity/attribute recovery: the same ranker (``evaluation.mlm_scoring.MaskedTokenRanker``) on held-out
  products where only tokens of spans mined by ``training.attribute_miner`` (brands, sizes, model numbers,
  attribute values, product types) are masked -- what Guided MLM trains;
* ESCI similarity Spearman (``evaluation.esci_similarity.run_similarity``, CoSENT on grouped folds of the
  ESCI test split, which no cell trains on).

Every cell sees identical texts and masks (seeded per example by content), so arms are compared on the
same positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ablation.config import EvaluationConfig
from ablation.heldout import EvaluationTexts
from evaluation.masking import MaskedExample, example_rng
from training.attribute_miner import AttributeMiner, char_to_token_spans

TOP_K = (1, 3, 5)


def entity_examples(
    texts: Sequence[str], tokenizer, miner: AttributeMiner, block_size: int, share: float, seed: int
) -> list[MaskedExample]:
    """One example per text with mined spans: whole spans, in a seeded random order, are masked until
    ``share`` of the text's tokens are (at least one span); everything else stays visible."""
    examples = []
    special = set(tokenizer.all_special_ids)
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=block_size, return_offsets_mapping=True)
        ids = enc["input_ids"]
        spans = char_to_token_spans(enc["offset_mapping"], miner.mine(text))
        if not spans:
            continue
        budget = max(1, round(share * sum(t not in special for t in ids)))
        positions: list[int] = []
        for k in example_rng(seed, ids).permutation(len(spans)):
            if len(positions) >= budget:
                break
            start, end = spans[k]
            positions += [p for p in range(start, end) if ids[p] not in special]
        positions = sorted(set(positions))
        masked = list(ids)
        for p in positions:
            masked[p] = tokenizer.mask_token_id
        examples.append(MaskedExample(masked, positions, [ids[p] for p in positions], positions))
    return examples


def entity_recovery(model, tokenizer, texts, miner, cfg: EvaluationConfig) -> dict[str, float]:
    from evaluation.metrics import topk_accuracy
    from evaluation.mlm_scoring import MaskedTokenRanker

    examples = entity_examples(texts, tokenizer, miner, cfg.block_size, cfg.mask_probability, cfg.seed)
    ranker = MaskedTokenRanker(model, tokenizer.pad_token_id)
    ranks = np.concatenate([r for r in ranker.ranks(examples) if len(r)])  # (N, 2)
    scores = {f"entity_top{k}": acc for k, acc in topk_accuracy(ranks, TOP_K).items()}
    scores["entity_masked_tokens"] = int(len(ranks))
    return scores


def _mlm_config(protocol: str, fields, cfg: EvaluationConfig):
    from evaluation.mlm_recovery import MLMRecoveryConfig

    return MLMRecoveryConfig(
        protocol=protocol,
        fields=tuple(fields),
        block_sizes=(cfg.block_size,),
        mask_probability=cfg.mask_probability,
        top_k=TOP_K,
        seed=cfg.seed,
    )


def _flat_scores(rows: list[dict], protocol: str) -> dict[str, float]:
    """``<field>_<protocol>_<metric>`` (``top1``, ``across_texts_top1`` ...) and ``..._masked_tokens``."""
    scores = {}
    for row in rows:
        name = f"{row['task'].removeprefix('mlm_')}_{protocol}"  # task "mlm_<field>"
        scores[f"{name}_{row['metric'].removesuffix('_accuracy')}"] = row["value"]
        scores[f"{name}_masked_tokens"] = row["n"]
    return scores


def mlm_recovery(model, tokenizer, texts: EvaluationTexts, cfg: EvaluationConfig) -> dict[str, float]:
    """``<field>_<protocol>_top<k>`` and ``<field>_<protocol>_masked_tokens`` for every protocol."""
    from evaluation.mlm_recovery import evaluate_model

    scores = {}
    for protocol in cfg.protocols:
        mlm = _mlm_config(protocol, texts.fields, cfg)
        scores.update(_flat_scores(evaluate_model(model, tokenizer, texts.fields, mlm, split=None), protocol))
    return scores


def copy_baseline(tokenizer, texts: EvaluationTexts, cfg: EvaluationConfig) -> dict[str, float]:
    """The model-free copy predictor (``evaluation.copy_baseline``) on the cells' blocks and masks, keyed as
    :func:`mlm_recovery` (plus ``..._across_texts_top<k>``): the report's leak floor."""
    from evaluation.mlm_recovery import evaluate_copy_baseline

    scores = {}
    for protocol in cfg.protocols:
        mlm = _mlm_config(protocol, texts.fields, cfg)
        scores.update(
            _flat_scores(evaluate_copy_baseline(tokenizer, texts.fields, mlm, split=None), protocol)
        )
    return scores


def esci_spearman(model_dir: str, seed: int, cfg: EvaluationConfig, trust_remote_code: bool) -> dict:
    from evaluation.esci_similarity import SimilarityConfig, run_similarity

    esci = cfg.esci
    similarity = SimilarityConfig(
        task="esci", folds=esci.folds, seeds=(seed,), epochs=esci.epochs, max_pairs=esci.max_pairs
    )
    (record,) = run_similarity([model_dir], similarity, trust_remote_code=trust_remote_code, progress=False)
    values = {row["metric"]: row["value"] for row in record["results"]}
    return {"esci_spearman": values["spearman"]}


def score_model(
    model_dir: str,
    texts: EvaluationTexts,
    miner: AttributeMiner,
    cfg: EvaluationConfig,
    seed: int,
    trust_remote_code: bool,
) -> dict[str, float]:
    """Every metric of one final model (a flat dict)."""
    from evaluation.mlm_scoring import load_mlm

    model, tokenizer = load_mlm(model_dir, trust_remote_code)
    scores = mlm_recovery(model, tokenizer, texts, cfg)
    scores.update(entity_recovery(model, tokenizer, texts.products, miner, cfg))
    del model
    if cfg.esci is not None:
        scores.update(esci_spearman(model_dir, seed, cfg, trust_remote_code))
    return scores
