"""The curation steps as datatrove PipelineSteps, and the executor factory (Local / Slurm / Ray).

``CleanShardStep`` is what ``rexbert curate`` runs: task ``rank`` processes ingest shard ``rank`` (one
task per
shard), so datatrove's executors parallelise over cores or cluster nodes and skip completed tasks on restart.
The filter classes let the same logic sit inside any datatrove pipeline (readers -> filters -> writers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from curation.config import (
    AdultConfig,
    CurationConfig,
    ExecutorConfig,
    QualityConfig,
    config_from_dict,
    config_to_dict,
)


class CleanShardStep(PipelineStep):
    name = "rexbert curation: relevance + cleaning"
    type = "🛒 REXBERT"

    def __init__(self, config: dict[str, Any], work_dir: str):
        super().__init__()
        self.config_dict = config  # plain dict: pickles into spawned / remote workers
        self.work_dir = work_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from curation.apply import clean_shard

        config = config_from_dict(self.config_dict)
        with self.track_time():
            clean_shard(config, Path(self.work_dir), rank)
        self.stat_update("shards")
        yield from data or ()


class LanguageIdFilter(BaseFilter):
    """datatrove filter around :class:`curation.cleaning.lid.LanguageId` (local lid.176, batched)."""

    name = "🌍 rexbert language ID"

    def __init__(self, model_path: str, languages=("en",), threshold: float = 0.65, batch_size: int = 256):
        super().__init__(batch_size=batch_size)
        from curation.cleaning.lid import LanguageId

        self.lid = LanguageId(model_path, languages, threshold)

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        out = []
        for doc, (kept, lang, score) in zip(batch, self.lid.predict([d.text for d in batch])):
            doc.metadata["language"], doc.metadata["language_score"] = lang, score
            out.append(True if kept else (False, "language"))
        return out

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]


class QualityHeuristicsFilter(BaseFilter):
    """Gopher + C4 + FineWeb heuristics in one pass (reasons as datatrove names them)."""

    name = "🥇 rexbert quality"

    def __init__(self, config: QualityConfig | None = None):
        super().__init__()
        from curation.cleaning.quality import QualityFilter

        self.quality = QualityFilter(config or QualityConfig())

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason, text = self.quality.check(doc.text)
        if reason:
            return False, reason
        doc.text = text
        return True


class AdultContentFilter(BaseFilter):
    name = "🔞 rexbert adult"

    def __init__(self, config: AdultConfig | None = None):
        super().__init__()
        from curation.cleaning.adult import AdultFilter

        self.adult = AdultFilter(config or AdultConfig())

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = self.adult.check(doc.text, doc.metadata.get("url", ""))
        return (False, reason) if reason else True


class DomainRelevanceFilter(BaseFilter):
    """Keeps a document when its domain's fastText relevance score reaches the saved domain threshold."""

    name = "🛒 rexbert relevance"

    def __init__(self, classifier_dir: str, domain_key: str = "domain", batch_size: int = 512):
        super().__init__(batch_size=batch_size)
        self.classifier_dir = classifier_dir
        self.domain_key = domain_key
        self._cache: dict[str, Any] = {}

    def _classifier(self, domain: str):
        from curation.classifier import DomainClassifier

        if domain not in self._cache:
            exists = (Path(self.classifier_dir) / f"{domain}.json").exists()
            self._cache[domain] = DomainClassifier.load(self.classifier_dir, domain) if exists else None
        return self._cache[domain]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        out: list[bool | tuple[bool, str]] = []
        for doc in batch:
            clf = self._classifier(str(doc.metadata.get(self.domain_key, "")))
            if clf is None:
                out.append((False, "no_classifier"))
                continue
            score = float(clf.scores([doc.text])[0])
            doc.metadata["relevance_score"] = score
            out.append(True if score >= clf.threshold else (False, "below_threshold"))
        return out

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]


def make_executor(pipeline: list, tasks: int, logging_dir: str, config: ExecutorConfig, job_name: str):
    """datatrove executor for ``pipeline`` with one task per shard; completed tasks are skipped on rerun."""
    import os

    if config.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)
        return LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(workers, tasks),
            logging_dir=logging_dir,
            skip_completed=True,
        )
    if config.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        options = {"time": "24:00:00", "partition": "cpu", "cpus_per_task": 1, **config.slurm}
        return SlurmPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            job_name=job_name,
            logging_dir=logging_dir,
            skip_completed=True,
            **options,
        )
    if config.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline=pipeline, tasks=tasks, logging_dir=logging_dir, skip_completed=True, **config.ray
        )
    raise ValueError(f"executor.kind {config.kind!r} is not one of local, slurm, ray")


def run_clean_stage(config: CurationConfig, work_dir: Path) -> None:
    step = CleanShardStep(config_to_dict(config), str(work_dir))
    executor = make_executor(
        [step],
        config.input.num_shards,
        str(work_dir / "datatrove_logs" / "clean"),
        config.executor,
        job_name="rexbert_curation_clean",
    )
    executor.run()
