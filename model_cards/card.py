"""Hub model cards for RexBERT checkpoints.

The card is rendered with ``huggingface_hub.ModelCard`` from our Jinja template; evaluation numbers come
from ``rexbert eval`` results files (schema ``rexbert-eval/1``, :mod:`evaluation.reports`) and enter both
the Markdown body and the card's ``model-index`` metadata, so the Hub shows them as evaluation results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from model_cards.hub_folder import count_parameters
from rexbert_common.errors import UserError

TEMPLATE_PATH = Path(__file__).with_name("templates") / "rexbert_card.md.jinja"
SIZE_NAMES = ("micro", "mini", "base", "large")

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
        size: one of micro / mini / base / large (inferred from the repo id when None).
        results_files: ``rexbert eval`` JSON files whose records describe this model.
        result_model_name: keep only records whose ``model.name`` equals this (None: the records whose
            ``model.path`` is ``model_dir``, else those of the only model in the files; several models and
            none of them ``model_dir`` is an error).
        training_phases: rows for the training table (see :func:`phases_from_recipe`).
        license: SPDX id written to the card metadata.
    """

    model_dir: Path
    repo_id: str
    size: str | None = None
    results_files: list[Path] = field(default_factory=list)
    result_model_name: str | None = None
    training_phases: list[dict] = field(default_factory=list)
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        if self.size is None:
            self.size = next((s for s in SIZE_NAMES if s in self.repo_id.lower()), "custom")
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise UserError(f"repo_id={self.repo_id!r}: expected 'owner/name'")


def phases_from_recipe(recipe_path: str | Path) -> list[dict]:
    """Training-table rows (name, sequence length, tokens, LR, WD, mask ratio) from a training recipe."""
    from training.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    rows = []
    for name in ("phase1", "phase2", "phase3"):
        phase = recipe.phase(name)
        rows.append(
            {
                "name": name,
                "max_seq_len": phase.max_seq_len,
                "tokens": f"{phase.tokens:,}",
                "lr": phase.lr,
                "weight_decay": phase.weight_decay,
                "mask_ratio": phase.masking.mlm_probability,
            }
        )
    return rows


def _read_results_file(path: Path) -> list[dict]:
    from evaluation.reports import validate

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise UserError(
            f"{path}: expected a `rexbert eval` results object, got a JSON {type(document).__name__}"
        )
    try:
        return validate(document)["records"]
    except (ValueError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: not a `rexbert eval` results file ({error})") from None


def _same_folder(a: str | None, b: Path) -> bool:
    return bool(a) and Path(a).expanduser().resolve() == b.expanduser().resolve()


def select_records(records: list[dict], model_dir: Path, model_name: str | None, source: str) -> list[dict]:
    """The records that describe the carded model (see :class:`CardInputs`); refuses when unclear."""
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
    names = sorted({r["model"]["name"] for r in records})
    if own or len(names) <= 1:
        return own or records
    raise UserError(
        f"{source} hold results of {len(names)} models ({', '.join(names)}) and none is "
        f"{model_dir}: pass --result-model-name to choose the carded model's"
    )


def _load_records(inputs: CardInputs) -> list[dict]:
    records = [r for path in inputs.results_files for r in _read_results_file(Path(path))]
    # model-free baseline rows (`rexbert eval mlm`'s copy predictor) describe no model
    records = [r for r in records if not r["config"].get("baseline")]
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
        raise FileNotFoundError(f"{config_path} not found: is {inputs.model_dir} a saved model folder?")
    config = json.loads(config_path.read_text(encoding="utf-8"))
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
        size=inputs.size,
        num_parameters_human=_human(count_parameters(inputs.model_dir)),
        mask_token=mask_token if isinstance(mask_token, str) else mask_token.get("content", "[MASK]"),
        # the pipeline's final folders are plain ModernBERT; a folder saved from RexBertForMaskedLM ships code
        ships_code="auto_map" in config,
        training_phases=inputs.training_phases,
        results_table=markdown_report(records) if records else "",
        **{
            key: config.get(key, "–")
            for key in (
                "num_hidden_layers",
                "hidden_size",
                "intermediate_size",
                "num_attention_heads",
                "vocab_size",
                "max_position_embeddings",
                "global_attn_every_n_layers",
                "global_rope_theta",
                "local_attention",
                "local_rope_theta",
            )
        },
    )


def write_model_card(inputs: CardInputs) -> Path:
    """Render and write ``README.md`` into the model folder atomically."""
    from evaluation.reports import write_text

    card = build_model_card(inputs)
    return write_text(inputs.model_dir / "README.md", str(card))
