"""Step 8a, the output: an HF Dataset as parquet shards (``data/train-XXXXX-of-YYYYY.parquet``) + dataset
card.

``datasets.load_dataset("parquet", data_dir=...)`` or ``load_dataset(<folder>)`` reads it; the card's YAML
header declares the config so the Hub viewer picks the shards up after ``push``.
"""

from __future__ import annotations

from typing import Any

from curation.config import CurationConfig
from curation.io_utils import write_parquet_atomic, write_text_atomic

OUTPUT_COLUMNS = ("id", "text", "domain", "url", "source", "relevance_score", "language", "language_score")


def write_dataset(config: CurationConfig, paths, duplicates: dict[str, str]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = set(duplicates)
    kept = []
    for s in range(config.input.num_shards):
        t = pq.read_table(paths.work / "clean" / f"shard_{s:05d}.parquet", columns=list(OUTPUT_COLUMNS))
        if drop:
            mask = pa.array([i not in drop for i in t.column("id").to_pylist()])
            t = t.filter(mask)
        kept.append(t)
    table = pa.concat_tables(kept) if kept else pa.table({c: [] for c in OUTPUT_COLUMNS})
    per = max(1, config.output.docs_per_shard)
    n_files = max(1, -(-table.num_rows // per))
    data_dir = paths.dataset / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    names = {f"train-{k:05d}-of-{n_files:05d}.parquet" for k in range(n_files)}
    for stale in data_dir.glob("*.parquet"):  # a previous run with another shard count
        if stale.name not in names:
            stale.unlink()
    for k in range(n_files):
        write_parquet_atomic(data_dir / f"train-{k:05d}-of-{n_files:05d}.parquet", table.slice(k * per, per))
    return {
        "rows": table.num_rows,
        "files": n_files,
        "tokens": sum(len(x.split()) for x in table.column("text").to_pylist()),
    }


def write_card(config: CurationConfig, paths, report: dict[str, Any]) -> None:
    totals = report["totals"]
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        "language:",
        "- en",
        "task_categories:",
        "- fill-mask",
        "---",
        f"# {config.output.dataset_name}",
        "",
        "E-commerce text curated by the RexBERT Ecom-niverse pipeline (`rexbert curate`): domain "
        "selection (paper "
        "Table 1), LLM relevance labels distilled into per-domain fastText classifiers, English language ID, "
        "Gopher/C4/FineWeb quality heuristics, adult filtering and MinHash near-duplicate removal.",
        "",
        f"- documents: **{totals['docs_out']:,}** of {totals['docs_in']:,} read; "
        f"tokens (whitespace words): **{totals['tokens_out']:,}**",
        f"- relevance prompt version: `{report['labelling']['chosen_prompt_version']}`; labeler "
        f"`{report['labelling']['primary_labeler']}`; auditor `{report['labelling']['auditor_labeler']}`",
        "",
        "## Documents and tokens per domain",
        "",
        "| domain | route | docs | tokens | share of tokens |",
        "|---|---|---:|---:|---:|",
    ]
    for row in report["domains"]:
        lines.append(
            f"| {row['domain']} | {row['route']} | {row['docs']:,} | {row['tokens']:,} | "
            f"{row['token_share']:.1%} |"
        )
    lines += ["", "## Drops per reason", "", "| step | reason | docs |", "|---|---|---:|"]
    for step, reasons in report["drops"].items():
        for reason, n in reasons.items():
            lines.append(f"| {step} | {reason} | {n:,} |")
    lines += [
        "",
        "## Columns",
        "",
        "`id`, `text`, `domain` (FineFineWeb-style label), `url`, `source` (input file), `relevance_score` "
        "(fastText P(relevant); null for directly selected domains), `language`, `language_score`.",
        "",
        "See `report/report.md` beside this folder for labelling, audit and classifier metrics.",
        "",
    ]
    write_text_atomic(paths.dataset / "README.md", "\n".join(lines))
