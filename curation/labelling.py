"""Steps 3 and 5 as sharded stages, after the audit has chosen the prompt version:

* ``label`` (one task per fetched shard): the primary labeler labels that shard with the chosen version.
  Every answer is cached as soon as its batch returns, with the input file the document was read from
  (:class:`curation.labelers.FileLabelCache`), so a killed task resumes where it stopped and a rerun with
  any other task count finds every label again; only parsable labels are cached; a task whose label
  coverage falls below
  ``labeler.min_coverage`` fails (one line naming the counts) and its rerun asks again for exactly the
  missing documents. The same pattern as datatrove's ``InferenceRunner`` (sharded input, per-rank
  checkpoints, resumable); that runner is not used directly because its labelers are OpenAI-style servers
  only and its retry policy is fixed, while labels here also come from local encoders and chat models.
* ``train`` (one task per filter-required domain): the domain's labelled documents -> boilerplate/adult
  measured on them -> a calibrated fastText classifier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from curation.audit import check_coverage
from curation.config import CurationConfig, config_from_dict
from curation.io_utils import write_json_atomic
from rexbert_common.errors import UserError


def read_rows(folder: str, tasks: int, columns: Sequence[str], domain: str | None = None) -> Iterator[dict]:
    """Rows of ``<folder>/<rank>.parquet`` for every rank, batch by batch (optionally one domain only); a
    missing file is an error, never an empty shard."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data = get_datafolder(folder)
    names = [f"{rank:05d}.parquet" for rank in range(tasks)]
    if missing := [name for name in names if not data.exists(name)]:
        raise UserError(
            f"{len(missing)} of {tasks} shards are missing from {data.path} ({missing[:3]}): the stage that "
            "writes them did not complete (or the folder was edited by hand): rerun"
        )
    for name in names:
        with data.open(name, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=1024, columns=list(columns)):
                if domain is not None:
                    batch = batch.filter(pc.equal(batch.column("domain"), domain))
                yield from batch.to_pylist()


def label_schema():
    import pyarrow as pa

    from curation.fetch import fetched_schema

    return fetched_schema().append(pa.field("label", pa.int8())).append(pa.field("status", pa.string()))


class LabelShard(PipelineStep):
    name = "🏷 rexbert labels"
    type = "🛒 REXBERT"

    def __init__(
        self,
        labeler: dict[str, Any],
        min_coverage: float,
        prompts_dir: str,
        audit_dir: str,
        fetched_folder: str,
        out_folder: str,
        cache_dir: str,
    ):
        super().__init__()
        self.labeler, self.min_coverage, self.prompts_dir = labeler, min_coverage, prompts_dir
        self.audit_dir, self.fetched_folder, self.cache_dir = audit_dir, fetched_folder, cache_dir
        self.out = get_datafolder(out_folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from curation.audit import read_decision
        from curation.config import LabelerConfig
        from curation.labelers import FileLabelCache, cache_keys, label_documents, make_labeler
        from curation.readers import input_file
        from curation.relevance import load_prompt
        from rexbert_common.config import config_from_dict as load

        with self.track_time():
            rows = list(_shard_rows(self.fetched_folder, rank))
            version = read_decision(self.audit_dir)["prompt_version"]
            labels: list[int | None] = [None] * len(rows)
            statuses = ["unlabelled"] * len(rows)
            if rows and version is not None:
                prompt = load_prompt(self.prompts_dir, version)
                config = load(LabelerConfig, self.labeler, "labeler")
                labeler, texts = make_labeler(config), [r["text"] for r in rows]
                routes: dict[str, set[str]] = defaultdict(set)
                for key, row in zip(cache_keys(labeler, prompt, texts), rows):
                    routes[key].add(input_file(row["id"]))
                cache_dir = Path(self.cache_dir)
                cache = FileLabelCache(cache_dir / "by_file", routes, read_also=[cache_dir / "audit.sqlite"])
                try:
                    results, stats = label_documents(texts, labeler, prompt, cache, config.batch_size)
                finally:
                    cache.close()
                for key, value in stats.as_dict().items():
                    self.stat_update(key, value=value)
                labels, statuses = [r.label for r in results], [r.status for r in results]
                check_coverage(f"label task {rank}", statuses, self.min_coverage)
            schema = label_schema()
            columns = {name: [r[name] for r in rows] for name in schema.names[:-2]}
            table = pa.table({**columns, "label": labels, "status": statuses}, schema=schema)
            with self.out.open(f"{rank:05d}.parquet", "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
        return iter(())


def _shard_rows(folder: str, rank: int) -> Iterator[dict]:
    import pyarrow.parquet as pq

    data = get_datafolder(folder)
    name = f"{rank:05d}.parquet"
    if not data.exists(name):
        raise UserError(f"{data.path}/{name} is missing: the fetch stage did not complete; rerun")
    with data.open(name, "rb") as handle:
        yield from pq.read_table(handle).to_pylist()


def measure_cleaning(config: CurationConfig, texts, urls, domains, labels: list[int | None]):
    """Boilerplate removal and adult drops on the labelled sample (the same steps as the prepare stage), per
    domain and label: the adult filter's drops among documents the labeler judged Relevant are its false
    positives on commerce content."""
    from datatrove.data import Document

    from curation.cleaning.boilerplate import BoilerplateRemover
    from curation.filters import AdultFilter

    remover = BoilerplateRemover(
        config.cleaning.boilerplate.extra_patterns, config.cleaning.boilerplate.max_line_words
    )
    adult = AdultFilter(config.cleaning.adult)
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cleaned = []
    for text, url, domain, label in zip(texts, urls, domains, labels):
        new, removed = remover.clean(text) if config.cleaning.boilerplate.enabled else (text, 0)
        cleaned.append(new)
        row = stats[domain]
        tag = {1: "relevant", 0: "not_relevant"}.get(label, "unlabelled")
        row[f"{tag}_docs"] += 1
        row[f"{tag}_chars"] += len(text)
        row[f"{tag}_boilerplate_chars"] += len(text) - len(new)
        row[f"{tag}_docs_with_boilerplate"] += int(removed > 0)
        verdict = adult.judge(Document(text=new, id="", metadata={"url": url or "", "domain": domain}))
        row[f"{tag}_adult_dropped"] += int(verdict is not True)
    report = {}
    for domain, row in sorted(stats.items()):
        rel = row.get("relevant_docs", 0)
        report[domain] = dict(row) | {
            "adult_false_positive_rate": (row.get("relevant_adult_dropped", 0) / rel) if rel else None,
            "boilerplate_char_share": sum(
                row.get(f"{t}_boilerplate_chars", 0) for t in ("relevant", "not_relevant")
            )
            / max(1, sum(row.get(f"{t}_chars", 0) for t in ("relevant", "not_relevant"))),
        }
    return cleaned, report


class TrainDomain(PipelineStep):
    """The ``train`` stage: task r trains the classifier of the r-th filter-required domain (sorted) from
    its labelled documents; writes ``classifiers/<domain>.{bin,json}`` and ``cleaning/<domain>.json``."""

    name = "🎓 rexbert domain classifier"
    type = "🛒 REXBERT"

    def __init__(self, config: dict[str, Any], labels_folder: str, label_tasks: int, out_dir: str):
        super().__init__()
        self.config_dict = config
        self.labels_folder, self.label_tasks, self.out_dir = labels_folder, label_tasks, out_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from curation.classifier import train_domain_classifier
        from curation.filters import normalise_domain

        config = config_from_dict(self.config_dict)
        domain = sorted({normalise_domain(d) for d in config.domains.filter_required})[rank]
        out = Path(self.out_dir)
        with self.track_time():
            columns = ("id", "text", "url", "truth", "label", "status")
            rows = sorted(
                read_rows(self.labels_folder, self.label_tasks, (*columns, "domain"), domain=domain),
                key=lambda r: r["id"],
            )
            if not rows:
                return iter(())
            labelled = [r for r in rows if r["status"] == "ok"]
            self.stat_update(f"{domain}/labelled", value=len(labelled))
            check_coverage(f"domain {domain}", [r["status"] for r in rows], config.labeler.min_coverage)
            cleaned, cleaning = measure_cleaning(
                config,
                [r["text"] for r in labelled],
                [r["url"] for r in labelled],
                [domain] * len(labelled),
                [r["label"] for r in labelled],
            )
            truth = [r["truth"] for r in labelled]
            record = train_domain_classifier(
                domain,
                [r["id"] for r in labelled],
                cleaned,
                [r["label"] for r in labelled],
                config.classifier,
                out / "classifiers",
                truth=truth if truth and all(t in (0, 1) for t in truth) else None,
            )
            record["n_sampled"], record["n_unlabelled"] = len(rows), len(rows) - len(labelled)
            write_json_atomic(out / "classifiers" / f"{domain}.json", record)
            write_json_atomic(out / "cleaning" / f"{domain}.json", cleaning.get(domain, {}))
        return iter(())
