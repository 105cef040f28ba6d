"""One JSON results schema for every evaluator, Markdown tables (paper Tables 3-4) and a Figure-4 bar chart.

Schema ``rexbert-eval/1`` (a results file is one JSON object)::

    {"schema": "rexbert-eval/1",
     "records": [                                  # one per (evaluator run, model)
       {"kind": "mlm_recovery" | "esci_similarity" | "glue" | "mteb",
        "model": {"name": str, "path": str, "num_parameters": int | null},
        "config": {...},                           # the evaluator's config dataclass, as a dict
        "results": [                               # tidy rows: one per metric
          {"task": str,                            # "mlm_title", "mlm_description", "esci", "stsb", ...
           "setting": str,                         # "block128" / "cosent" / "zero_shot" / "finetune" ...
           "metric": str,                          # "top1_accuracy", "spearman", "pearson", "accuracy", ...
           "value": float,                         # mean over runs (seeds / folds) in [0, 1] (not %)
           "sd": float | null,                     # sample sd over runs (null for a single deterministic run)
           "n": int,                               # scored units (masked tokens / words / held-out pairs)
           "runs": [float, ...],                   # per-seed or per-fold values ([] when not applicable)
           # optional keys (added later; readers must not require them):
           "dataset_id": str, "dataset_config": str,  # a real Hub dataset + config (card metadata)
           "dataset_split": str,                   # the split the value was measured on
           "protocol": str, "packing": str, "block_size": int, ...}],  # evaluator-specific keys
        "created_utc": "YYYY-MM-DDTHH:MM:SSZ",
        "versions": {"torch": str, "transformers": str, "sentence_transformers": str | null}}]}

Model cards read ``records[*].results`` and may filter on (kind, task, setting, metric).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path

from rexbert_common.files import atomic_write, write_json_atomic, write_text_atomic

SCHEMA = "rexbert-eval/1"
KINDS = ("mlm_recovery", "esci_similarity", "glue", "mteb")


def result_row(
    task: str,
    setting: str,
    metric: str,
    value: float,
    n: int,
    runs: Sequence[float] = (),
    sd: float | None = None,
) -> dict:
    return {
        "task": task,
        "setting": setting,
        "metric": metric,
        "value": float(value),
        "sd": None if sd is None else float(sd),
        "n": int(n),
        "runs": [float(r) for r in runs],
    }


def dataset_fields(dataset_id: str, config: str, split: str | None) -> dict:
    """The optional row keys naming the public dataset behind a value (model-card ``model-index``).

    ``split`` None (a value measured on several splits at once) leaves ``dataset_split`` out.
    """
    fields = {"dataset_id": dataset_id, "dataset_config": config}
    return {**fields, "dataset_split": split} if split is not None else fields


def _versions() -> dict:
    import torch
    import transformers

    try:
        import sentence_transformers

        st_version = sentence_transformers.__version__
    except ImportError:  # pragma: no cover - a core dependency
        st_version = None
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": st_version,
    }


def make_record(
    kind: str,
    model_name: str,
    config,
    results: list[dict],
    num_parameters: int | None = None,
    model_path: str | None = None,
) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    config = asdict(config) if is_dataclass(config) else dict(config)
    return {
        "kind": kind,
        "model": {"name": model_name, "path": model_path or model_name, "num_parameters": num_parameters},
        "config": config,
        "results": results,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
    }


def validate(document: dict) -> dict:
    """Check a results document against the schema; returns it, raises ValueError naming the field."""
    if document.get("schema") != SCHEMA:
        raise ValueError(f"schema={document.get('schema')!r}: expected {SCHEMA!r}")
    for i, record in enumerate(document.get("records", [])):
        for field in ("kind", "model", "config", "results", "created_utc", "versions"):
            if field not in record:
                raise ValueError(f"records[{i}]: missing field {field!r}")
        if record["kind"] not in KINDS:
            raise ValueError(f"records[{i}].kind={record['kind']!r}: expected one of {KINDS}")
        for j, row in enumerate(record["results"]):
            for field in ("task", "setting", "metric", "value", "sd", "n", "runs"):
                if field not in row:
                    raise ValueError(f"records[{i}].results[{j}]: missing field {field!r}")
    return document


def write_results(path: str | Path, records: Iterable[dict]) -> Path:
    """Write atomically (temp file + os.replace) so a crash never leaves half a results file."""
    document = validate({"schema": SCHEMA, "records": list(records)})
    return write_json_atomic(path, document, indent=2, allow_nan=True)


def read_results(paths: Iterable[str | Path]) -> list[dict]:
    """The records of ``rexbert eval`` results files; a file that is not one is a one-line error naming it."""
    from rexbert_common.errors import UserError

    records = []
    for path in map(Path, paths):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise UserError(
                f"{path}: expected a `rexbert eval` results object, got a JSON {type(document).__name__}"
            )
        try:
            records += validate(document)["records"]
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            raise UserError(f"{path}: not a `rexbert eval` results file ({error})") from None
    return records


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (``rexbert_common.files``)."""
    return write_text_atomic(path, text)


# --------------------------------------------------------------------------------------------- tables
def _cell(row: dict | None, percent: bool) -> str:
    if row is None:
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{row['value'] * scale:.2f}" if percent else f"{row['value']:.4f}"
    if row.get("sd") is not None and len(row.get("runs", [])) > 1:
        text += f" ± {row['sd'] * scale:.2f}" if percent else f" ± {row['sd']:.4f}"
    return text


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _lookup(records: list[dict], kind: str) -> dict:
    table = {}
    for record in records:
        if record["kind"] != kind:
            continue
        for row in record["results"]:
            table[(record["model"]["name"], row["task"], row["setting"], row["metric"])] = row
    return table


def _models(records: list[dict], kind: str) -> list[str]:
    return list(dict.fromkeys(r["model"]["name"] for r in records if r["kind"] == kind))


def _block_size(row: dict) -> int:
    """Block size of an MLM row (a field since protocol-keyed settings; digits of ``block128`` before)."""
    if "block_size" in row:
        return int(row["block_size"])
    digits = "".join(filter(str.isdigit, row["setting"].split("@")[0].rsplit("-", 1)[-1]))
    return int(digits or 0)


def mlm_table(records: list[dict], metric_prefix: str = "top") -> str:
    """Table 3 layout: rows = model x top-k, columns = (title | description) x setting, in %.

    A setting names protocol, packing and block size (``span-block-128``), so runs made with different
    protocols stay in separate columns.
    """
    table = _lookup(records, "mlm_recovery")
    columns = sorted(
        {(t, s): row for (_, t, s, _), row in table.items()}.items(),
        key=lambda item: (item[0][0] != "mlm_title", item[0][0], _block_size(item[1]), item[0][1]),
    )
    columns = [key for key, _ in columns]
    metrics = sorted(
        {m for (*_, m) in table if m.startswith(metric_prefix)},
        key=lambda m: (m.split("_", 1)[1], int("".join(filter(str.isdigit, m.split("_")[0])) or 0)),
    )
    header = ["model", "metric"] + [f"{t.removeprefix('mlm_')} {s}" for t, s in columns]
    rows = [
        [model, metric] + [_cell(table.get((model, t, s, metric)), True) for t, s in columns]
        for model in _models(records, "mlm_recovery")
        for metric in metrics
    ]
    return _markdown(header, rows)


def copy_floor_note(records: list[dict]) -> str:
    """The ``copy`` baseline's share recovered from *other* texts of a block (what ``block`` packing adds to
    the floor; 0 with ``truncate``), one line per setting; empty without a copy baseline."""
    parts = [
        f"{row['task'].removeprefix('mlm_')} {row['setting']} {row['value'] * 100:.2f}%"
        for record in records
        if record["kind"] == "mlm_recovery" and record["config"].get("baseline") == "copy"
        for row in record["results"]
        if row["metric"] == "across_texts_top1_accuracy"
    ]
    if not parts:
        return ""
    return (
        "\nThe `copy (baseline)` row predicts a masked token by copying what follows the same left-context "
        "token elsewhere in the block, without a model: a model is only worth its distance above it. "
        "Top-1 copied from other texts of the block (the packing leak): " + "; ".join(parts) + ".\n"
    )


def glue_table(records: list[dict], published: Sequence | None = None) -> str:
    """Table 4 layout: rows = task (metric), columns = measured models, mean ± sd in %.

    Published figures (:mod:`evaluation.published`; default: those of the model sizes named in the records'
    configs) follow in their own columns headed ``<model> (published)``, with their citations under the
    table, so a published number is never read as one measured here. A published metric that no measured
    row has (STS-B's unspecified ``correlation``) gets its own row.
    """
    from evaluation.published import published_glue

    table = _lookup(records, "glue")
    keys = list(dict.fromkeys((t, s, m) for (_, t, s, m) in table))
    models = _models(records, "glue")
    if published is None:
        sizes = {r["config"].get("size") for r in records if r["kind"] == "glue"}
        published = published_glue({s for s in sizes if s})
    measured_tasks = {t for t, _, _ in keys}
    published = [p for p in published if p.task in measured_tasks]
    shown = list(dict.fromkeys(p.model for p in published))
    by_key = {(p.model, p.task, p.metric): p for p in published}
    row_keys = [(t, m) for t, _, m in keys]
    row_keys += [k for k in dict.fromkeys((p.task, p.metric) for p in published) if k not in row_keys]
    setting = {(t, m): s for t, s, m in keys}
    rows = []
    for task, metric in row_keys:
        measured = [
            _cell(table.get((model, task, setting.get((task, metric)), metric)), True) for model in models
        ]
        quoted = [
            f"{by_key[(name, task, metric)].value * 100:.2f}" if (name, task, metric) in by_key else "–"
            for name in shown
        ]
        rows.append([f"{task} ({metric})"] + measured + quoted)
    text = _markdown(["task"] + models + [f"{name} (published)" for name in shown], rows)
    sources = list(dict.fromkeys(p.source for p in published))
    if sources:
        text += "\n" + "\n".join(f"Published: {source}." for source in sources) + "\n"
    return text


def _model_rows_table(records: list[dict], kind: str) -> str:
    """Rows = model, columns = (task, setting, metric) of one kind's runs, values as fractions."""
    table = _lookup(records, kind)
    keys = list(dict.fromkeys((t, s, m) for (_, t, s, m) in table))
    models = _models(records, kind)
    rows = [[model] + [_cell(table.get((model, t, s, m)), False) for t, s, m in keys] for model in models]
    return _markdown(["model"] + [f"{t} {s} {m}" for t, s, m in keys], rows)


def similarity_table(records: list[dict]) -> str:
    """Rows = model, columns = (task, setting, metric) of the similarity runs (Spearman / Pearson)."""
    return _model_rows_table(records, "esci_similarity")


def mteb_table(records: list[dict]) -> str:
    """Rows = model, columns = (MTEB task, metric) of ``rexbert eval mteb`` runs."""
    return _model_rows_table(records, "mteb")


def markdown_report(records: list[dict]) -> str:
    parts = []
    if any(r["kind"] == "mlm_recovery" for r in records):
        parts.append(
            "## Masked-token recovery (accuracy %)\n\n" + mlm_table(records) + copy_floor_note(records)
        )
    if any(r["kind"] == "esci_similarity" for r in records):
        parts.append("## Semantic similarity (cosine; mean ± sd over folds)\n\n" + similarity_table(records))
    if any(r["kind"] == "glue" for r in records):
        parts.append("## GLUE (dev; mean ± sd over seeds, %)\n\n" + glue_table(records))
    if any(r["kind"] == "mteb" for r in records):
        parts.append("## MTEB (test split, zero-shot)\n\n" + mteb_table(records))
    return "\n".join(parts)


def similarity_bar_chart(
    records: list[dict],
    path: str | Path,
    task: str | None = "esci",
    metric: str = "spearman",
    setting: str | None = None,
) -> Path:
    """Figure 4: one bar per model (mean Spearman, sd as error bar), PNG written atomically.

    ``task=None`` draws every similarity task present (labels name the task), so a report of STS-B-only
    results still gets its chart.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (r["model"]["name"], row)
        for r in records
        if r["kind"] == "esci_similarity"
        for row in r["results"]
        if (task is None or row["task"] == task)
        and row["metric"] == metric
        and (setting is None or row["setting"] == setting)
    ]
    if not bars:
        raise ValueError(
            f"no esci_similarity results with task={task!r} metric={metric!r} setting={setting!r}"
        )
    labels = [
        f"{name}\n({row['task'] + ' ' if task is None else ''}{row['setting']})" if setting is None else name
        for name, row in bars
    ]
    figure, axis = plt.subplots(figsize=(max(4.0, 1.2 * len(bars)), 3.5))
    axis.bar(
        range(len(bars)),
        [row["value"] for _, row in bars],
        yerr=[row["sd"] or 0.0 for _, row in bars],
        capsize=4,
        color="#4C72B0",
    )
    axis.set_xticks(range(len(bars)), labels, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(f"{metric.capitalize()} correlation")
    axis.set_title(f"{task.upper() if task else 'Semantic'} similarity")
    figure.tight_layout()
    try:
        return atomic_write(path, lambda temp: figure.savefig(temp, dpi=150, format="png"))
    finally:
        plt.close(figure)
