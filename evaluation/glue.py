"""GLUE (paper Table 4): fine-tune ``AutoModelForSequenceClassification`` with ``Trainer``, several seeds.

Accuracy for SST-2 / QNLI / QQP / MNLI (matched dev), Pearson and Spearman for STS-B (regression head),
reported on the dev split as mean ± sample sd over seeds; the model is the one at the end of training
(no checkpoint selection on dev, which would leak the reported split).

Offline here: SST-2 (train/dev), STS-B (train/dev) and QNLI (dev only) -- QNLI, QQP and MNLI need the
Hub (``--hub``, ``nyu-mll/glue``); a missing split fails before any training starts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from evaluation.data import GLUE_HUB, DataError, GlueTask, glue_task, load_glue
from evaluation.models import check_tokenizer_fits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueHParams:
    """Per-task fine-tuning settings.

    Args:
        learning_rate / weight_decay / epochs: AdamW + linear decay settings (the cited numbers).
        batch_size: per-device train batch size.
        max_seq_length: tokens per (pair of) sentence(s), longer inputs are truncated.
        warmup_ratio: share of steps with linear warm-up.
        adam_betas / adam_epsilon: AdamW's, as in ModernBERT's released GLUE example
            (github.com/AnswerDotAI/ModernBERT@8c57a0f, examples/finetune_modernbert_on_glue.ipynb:
            ``betas = (0.9, 0.98)``, ``eps = 1e-6``) instead of transformers' (0.9, 0.999) / 1e-8.
        source: where learning rate, weight decay and epochs come from (kept in the results record);
            batch size 32 is also the released GLUE example's (``train_bsz``); length and warm-up are this
            package's defaults, not taken from a source.
    """

    learning_rate: float
    weight_decay: float
    epochs: float
    batch_size: int = 32
    max_seq_length: int = 128
    warmup_ratio: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_epsilon: float = 1e-6
    source: str = ""


_MODERNBERT_BASE = (
    "ModernBERT paper (Warner et al. 2024, arXiv:2412.13663), appendix table of GLUE fine-tuning "
    "hyper-parameters, ModernBERT-base; UNVERIFIED here: the appendix could not be read from any stored "
    "source, and the released code (github.com/AnswerDotAI/ModernBERT@8c57a0f, src/evals/glue_jobs.py) only "
    "holds Mosaic-BERT defaults that its sweeps override"
)
# Sizes without any published per-task setting, and where we looked.
_NO_SOURCE = {
    "micro": "Ettin (arXiv:2507.11412) publishes no per-task GLUE settings for its 17M encoder "
    "(github.com/JHU-CLSP/ettin-encoder-vs-decoder@6cbf954, glue_evaluation/README.md: example 'TODO')",
    "mini": "Ettin (arXiv:2507.11412) publishes no per-task GLUE settings for its 68M encoder "
    "(github.com/JHU-CLSP/ettin-encoder-vs-decoder@6cbf954, glue_evaluation/README.md: example 'TODO')",
    "large": "ModernBERT-large's appendix settings could not be read here (see the base source)",
}
# The grid ModernBERT's GLUE sweeps drew from (github.com/AnswerDotAI/ModernBERT, branch said/sweep,
# create_sweep.py: learning_rate values; max_duration 1-3 epochs; weight_decay 1e-6..1e-5).
MODERNBERT_SWEEP_LEARNING_RATES = (1e-5, 3e-5, 5e-5, 8e-5)
# Per size, per task. Only sizes with a source are listed; other sizes fall back to "base" with the
# fallback and the reason written into ``source`` (see :func:`default_hparams`). The RexBERT paper (§6)
# only says "standard fine-tuning protocols for each task".
HPARAMS_BY_SIZE = {
    "base": {
        "sst2": GlueHParams(8e-5, 1e-5, 2, source=_MODERNBERT_BASE),
        "qnli": GlueHParams(8e-5, 5e-6, 2, max_seq_length=256, source=_MODERNBERT_BASE),
        "qqp": GlueHParams(5e-5, 5e-6, 10, source=_MODERNBERT_BASE),
        "mnli": GlueHParams(5e-5, 5e-6, 1, source=_MODERNBERT_BASE),
        "stsb": GlueHParams(8e-5, 5e-6, 10, source=_MODERNBERT_BASE),
    },
}
DEFAULT_HPARAMS = HPARAMS_BY_SIZE["base"]


def default_hparams(size: str) -> dict[str, GlueHParams]:
    """The per-task settings of one model size; sizes without a source reuse ``base`` and say why."""
    if size in HPARAMS_BY_SIZE:
        return dict(HPARAMS_BY_SIZE[size])
    reason = _NO_SOURCE.get(size, "no published settings are known for this size")
    logger.warning("no published GLUE settings for size %r: using the base settings (%s)", size, reason)
    return {
        task: replace(hp, source=f"size {size!r}: {reason}; base settings reused ({hp.source})")
        for task, hp in HPARAMS_BY_SIZE["base"].items()
    }


@dataclass
class GlueConfig:
    """Args:
    tasks: any subset of sst2, qnli, qqp, mnli, stsb.
    seeds: one fine-tuning run per seed; mean ± sd reported.
    size: model size whose per-task settings are used (``HPARAMS_BY_SIZE``; others fall back to base).
    hparams: per-task settings (default: ``default_hparams(size)``); ``overrides`` replaces fields for every
        task, e.g. ``{"epochs": 1, "learning_rate": 3e-5}``.
    sweep_learning_rates: optional small sweep: each learning rate is fine-tuned once (first seed) on the
        training split minus a ``sweep_fraction`` slice and scored on that slice -- never on the reported
        split -- and the best one is used for every seed.
    max_train_examples / max_eval_examples: first N rows (quick runs); None = all.
    eval_split: the split reported (GLUE test labels are hidden, so ``validation``).
    """

    tasks: tuple[str, ...] = ("sst2", "qnli", "qqp", "mnli", "stsb")
    seeds: tuple[int, ...] = (0, 1, 2)
    size: str = "base"
    hparams: dict[str, GlueHParams] | None = None
    overrides: dict = field(default_factory=dict)
    sweep_learning_rates: tuple[float, ...] = ()
    sweep_fraction: float = 0.1
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    eval_split: str = "validation"

    def __post_init__(self) -> None:
        self.tasks = tuple(glue_task(t).name for t in self.tasks)
        if self.hparams is None:
            self.hparams = default_hparams(self.size)
        if not self.seeds:
            raise DataError("seeds: at least one seed is needed")
        known = set(GlueHParams.__dataclass_fields__)
        unknown = set(self.overrides) - known
        if unknown:
            raise DataError(
                f"overrides: unknown field(s) {sorted(unknown)}; expected some of {sorted(known)}"
            )
        if any(lr < 0 for lr in self.sweep_learning_rates):
            raise DataError(f"sweep_learning_rates={self.sweep_learning_rates}: expected values >= 0")
        if not 0.0 < self.sweep_fraction < 1.0:
            raise DataError(f"sweep_fraction={self.sweep_fraction}: expected 0 < f < 1")

    def task_hparams(self, task: str) -> GlueHParams:
        return replace(self.hparams[task], **self.overrides)


def eval_split_name(task: GlueTask, cfg: GlueConfig) -> str:
    """The nyu-mll/glue split reported (MNLI's validation is ``validation_matched``)."""
    return "validation_matched" if task.name == "mnli" and cfg.eval_split == "validation" else cfg.eval_split


def glue_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (classification) or Pearson + Spearman (STS-B) via sklearn / scipy."""
    from evaluation.metrics import accuracy, correlations

    if task.num_labels == 1:
        return correlations(np.asarray(predictions).reshape(-1), labels)
    return {"accuracy": accuracy(np.asarray(predictions).argmax(-1), labels)}


def _encode(frame, task: GlueTask, tokenizer, max_length: int):
    from datasets import Dataset

    columns = [frame[c].astype(str).tolist() for c in task.text_columns]
    encoded = tokenizer(*columns, truncation=True, max_length=max_length)
    encoded["labels"] = frame["label"].astype(float if task.num_labels == 1 else int).tolist()
    return Dataset.from_dict(dict(encoded))


def training_arguments(
    hp: GlueHParams, seed: int, output_dir: str, device: str = "cpu", progress: bool = False
):
    """``TrainingArguments`` of one fine-tuning run: ``hp``'s optimiser and schedule, no checkpoints."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=max(hp.batch_size, 64),
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        adam_beta1=hp.adam_betas[0],
        adam_beta2=hp.adam_betas[1],
        adam_epsilon=hp.adam_epsilon,
        warmup_steps=float(hp.warmup_ratio),
        lr_scheduler_type="linear",
        eval_strategy="no",
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=not progress,
        logging_steps=50,
        train_sampling_strategy="group_by_length",
    )


def finetune_once(
    model_name: str,
    task: GlueTask,
    train,
    dev,
    hp: GlueHParams,
    seed: int,
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """One seed: fine-tune on ``train`` and return the dev metrics of the final model."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    from training.progress import quiet_trainer

    set_seed(seed)  # classifier-head initialisation and data order
    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    kwargs = {"problem_type": "regression"} if task.num_labels == 1 else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        model_name, num_labels=task.num_labels, trust_remote_code=trust_remote_code, **kwargs
    )
    check_tokenizer_fits(model_name, tokenizer, model.config)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    train_set = _encode(train, task, tokenizer, hp.max_seq_length)
    dev_set = _encode(dev, task, tokenizer, hp.max_seq_length)
    with tempfile.TemporaryDirectory() as output_dir:
        args = training_arguments(hp, seed, output_dir, device, progress)
        trainer = Trainer(
            model=model, args=args, train_dataset=train_set, data_collator=DataCollatorWithPadding(tokenizer)
        )
        quiet_trainer(trainer)  # without --verbose: no logged dict per logging step on the console
        trainer.train()
        # transformers >= 5 also length-groups the *eval* sampler under group_by_length, which reorders the
        # predictions against the labels: predict in dataset order.
        predictor = quiet_trainer(
            Trainer(
                model=model,
                args=replace(args, train_sampling_strategy="random"),
                data_collator=DataCollatorWithPadding(tokenizer),
            )
        )
        output = predictor.predict(dev_set)
    return glue_metrics(task, output.predictions, np.asarray(dev["label"]))


def sweep_learning_rate(
    model_name: str,
    task: GlueTask,
    train,
    hp: GlueHParams,
    cfg: GlueConfig,
    trust_remote_code: bool = False,
    device: str = "cpu",
) -> tuple[GlueHParams, dict[str, float]]:
    """Best learning rate of ``cfg.sweep_learning_rates`` on a held-out slice of the *training* split.

    Returns:
        the settings with the chosen learning rate, and ``{str(lr): score}`` (first metric of the task).
    """
    from sklearn.model_selection import train_test_split

    fit, held = train_test_split(train, test_size=cfg.sweep_fraction, random_state=cfg.seeds[0])
    fit, held = fit.reset_index(drop=True), held.reset_index(drop=True)
    scores = {}
    for lr in cfg.sweep_learning_rates:
        metrics = finetune_once(
            model_name,
            task,
            fit,
            held,
            replace(hp, learning_rate=lr),
            cfg.seeds[0],
            trust_remote_code,
            device,
        )
        scores[str(lr)] = next(iter(metrics.values()))
    best = max(cfg.sweep_learning_rates, key=lambda lr: np.nan_to_num(scores[str(lr)], nan=-np.inf))
    return replace(hp, learning_rate=best), scores


def run_glue(
    models: Sequence[str],
    cfg: GlueConfig,
    data_dir: str | None = None,
    hub: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """One schema record per model with mean ± sd over seeds for every task."""
    from tqdm.auto import tqdm

    from evaluation.metrics import mean_sd
    from evaluation.reports import dataset_fields, make_record, result_row

    data = {}
    for name in cfg.tasks:  # load everything first: a missing split fails before hours of training
        task = glue_task(name)
        data[name] = (
            task,
            load_glue(name, "train", data_dir, hub)[: cfg.max_train_examples],
            load_glue(name, cfg.eval_split, data_dir, hub)[: cfg.max_eval_examples],
        )
    records = []
    for model_name in models:
        rows = []
        for name, (task, train, dev) in data.items():
            hp = cfg.task_hparams(name)
            sweep = {}
            if cfg.sweep_learning_rates:
                hp, sweep = sweep_learning_rate(model_name, task, train, hp, cfg, trust_remote_code, device)
            runs = [
                finetune_once(model_name, task, train, dev, hp, seed, trust_remote_code, device, progress)
                for seed in tqdm(cfg.seeds, desc=f"glue {name} seeds ({model_name})", disable=not progress)
            ]
            for metric in runs[0]:
                values = [r[metric] for r in runs]
                mean, sd = mean_sd(values)
                row = result_row(
                    name, "finetune", metric, mean, len(dev), values, sd if len(values) > 1 else None
                )
                rows.append(
                    {
                        **row,
                        **dataset_fields(GLUE_HUB, task.hub_config, eval_split_name(task, cfg)),
                        "learning_rate": hp.learning_rate,
                        **({"sweep": sweep} if sweep else {}),
                    }
                )
        records.append(make_record("glue", model_name, cfg, rows))
    return records
