"""Hub model cards for RexBERT checkpoints.

The card is rendered with ``huggingface_hub.ModelCard`` from our Jinja template; evaluation numbers come
from ``rexbert eval`` results files (schema ``rexbert-eval/1``, :mod:`evaluation.reports`) and enter both
the Markdown body and the card's ``model-index`` metadata, so the Hub shows them as evaluation results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from model_cards.hub_folder import check_size, count_parameters, size_of
from rexbert_common.errors import UserError

TEMPLATE_PATH = Path(__file__).with_name("templates") / "rexbert_card.md.jinja"
PHASE_SUMMARY = "phase_summary.json"  # written by training beside each phase's final model

# (kind, task) of the results files -> the dataset named in model-index metadata.
_DATASETS = {
    ("mlm_recovery", "mlm_title"): ("tasksource/esci", "ESCI product titles (masked-token recovery)"),
    ("mlm_recovery", "mlm_description"): (
        "tasksource/esci",
        "ESCI product descriptions (masked-token recovery)",
    ),
    ("esci_similarity", "esci"): ("tasksource/esci", "Amazon ESCI (query-product similarity)"),
    ("esci_similarity", "stsb"): ("nyu-mll/glue", "GLUE STS-B"),
    ("glue", None): ("nyu-mll/glue", "GLUE"),
}
_TASK_TYPES = {
    "mlm_recovery": "fill-mask",
    "esci_similarity": "sentence-similarity",
    "glue": "text-classification",
    "mteb": "feature-extraction",
}


@dataclass
class CardInputs:
    """Everything a card is rendered from.

    Args:
        model_dir: Hub-ready folder (config.json, safetensors, tokenizer, code).
        repo_id: the Hub repository the card documents (``org/RexBERT-micro``).
        size: one of micro / mini / base / large, checked against the folder's parameter count (None: the
            size whose parameter count the folder has, else ``custom``).
        results_files: ``rexbert eval`` JSON files holding this model's records.
        result_model_name: keep only records whose ``model.name`` (or path) equals this (None: the records
            whose ``model.path`` is ``model_dir``; none is an error).
        license: SPDX id written to the card metadata.

    The training table comes from the ``phase_summary.json`` files training wrote (:func:`training_rows`).
    """

    model_dir: Path
    repo_id: str
    size: str | None = None
    results_files: list[Path] = field(default_factory=list)
    result_model_name: str | None = None
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise UserError(f"repo_id={self.repo_id!r}: expected 'owner/name'")


def _read_summary(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def _phase_row(summary: dict, source: Path) -> dict:
    try:
        phase = summary["phase_config"]
        data = summary["data"]
        tokens = summary.get("trained_tokens")
        if tokens is None:  # summaries written before trained_tokens: the trained share of the phase's rows
            tokens = f"≈{round(data['tokens'] * summary['trained_rows'] / max(1, data['rows'])):,}"
        else:
            tokens = f"{tokens:,}"
        loss = summary.get("train", {}).get("train_loss")
        return {
            "name": summary["phase"],
            "max_seq_len": phase["max_seq_len"],
            "tokens": tokens,
            "steps": summary["global_step"],
            "lr": phase["lr"],
            "weight_decay": phase["weight_decay"],
            "mask_ratio": phase["masking"]["mlm_probability"],
            "loss": f"{loss:.3f}" if isinstance(loss, (int, float)) else "–",
        }
    except (KeyError, TypeError) as error:
        raise UserError(f"{source}: not a training phase summary (missing {error})") from None


def training_rows(model_dir: str | Path) -> list[dict]:
    """Training-table rows (phase, sequence length, tokens trained, steps, LR, WD, mask ratio, loss) from
    what training recorded: ``model_dir/phase_summary.json`` and, for a phase's ``<run>/phaseN/final``
    folder, the earlier phases' ``<run>/phaseK/final/phase_summary.json``. Empty when nothing was recorded
    (a downloaded or exported model)."""
    model_dir = Path(model_dir)
    own = _read_summary(model_dir / PHASE_SUMMARY)
    if own is None:
        return []
    rows = []
    phase = str(own.get("phase", ""))
    if model_dir.name == "final" and model_dir.parent.name == phase and phase[-1:].isdigit():
        for k in range(1, int(phase[-1])):
            path = model_dir.parent.parent / f"phase{k}" / "final" / PHASE_SUMMARY
            earlier = _read_summary(path)
            if earlier is not None:
                rows.append(_phase_row(earlier, path))
    rows.append(_phase_row(own, model_dir / PHASE_SUMMARY))
    return rows


def _same_folder(a: str | None, b: Path) -> bool:
    return bool(a) and Path(a).expanduser().resolve() == b.expanduser().resolve()


def select_records(records: list[dict], model_dir: Path, model_name: str | None, source: str) -> list[dict]:
    """The records that describe the carded model (see :class:`CardInputs`); none is an error, so that
    another model's numbers never reach this model's card."""
    if model_name is not None:
        own = [r for r in records if model_name in (r["model"]["name"], r["model"].get("path"))]
        if not own:
            raise UserError(f"no result records for model {model_name!r} in {source}")
        return own
    own = [
        r
        for r in records
        if _same_folder(r["model"].get("path"), model_dir) or _same_folder(r["model"]["name"], model_dir)
    ]
    if own:
        return own
    names = ", ".join(sorted({r["model"]["name"] for r in records})) or "no model"
    raise UserError(
        f"{source} hold no results of {model_dir} (only of: {names}): evaluate that folder, or pass "
        "--result-model-name to name the carded model's records"
    )


def _load_records(inputs: CardInputs) -> list[dict]:
    from evaluation.reports import read_results

    # model-free baseline rows (`rexbert eval mlm`'s copy predictor) describe no model
    records = [r for r in read_results(inputs.results_files) if not r["config"].get("baseline")]
    source = ", ".join(map(str, inputs.results_files))
    own = select_records(records, inputs.model_dir, inputs.result_model_name, source)
    seen, duplicates = set(), set()
    for record in own:
        for row in record["results"]:
            key = (record["kind"], row["task"], row["setting"], row["metric"])
            (duplicates if key in seen else seen).add(key)
    if duplicates:
        listing = "; ".join(" ".join(k[1:]) for k in sorted(duplicates))
        raise UserError(
            f"{source}: the carded model has several results for {listing} (one per metric "
            "belongs on a card: pass only the results files of one evaluation run)"
        )
    return own


def eval_results_metadata(records: list[dict], model_name: str):
    """``huggingface_hub.EvalResult`` entries (model-index) for every result row on a Hub dataset.

    A row names its dataset, config and split (``dataset_id`` / ``dataset_config`` / ``dataset_split``,
    written by the evaluators); rows of older results files fall back to the dataset of their (kind, task)
    without a config. Rows on no Hub dataset (a local pair file) stay out of the metadata.
    """
    from huggingface_hub import EvalResult

    entries = []
    for record in records:
        kind = record["kind"]
        for row in record["results"]:
            known = _DATASETS.get((kind, row["task"]), _DATASETS.get((kind, None)))
            dataset_type = row.get("dataset_id") or (known[0] if known else None)
            if dataset_type is None:
                continue
            dataset_name = known[1] if known and known[0] == dataset_type else dataset_type
            entries.append(
                EvalResult(
                    task_type=_TASK_TYPES[kind],
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_config=row.get("dataset_config"),
                    dataset_split=row.get("dataset_split"),
                    metric_type=row["metric"],
                    metric_name=f"{row['task']} {row['setting']} {row['metric']}",
                    metric_value=round(float(row["value"]), 6),
                )
            )
    return entries


def _human(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count < 1e9 else f"{count / 1e9:.2f}B"


def build_model_card(inputs: CardInputs):
    """Render the card (a ``huggingface_hub.ModelCard``) for ``inputs.model_dir``."""
    from huggingface_hub import ModelCard, ModelCardData

    from evaluation.reports import markdown_report

    config_path = inputs.model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{config_path} not found: is {inputs.model_dir} a saved model folder?")
    raw_config = json.loads(config_path.read_text(encoding="utf-8"))
    architecture = architecture_rows(inputs.model_dir)
    parameters = count_parameters(inputs.model_dir)
    if inputs.size not in (None, "custom"):
        check_size(inputs.model_dir, inputs.size, parameters)
    size = inputs.size or size_of(inputs.model_dir, parameters)
    records = _load_records(inputs) if inputs.results_files else []
    model_name = inputs.repo_id.split("/")[-1]

    card_data = ModelCardData(
        language=["en"],
        license=inputs.license,
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["rexbert", "modernbert", "e-commerce", "encoder", "masked-lm"],
        model_name=model_name,
        eval_results=eval_results_metadata(records, model_name) or None,
    )
    tokenizer_config = inputs.model_dir / "tokenizer_config.json"
    mask_token = "[MASK]"
    if tokenizer_config.is_file():
        mask_token = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("mask_token") or mask_token
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=inputs.repo_id,
        size=size,
        num_parameters_human=_human(parameters),
        mask_token=mask_token if isinstance(mask_token, str) else mask_token.get("content", "[MASK]"),
        # the pipeline's final folders are plain ModernBERT; a folder saved from RexBertForMaskedLM ships code
        ships_code="auto_map" in raw_config,
        training_phases=training_rows(inputs.model_dir),
        results_table=markdown_report(records) if records else "",
        **architecture,
    )


def architecture_rows(model_dir: Path) -> dict:
    """The architecture table's values from the folder's config, whichever format it is in (RexBERT,
    ModernBERT as written by transformers 5 or 4.x): RexBertConfig reads them all."""
    from modeling_rexbert import RexBertConfig

    try:
        config = RexBertConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"{model_dir}: cannot read its config ({' '.join(str(error).split())})") from None
    return {
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "global_attn_every_n_layers": config.global_attn_every_n_layers,
        "global_rope_theta": f"{config.rope_theta_for('full_attention'):,.0f}",
        "local_attention": config.local_attention,
        "local_rope_theta": f"{config.rope_theta_for('sliding_attention'):,.0f}",
    }


def write_model_card(inputs: CardInputs) -> Path:
    """Render and write ``README.md`` into the model folder atomically."""
    from evaluation.reports import write_text

    card = build_model_card(inputs)
    return write_text(inputs.model_dir / "README.md", str(card))
