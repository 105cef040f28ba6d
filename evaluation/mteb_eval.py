"""``rexbert eval mteb``: sentence-transformers models through the ``mteb`` package, as schema records.

Offline the tasks are MTEB's own ``STSBenchmark`` and ``ESCIReranking`` on local files
(:mod:`evaluation.mteb_tasks`); with ``hub=True`` any MTEB task name runs on MTEB's Hub datasets
(English subsets). Raw encoders get mean pooling, as in the similarity evaluator.

Example:
    >>> records = run_mteb(["all-MiniLM-L6-v2"], MTEBConfig(tasks=("ESCIReranking",)))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.data import DataError
from evaluation.mteb_tasks import LOCAL_TASKS, LocalESCIReranking, LocalSTSBenchmark

# Scores copied into the results rows (besides MTEB's main score), where the task reports them.
REPORTED_SCORES = ("cosine_spearman", "cosine_pearson", "ndcg_at_10", "map_at_1000", "mrr_at_1000")


class MTEBConfigError(DataError):
    """An MTEB setting that cannot run (unknown offline task...)."""


@dataclass
class MTEBConfig:
    """Args:
    tasks: MTEB task names; offline only those of :data:`evaluation.mteb_tasks.LOCAL_TASKS`.
    hub: run MTEB's own tasks on their Hub datasets instead of the local copies.
    max_seq_length: token limit per text; None = the model's own (capped at what it can take).
    esci_data: ESCI source of the offline ESCIReranking (see :func:`evaluation.data.load_esci`).
    data_dir: folder holding ``glue_stsb/`` for the offline STSBenchmark (default ``$REXBERT_DATA_DIR``).
    """

    tasks: tuple[str, ...] = ("STSBenchmark", "ESCIReranking")
    hub: bool = False
    max_seq_length: int | None = None
    esci_data: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        if not self.tasks:
            raise MTEBConfigError("tasks: at least one MTEB task is needed")
        unknown = sorted(set(self.tasks) - set(LOCAL_TASKS))
        if unknown and not self.hub:
            raise MTEBConfigError(
                f"tasks: {unknown} cannot run offline; offline tasks are {sorted(LOCAL_TASKS)} "
                "(pass hub=True / --hub for MTEB's Hub datasets)"
            )


def mteb_model_name(name: str) -> str:
    """The name MTEB files a model's results under (``<output>/results/<name, "/" as "__">/<revision>/``).

    A Hub id is kept; a local folder is named by its resolved path, so two local models never share a
    folder (MTEB names a SentenceTransformer by its card's model / base model name, and every local model
    without one lands in the same ``no_model_name__available`` folder).
    """
    from evaluation.models import MINILM_ALIASES, model_source

    if name in MINILM_ALIASES:  # the offline copy of the Hub model
        return MINILM_ALIASES[-1]
    source = Path(model_source(name))
    return source.resolve().as_posix().lstrip("/") if source.is_dir() else str(source)


def _tasks(cfg: MTEBConfig) -> list:
    import mteb

    if cfg.hub:
        return list(mteb.get_tasks(tasks=list(cfg.tasks), languages=["eng"]))
    built = {
        "STSBenchmark": lambda: LocalSTSBenchmark(data_dir=cfg.data_dir),
        "ESCIReranking": lambda: LocalESCIReranking(data=cfg.esci_data),
    }
    return [built[name]() for name in cfg.tasks]


def _scored_units(task) -> int:
    """Pairs (STS) or queries (reranking) of a local task's test split; 0 when unknown (Hub tasks).

    Loads the local data (MTEB then reuses it; it unloads a task's data after evaluating it).
    """
    if isinstance(task, LocalSTSBenchmark | LocalESCIReranking):
        task.load_data()
    if isinstance(task, LocalESCIReranking):
        return len(task.dataset["us"]["test"]["queries"])
    if isinstance(task, LocalSTSBenchmark):
        return len(task.dataset["test"])
    return 0


def mteb_rows(task, scores: Sequence[dict], hub: bool, n: int = 0) -> list[dict]:
    """Schema rows (setting ``zero_shot``) of one task's test-split scores, one per reported score.

    Args:
        n: scored pairs / queries (0 = not known).
    """
    from evaluation.reports import dataset_fields, result_row

    rows = []
    for subset_scores in scores:
        subset = subset_scores.get("hf_subset", "default")
        name = task.metadata.name if subset in ("default", "us", "en") else f"{task.metadata.name}/{subset}"
        metrics = {"main_score": subset_scores["main_score"]}
        metrics.update({m: subset_scores[m] for m in REPORTED_SCORES if m in subset_scores})
        meta = dataset_fields(task.metadata.dataset["path"], subset, "test") if hub else {}
        rows += [
            {**result_row(name, "zero_shot", metric, value, n), **meta} for metric, value in metrics.items()
        ]
    return rows


def run_mteb(
    models: Sequence[str],
    cfg: MTEBConfig,
    trust_remote_code: bool = False,
    device: str = "cpu",
    output: str | None = None,
) -> list[dict]:
    """One schema record (kind ``mteb``) per model with MTEB's test-split scores of every task.

    Args:
        output: folder for MTEB's own result files (one sub-folder per model); None = MTEB's cache.
    """
    import mteb
    from mteb.cache import ResultCache

    from evaluation.esci_similarity import SimilarityConfig, load_sentence_model, resolve_model
    from evaluation.models import model_source
    from evaluation.reports import make_record

    for name in models:  # a wrong path fails before any loading
        model_source(name)
    records = []
    for name in models:
        model = load_sentence_model(
            name, SimilarityConfig(max_seq_length=cfg.max_seq_length), trust_remote_code, device
        )
        model.model_card_data.model_name = mteb_model_name(name)
        tasks = _tasks(cfg)
        units = {t.metadata.name: _scored_units(t) for t in tasks}
        result = mteb.evaluate(
            model,
            tasks,
            cache=ResultCache(cache_path=output) if output else None,
            show_progress_bar=False,
            overwrite_strategy="always",
        )
        by_name = {t.metadata.name: t for t in tasks}
        rows = [
            row
            for task_result in result.task_results
            for row in mteb_rows(
                by_name[task_result.task_name],
                task_result.scores["test"],
                cfg.hub,
                units[task_result.task_name],
            )
        ]
        config = {
            **asdict(cfg),
            "mteb_version": mteb.__version__,
            "mteb_model_name": model.model_card_data.model_name,
        }
        records.append(make_record("mteb", name, config, rows, model_path=resolve_model(name)))
    return records
