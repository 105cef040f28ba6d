"""Steps 2-5 on a bounded sample, as one datatrove task: merge the tasks' labelling candidates, measure the
boilerplate and adult steps on them, label with the primary model, audit with the stronger one over prompt
versions, and distil the labels into per-domain fastText classifiers.

The stage fails (no completion marker, so the executor reruns it) while any label is missing because the
endpoint failed: only definitive answers are cached, so the rerun asks again for exactly those documents.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from curation.config import CurationConfig, config_from_dict
from curation.io_utils import write_json_atomic
from rexbert_common.errors import UserError


class LabelsMissing(RuntimeError):
    """The labeler failed for some documents (endpoint errors); rerun to retry exactly those."""


class AuditTargetMissed(UserError):
    """No prompt version reached the agreement target; the per-round report is in ``audit.json``."""


def audited_subset(domains: list[str], ids: list[str], per_domain: int, seed: int) -> list[int]:
    """The same documents are audited in every round: per domain, the ``per_domain`` smallest seeded id
    hashes (chosen before any label exists, so a revised prompt is judged on the same documents)."""
    from curation.sampling import sample_key

    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, domain in enumerate(domains):
        by_domain[domain].append(i)
    chosen = []
    for domain in sorted(by_domain):
        chosen += sorted(by_domain[domain], key=lambda i: sample_key(seed + 1, ids[i]))[:per_domain]
    return sorted(chosen)


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


def label_and_audit(config: CurationConfig, ids, texts, domains, cache_path: Path) -> dict[str, Any]:
    """The audit loop: one round per prompt version, Cohen's kappa on the fixed audited subset, stop at the
    target. Returns the chosen version's labels and every round's record."""
    from curation.audit import audit_round
    from curation.labelers import LabelCache, label_documents, make_labeler
    from curation.relevance import load_prompt

    primary, auditor = make_labeler(config.labeler), make_labeler(config.audit.labeler)
    if primary.identity == auditor.identity:
        raise UserError(
            f"audit.labeler is the primary labeler ({primary.identity}): an audit by the same "
            "model measures nothing; configure a stronger auditor"
        )
    subset = audited_subset(domains, ids, 2 * config.audit.subset_per_class, config.sampling.seed)
    cache = LabelCache(cache_path)
    rounds, labels_of = [], {}
    try:
        for version in config.audit.prompt_versions:
            prompt = load_prompt(config.prompts_dir(), version)
            results, stats = label_documents(
                texts, primary, prompt, cache, config.labeler.batch_size, f"label {version}"
            )
            audit, audit_stats = label_documents(
                [texts[i] for i in subset],
                auditor,
                prompt,
                cache,
                config.audit.labeler.batch_size,
                f"audit {version}",
            )
            missing = sum(r.status == "error" for r in results) + sum(r.status == "error" for r in audit)
            if missing:
                raise LabelsMissing(
                    f"{missing} labels missing for prompt {version} (labeler errors: "
                    f"{stats.as_dict()} / auditor {audit_stats.as_dict()}); the endpoint failed "
                    "for them and they were not cached: rerun the same command to retry them"
                )
            labels = [r.label for r in results]
            labels_of[version] = labels
            record = audit_round(
                version,
                [domains[i] for i in subset],
                [ids[i] for i in subset],
                [texts[i] for i in subset],
                [labels[i] for i in subset],
                [r.label for r in audit],
            )
            record.label_stats = {"primary": stats.as_dict(), "auditor": audit_stats.as_dict()}
            rounds.append(record.as_dict())
            kappa = record.overall["cohen_kappa"]
            if kappa is not None and kappa >= config.audit.target_agreement:
                break
    finally:
        cache.close()
    best = max(
        rounds, key=lambda r: r["overall"]["cohen_kappa"] if r["overall"]["cohen_kappa"] is not None else -2
    )
    reached = (best["overall"]["cohen_kappa"] or -2) >= config.audit.target_agreement
    return {
        "primary_labeler": primary.identity,
        "auditor_labeler": auditor.identity,
        "audited_docs": len(subset),
        "target_kappa": config.audit.target_agreement,
        "target_reached": reached,
        "chosen_prompt_version": best["prompt_version"],
        "rounds": rounds,
        "labels": labels_of[best["prompt_version"]],
    }


class LabelAndTrain(PipelineStep):
    """One task: sample -> cleaning measurements -> labels + audit loop -> per-domain classifiers."""

    name = "🏷 rexbert label, audit, train"
    type = "🛒 REXBERT"

    def __init__(
        self, config: dict[str, Any], candidates_dir: str, out_dir: str, cache_path: str, tasks: int
    ):
        super().__init__()
        self.tasks = tasks
        self.config_dict = config  # a plain dict pickles into any executor's workers
        self.candidates_dir, self.out_dir, self.cache_path = candidates_dir, out_dir, cache_path

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from curation.classifier import train_domain_classifier
        from curation.shards import merged_sample

        config = config_from_dict(self.config_dict)
        out = Path(self.out_dir)
        with self.track_time():
            sample = merged_sample(self.candidates_dir, config.sampling.per_domain, self.tasks)
            ids, texts = sample.column("id").to_pylist(), sample.column("text").to_pylist()
            domains, truth = sample.column("domain").to_pylist(), sample.column("truth").to_pylist()
            self.stat_update("sampled", value=len(ids))
            summary: dict[str, Any] = {"sample_size": len(ids), "classifiers": {}}
            if ids:
                labelling = label_and_audit(config, ids, texts, domains, Path(self.cache_path))
                labels = labelling.pop("labels")
                write_json_atomic(out / "audit.json", labelling)
                if not labelling["target_reached"] and config.audit.on_target_missed == "stop":
                    kappas = [(r["prompt_version"], r["overall"]["cohen_kappa"]) for r in labelling["rounds"]]
                    raise AuditTargetMissed(
                        f"the QA audit never reached Cohen's kappa >= {config.audit.target_agreement} "
                        f"(per round: {kappas}); see {out / 'audit.json'}, revise the prompt "
                        "(a new file in audit.prompts_dir) or set audit.on_target_missed"
                    )
                urls = sample.column("url").to_pylist()
                cleaned, cleaning = measure_cleaning(config, texts, urls, domains, labels)
                summary |= {"labelling": labelling, "cleaning_on_sample": cleaning}
                for domain in sorted(set(domains)):
                    rows = [i for i, d in enumerate(domains) if d == domain and labels[i] is not None]
                    self.stat_update(f"{domain}/labelled", value=len(rows))
                    known = [truth[i] for i in rows]
                    summary["classifiers"][domain] = train_domain_classifier(
                        domain,
                        [ids[i] for i in rows],
                        [cleaned[i] for i in rows],
                        [labels[i] for i in rows],
                        config.classifier,
                        out / "classifiers",
                        truth=known if known and all(t in (0, 1) for t in known) else None,
                    )
            write_json_atomic(out / "summary.json", summary)
        return iter(())
