"""The plain arm's peak learning rate, chosen on validation text -- never on the text the cells are scored on.

The RexBERT arms' peak LR (the recipe's 3e-3) is tuned for StableAdamW with a warmup-stable-decay schedule.
The plain arm trains with ``torch.optim.AdamW`` and a linear schedule; giving it the same peak would mix
"the recipe" with "a learning rate tuned for another optimizer". So every rate of ``baseline.lr_sweep``
trains the plain arm once (the study's first seed, the full token budget) and is scored by its mean top-1
masked-token accuracy over the validation texts (``EvaluationTexts.validation``: held-out texts after the
scored ones, disjoint from them) and the study's protocols. The best rate then trains every seed; the first
seed's cell is the sweep run of that rate (the same training, not repeated).

Layout: ``<output_dir>/sweep/plain_lr/lr<rate>/`` (training folder + ``point.json``), resumable point by
point; ``--shard i/n`` processes share the points (point ``j`` belongs to shard ``j mod n``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ablation.config import AblationConfig
from ablation.grid import Study, write_json_atomic

POINT_FILE = "point.json"


def point_folder(output_dir: str | Path, lr: float) -> Path:
    return Path(output_dir) / "sweep" / "plain_lr" / f"lr{lr:g}"


def validation_score(metrics: dict[str, float]) -> float:
    """The sweep's criterion: mean top-1 over the validation fields and protocols."""
    top1 = [value for key, value in metrics.items() if key.endswith("_top1")]
    return sum(top1) / len(top1)


def run_point(study: Study, lr: float) -> dict:
    """Train (or keep) the plain arm at peak ``lr`` with the first seed, score it on the validation texts,
    write ``point.json`` atomically; returns the point."""
    from ablation.baseline import baseline_recipe, train_baseline
    from ablation.heldout import EvaluationTexts
    from ablation.scoring import mlm_recovery
    from evaluation.mlm_scoring import load_mlm

    config = study.config
    folder = point_folder(config.output_dir, lr)
    settings = replace(config.baseline, lr=lr, lr_sweep=[])
    recipe = baseline_recipe(study.recipe, settings, config.seeds[0], folder / "train")
    final, record = train_baseline(recipe, settings)
    model, tokenizer = load_mlm(str(final))
    validation = EvaluationTexts(fields=study.texts.validation, products=[])
    metrics = mlm_recovery(model, tokenizer, validation, config.evaluation)
    point = {
        "lr": lr,
        "seed": config.seeds[0],
        "score": validation_score(metrics),
        "validation_metrics": metrics,
        "validation_texts": {name: len(texts) for name, texts in study.texts.validation.items()},
        "tokens": record["tokens"],
        "model": str(final),
    }
    write_json_atomic(folder / POINT_FILE, point)
    return point


def sweep_rates(config: AblationConfig) -> list[float]:
    """The rates to sweep: ``baseline.lr_sweep`` when the study has a plain arm, else none."""
    has_plain_arm = any(arm.kind == "hf_mlm" for arm in config.arms())
    return list(config.baseline.lr_sweep) if has_plain_arm else []


def finished_points(config: AblationConfig) -> list[dict]:
    paths = [point_folder(config.output_dir, lr) / POINT_FILE for lr in config.baseline.lr_sweep]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]


def chosen_lr(config: AblationConfig) -> float | None:
    """The plain arm's peak LR: the best swept rate (None while the sweep is unfinished), the fixed
    ``baseline.lr`` without a sweep, or None = the recipe's (``baseline.lr`` unset and no sweep)."""
    if not config.baseline.lr_sweep:
        return config.baseline.lr
    points = finished_points(config)
    if len(points) < len(config.baseline.lr_sweep):
        return None
    return max(points, key=lambda p: (p["score"], -p["lr"]))["lr"]  # a tie goes to the smaller rate


def sweep_done(config: AblationConfig) -> bool:
    return len(finished_points(config)) == len(sweep_rates(config))


def sweep_summary(config: AblationConfig) -> dict | None:
    """Every point and the chosen rate (for the report); None without a finished sweep."""
    if not sweep_rates(config) or not sweep_done(config):
        return None
    points = sorted(finished_points(config), key=lambda p: p["lr"])
    return {"criterion": "mean validation top-1", "points": points, "chosen": chosen_lr(config)}
