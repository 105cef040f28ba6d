"""The last stage: the report and the dataset card, built from the merged datatrove stats of every stage
(each task's ``logs/stats/<rank>.json``) and the labelling summary; no document text is read again."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from curation.io_utils import read_json, write_json_atomic, write_text_atomic


class DatasetTally(PipelineStep):
    """Counts the documents and words (whitespace tokens) that reach the dataset, per domain."""

    name = "🧮 rexbert tally"
    type = "🛒 REXBERT"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            domain = doc.metadata.get("domain", "")
            self.stat_update(f"{domain}/docs")
            self.stat_update(f"{domain}/words", value=len(doc.text.split()))
            yield doc


def merged_stats(stage_dir: str | Path) -> list[dict[str, Any]]:
    """Every step of a stage with its counters summed over the stage's tasks, in pipeline order."""
    from datatrove.utils.stats import PipelineStats

    total = None
    for path in sorted((Path(stage_dir) / "logs" / "stats").glob("*.json")):
        stats = PipelineStats.from_json(json.loads(path.read_text()))
        total = stats if total is None else total + stats
    if total is None:
        return []
    return [{"name": s.name, "stats": {k: _total(v) for k, v in s.stats.items()}} for s in total.stats]


def _total(value: Any) -> float:
    """A counter's total (datatrove keeps single-valued counters as plain numbers in its stats files)."""
    if hasattr(value, "total"):
        return value.total
    return value.get("total", 0) if isinstance(value, dict) else value


def _drops(counters: dict[str, float]) -> dict[str, int]:
    return {
        k.removeprefix("dropped_"): int(v) for k, v in sorted(counters.items()) if k.startswith("dropped_")
    }


def build_report(stage_dirs: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    steps = {stage: merged_stats(folder) for stage, folder in stage_dirs.items() if stage != "finalize"}
    drops: dict[str, dict[str, int]] = {}
    per_domain: dict[str, dict[str, Any]] = defaultdict(lambda: {"docs": 0, "words": 0, "dropped": {}})
    docs_in = 0
    for stage, items in steps.items():
        for step in items:
            counters = step["stats"]
            if "📖" in step["name"] and stage == "prepare":
                docs_in += int(counters.get("forwarded", 0)) + sum(_drops(counters).values())
            overall = _drops({k: v for k, v in counters.items() if "/" not in k})
            if "MinHash stage 4" in step["name"] and counters.get("dropped"):  # datatrove names no reason
                overall = {"near_duplicate": int(counters["dropped"])}
            if overall:
                drops[f"{stage}: {step['name']}"] = overall
            for key, value in counters.items():
                if "/" not in key:
                    continue
                domain, what = key.split("/", 1)
                if what in ("docs", "words"):
                    per_domain[domain][what] += int(value)
                elif what.startswith("dropped_"):
                    reasons = per_domain[domain]["dropped"]
                    reasons[what.removeprefix("dropped_")] = reasons.get(
                        what.removeprefix("dropped_"), 0
                    ) + int(value)
    summary = labelling_summary(stage_dirs)
    words_total = sum(d["words"] for d in per_domain.values()) or 1
    from curation.filters import normalise_domain

    routes = {normalise_domain(d): "filter" for d in config["domains"]["filter_required"]}
    routes |= {normalise_domain(d): "direct" for d in config["domains"]["directly_selected"]}
    domains = sorted(
        (
            {
                "domain": d,
                "route": routes.get(d, "not selected"),
                **row,
                "word_share": row["words"] / words_total,
            }
            for d, row in per_domain.items()
        ),
        key=lambda r: (-r["words"], r["domain"]),
    )
    labelling = summary.get("labelling", {})
    confirmation = labelling.get("confirmation") or {}
    return {
        "totals": {
            "docs_in": docs_in,
            "docs_out": sum(d["docs"] for d in domains),
            "words_out": sum(d["words"] for d in domains),
        },
        "drops": drops,
        "domains": domains,
        "sample": summary.get("sample", {}),
        "labelling": {k: v for k, v in labelling.items() if k not in ("rounds", "confirmation")},
        "audit_rounds": [
            {
                "prompt_version": r["prompt_version"],
                "cohen_kappa": r["selection"]["cohen_kappa"],
                "kappa_interval": r["selection"]["kappa_interval"],
                "agreement": r["selection"]["agreement"],
                "n": r["selection"]["n"],
                "per_domain_kappa": {d: m["cohen_kappa"] for d, m in r["selection"]["per_domain"].items()},
            }
            for r in labelling.get("rounds", [])
        ],
        "audit_confirmation": {
            k: confirmation.get(k)
            for k in ("cohen_kappa", "kappa_interval", "agreement", "n", "missing_pairs")
        },
        "cleaning_on_labelled_sample": summary.get("cleaning_on_sample", {}),
        "classifiers": {
            d: {
                k: rec.get(k)
                for k in (
                    "n_labelled",
                    "n_relevant",
                    "threshold",
                    "threshold_reason",
                    "heldout",
                    "heldout_vs_truth",
                    "cv_f1_mean",
                    "n_heldout",
                    "n_sampled",
                    "n_unlabelled",
                    "note",
                )
            }
            for d, rec in summary.get("classifiers", {}).items()
        },
        "stages": {stage: Path(folder).name for stage, folder in stage_dirs.items()},
        "steps": steps,
    }


def labelling_summary(stage_dirs: dict[str, str]) -> dict[str, Any]:
    """What the sample, audit and train stages wrote: the sample's sizes, the audit record, and each
    domain's classifier record and cleaning measurements."""
    train = Path(stage_dirs["train"])
    return {
        "sample": read_json(Path(stage_dirs["sample"]) / "sample.json"),
        "labelling": read_json(Path(stage_dirs["audit"]) / "audit.json"),
        "classifiers": {p.stem: read_json(p) for p in sorted((train / "classifiers").glob("*.json"))},
        "cleaning_on_sample": {p.stem: read_json(p) for p in sorted((train / "cleaning").glob("*.json"))},
    }


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render_markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [
        "# Curation report",
        "",
        f"Documents read: {t['docs_in']:,}; kept: {t['docs_out']:,} ({t['words_out']:,} words).",
        "",
        "## Domains",
        "",
        "| domain | route | docs | words | share |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {d['domain']} | {d['route']} | {d['docs']:,} | {d['words']:,} | {d['word_share']:.1%} |"
        for d in report["domains"]
    ]
    lines += ["", "## Drops per step and reason", "", "| step | reason | docs |", "|---|---|---:|"]
    lines += [
        f"| {step} | {reason} | {n:,} |"
        for step, reasons in report["drops"].items()
        for reason, n in reasons.items()
    ]
    lab, conf = report["labelling"], report["audit_confirmation"]
    interval = conf.get("kappa_interval") or [None, None]
    lines += [
        "",
        "## Labelling and QA audit",
        "",
        f"Primary `{lab.get('primary_labeler')}`, auditor `{lab.get('auditor_labeler')}`; "
        f"{lab.get('audited_docs')} audited documents, stratified by domain and first label (the same "
        f"every round); chosen prompt `{lab.get('chosen_prompt_version')}` ({lab.get('chosen_by')}), "
        f"confirmed on the other half: kappa {_fmt(conf.get('cohen_kappa'))}, "
        f"{_fmt(lab.get('confidence'))} interval [{_fmt(interval[0])}, {_fmt(interval[1])}] on "
        f"{conf.get('n')} pairs; target (lower bound) {lab.get('target_kappa')}: "
        f"{'reached' if lab.get('target_reached') else 'NOT reached'}.",
    ]
    if not lab.get("gate_meaningful", True):
        lines += [
            "",
            "**The audit gate is not meaningful in this run**: the auditor runs the same model as the "
            "primary labeler (same weights), so kappa measures self-agreement, not correctness.",
        ]
    lines += ["", "| round | prompt | Cohen's kappa (selection half) | interval | agreement |"]
    lines += ["|---:|---|---:|---|---:|"]
    lines += [
        f"| {i + 1} | {r['prompt_version']} | {_fmt(r['cohen_kappa'])} | "
        f"[{_fmt((r['kappa_interval'] or [None])[0])}, {_fmt((r['kappa_interval'] or [None, None])[1])}] | "
        f"{_fmt(r['agreement'])} |"
        for i, r in enumerate(report["audit_rounds"])
    ]
    lines += [
        "",
        "## Boilerplate and adult filter on the labelled sample",
        "",
        "| domain | boilerplate share of chars | adult false-positive rate (Relevant docs dropped) |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {d} | {_fmt(m['boilerplate_char_share'])} | {_fmt(m['adult_false_positive_rate'])} |"
        for d, m in report["cleaning_on_labelled_sample"].items()
    ]
    lines += [
        "",
        "## Classifiers (calibrated; threshold from out-of-fold scores; metrics on held-out)",
        "",
        "| domain | labelled | threshold | held-out P | held-out R | held-out F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for d, c in report["classifiers"].items():
        h = c.get("heldout") or {}
        lines.append(
            f"| {d} | {c['n_labelled']} | {_fmt(c['threshold'])} | {_fmt(h.get('precision'))} | "
            f"{_fmt(h.get('recall'))} | {_fmt(h.get('f1'))} |"
        )
    return "\n".join(lines) + "\n"


def dataset_card(report: dict[str, Any], config: dict[str, Any]) -> str:
    t = report["totals"]
    sources = [s["path"] for s in config["input"]["sources"]] + (
        ["offline demo (Open Icecat, Amazon ESCI, Project Gutenberg, WikiText, Common Crawl samples)"]
        if config["input"]["demo"]
        else []
    )
    lines = [
        "---",
        f"license: {config['output']['license']}",
        "language:",
        "- en",
        "task_categories:",
        "- fill-mask",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/*.parquet",
        "---",
        f"# {config['output']['dataset_name']}",
        "",
        "E-commerce text curated by the RexBERT Ecom-niverse pipeline (`rexbert curate`): domain selection "
        "(paper Table 1), LLM relevance labels distilled into calibrated per-domain fastText classifiers, "
        "language ID, Gopher/C4/FineWeb quality heuristics, boilerplate/ads removal, adult filtering "
        "(datatrove URL blocklist + explicit terms) and global MinHash near-duplicate removal.",
        "",
        "## Sources",
        "",
        *[f"- {s}" for s in sources],
        "",
        f"## Size\n\n{t['docs_out']:,} documents, {t['words_out']:,} words "
        f"(of {t['docs_in']:,} documents read).",
        "",
        "| domain | route | docs | words |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {d['domain']} | {d['route']} | {d['docs']:,} | {d['words']:,} |" for d in report["domains"]]
    lines += [
        "",
        "## Columns",
        "",
        "`id` (`<source>/<file>#<record>`), `text`, `domain`, `url`, `source`, `source_id`, "
        "`relevance_score` (calibrated P(relevant); null for directly selected domains), `language`, "
        "`language_score`.",
        "",
        f"## Licence\n\n`{config['output']['license']}`; the documents keep the terms of their sources.",
        "",
    ]
    return "\n".join(lines)


class Finalize(PipelineStep):
    name = "📝 rexbert report + card"
    type = "🛒 REXBERT"

    def __init__(self, config: dict[str, Any], stage_dirs: dict[str, str], root: str):
        super().__init__()
        self.config, self.stage_dirs, self.root = config, stage_dirs, root

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        root = Path(self.root)
        report = build_report(self.stage_dirs, self.config)
        dataset = Path(self.stage_dirs["select"]) / "dataset"
        (dataset / "data").mkdir(parents=True, exist_ok=True)
        write_text_atomic(dataset / "README.md", dataset_card(report, self.config))
        write_json_atomic(root / "report" / "report.json", report)
        write_text_atomic(root / "report" / "report.md", render_markdown(report))
        link, tmp = root / "dataset", root / ".dataset.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.path.relpath(dataset, root), tmp)  # an atomic switch to this run's dataset
        os.replace(tmp, link)
        return iter(())
