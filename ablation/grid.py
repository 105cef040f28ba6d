"""The (variant, seed) grid: train, score and record each cell once; resumable at every level.

Layout under ``output_dir``::

    data/                       the train / held-out split (training files, held-out texts)
    evaluation_texts.json       texts scored / held for validation, (near-)duplicates dropped, copy baseline
    tokenizer/                  the study's BPE (when the recipe trains one), trained on the training split
    sweep/plain_lr/lr<rate>/    the plain arm's LR sweep (``ablation.sweep``), run before the plain cells
    trunks/seed<k>/             phases 1-2 of seed k, shared by every RexBERT arm of that seed
    cells/<variant>/seed<k>/    the arm's training folder (phase 3, or the plain arm) and ``result.json``

A cell is finished when its ``result.json`` exists: it is written atomically after training and scoring,
so a rerun keeps every finished cell and trains none of them again. An interrupted cell resumes from its
training's last intact checkpoint (the trunk and phase 3 through the curriculum's ``--resume``, the plain
arm through the Trainer's) -- or from its finished model when only the scoring was interrupted. Cells run
seed by seed, so a study stopped early has every arm for the seeds it finished.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ablation.config import AblationConfig, VariantConfig
from rexbert_common import files

if TYPE_CHECKING:
    from ablation.heldout import EvaluationTexts, StudySplit
    from training.attribute_miner import AttributeMiner
    from training.recipe import Recipe

RESULT_FILE = "result.json"
NOTES_FILE = "evaluation_texts.json"  # the study's evaluation texts in numbers (see evaluation_notes)


@dataclass(frozen=True)
class Cell:
    variant: VariantConfig
    seed: int

    def folder(self, output_dir: str | os.PathLike) -> Path:
        return Path(output_dir) / "cells" / self.variant.name / f"seed{self.seed}"

    def result_path(self, output_dir: str | os.PathLike) -> Path:
        return self.folder(output_dir) / RESULT_FILE


def cells(config: AblationConfig) -> list[Cell]:
    """Every cell, seed by seed."""
    return [Cell(variant, seed) for seed in config.seeds for variant in config.arms()]


def write_json_atomic(path: Path, document: dict) -> None:
    files.write_json_atomic(path, document, default=str)


@dataclass
class Study:
    """Everything the cells share, prepared once: the split, the study recipe, texts, the miner."""

    config: AblationConfig
    split: StudySplit
    recipe: Recipe
    texts: EvaluationTexts
    miner: AttributeMiner

    @classmethod
    def prepare(cls, config: AblationConfig) -> Study:
        from ablation.heldout import evaluation_texts, split_study_data
        from ablation.variants import base_recipe, study_recipe, train_shared_tokenizer
        from rexbert_common.data import data_dir

        out = Path(config.output_dir)
        split = split_study_data(
            data_dir(), out / "data", config.heldout.general_share, config.heldout.min_chars
        )
        unsplit = base_recipe(config)
        tokenizer = None
        if not unsplit.tokenizer.name_or_path:
            tokenizer = train_shared_tokenizer(study_recipe(config, split, None), out / "tokenizer")
        recipe = study_recipe(config, split, tokenizer)
        evaluation = config.evaluation
        # held for validation whenever a sweep is configured, so every shard writes the same notes
        validation = config.baseline.sweep_validation_texts if config.baseline.lr_sweep else 0
        texts = evaluation_texts(
            split, recipe, evaluation.max_texts, evaluation.entity_max_texts, evaluation.seed, validation
        )
        write_json_atomic(out / NOTES_FILE, evaluation_notes(recipe, texts, config))
        return cls(config, split, recipe, texts, _fitted_miner(recipe))


def evaluation_notes(recipe, texts: EvaluationTexts, config: AblationConfig) -> dict:
    """What the report says about the evaluation texts: how many were scored and held for validation,
    the share dropped as (near-)duplicates of training text, and the copy baseline (the leak floor)."""
    from ablation.scoring import copy_baseline
    from training.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(recipe.tokenizer.name_or_path)
    return {
        "scored_texts": {name: len(values) for name, values in texts.fields.items()},
        "entity_texts": len(texts.products),
        "validation_texts": {name: len(values) for name, values in texts.validation.items()},
        "heldout_filter": texts.filtered,
        "copy_baseline": copy_baseline(tokenizer, texts, config.evaluation),
    }


def read_notes(config: AblationConfig) -> dict | None:
    path = Path(config.output_dir) / NOTES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fitted_miner(recipe):
    """The attribute miner, its brand lexicon fitted on the training split's product sources (as the
    curriculum fits it), fixed for every cell's entity evaluation."""
    import numpy as np

    from training.attribute_miner import AttributeMiner
    from training.data import load_source

    mined = [s for s in (*recipe.data.general, *recipe.data.domain) if s.mine_attributes]
    n = recipe.data.miner_sample_docs
    texts = [
        text
        for i, src in enumerate(mined)
        for text in load_source(src, recipe.data.shuffle_buffer_docs).sample(n, np.random.default_rng([0, i]))
    ]
    return AttributeMiner().fit(texts)


def train_cell(study: Study, cell: Cell) -> tuple[Path, list[dict], bool]:
    """Train one cell (resuming what exists); returns (final model folder, phase records, remote code?)."""
    from ablation.baseline import baseline_recipe, train_baseline
    from ablation.variants import arm_recipe, phase_record, train_arm, train_trunk

    config, folder = study.config, cell.folder(study.config.output_dir)
    if cell.variant.kind == "hf_mlm":
        from dataclasses import replace

        from ablation.sweep import chosen_lr, point_folder

        lr = chosen_lr(config)
        settings = replace(config.baseline, lr=lr, lr_sweep=[])
        swept = config.baseline.lr_sweep and cell.seed == config.seeds[0]
        train_dir = point_folder(config.output_dir, lr) / "train" if swept else folder / "train"  # same run
        final, record = train_baseline(
            baseline_recipe(study.recipe, settings, cell.seed, train_dir), settings
        )
        return final, [{**record, "learning_rate": lr or study.recipe.phase1.lr}], False
    recipe = arm_recipe(study.recipe, cell.variant, cell.seed, folder / "train")
    trunk = train_trunk(recipe, Path(config.output_dir) / "trunks" / f"seed{cell.seed}")
    final = train_arm(recipe, trunk)
    phases = [phase_record(Path(recipe.output_dir) / name) for name in ("phase1", "phase2", "phase3")]
    return final, phases, True


def check_budget(cell: Cell, consumed: int, budget) -> None:
    """Refuse a cell whose consumed tokens stray from the budget by more than ``budget.tolerance``."""
    from rexbert_common.errors import UserError

    if abs(consumed - budget.tokens) > budget.tolerance * budget.tokens:
        raise UserError(
            f"{cell.variant.name} seed {cell.seed} trained {consumed} tokens for a budget of {budget.tokens} "
            f"(more than budget.tolerance = {budget.tolerance:g} apart): raise budget.tokens or lower the "
            "phases' batch_size"
        )


def loss_curve(phases: list[dict]) -> list[list[float]]:
    """[tokens, loss] points over the cell's phases (a phase's tokens spread evenly over its steps)."""
    points, offset = [], 0
    for phase in phases:
        per_step = phase["tokens"] / max(1, phase["steps"])
        points += [[offset + step * per_step, loss] for step, loss in phase["loss"]]
        offset += phase["tokens"]
    return points


def run_cell(study: Study, cell: Cell) -> dict:
    """Train and score one cell and write its result atomically; returns the result."""
    from ablation.scoring import score_model

    start = time.perf_counter()
    final, phases, remote_code = train_cell(study, cell)
    trained = time.perf_counter()
    check_budget(cell, sum(p["tokens"] for p in phases), study.config.budget)
    scores = score_model(
        str(final), study.texts, study.miner, study.config.evaluation, cell.seed, remote_code
    )
    curve = loss_curve(phases)
    tail = [loss for _, loss in curve[-max(1, len(curve) // 10) :]]
    result = {
        "variant": cell.variant.name,
        "seed": cell.seed,
        "settings": asdict(cell.variant),
        "tokens": {"budget": study.config.budget.tokens, "consumed": sum(p["tokens"] for p in phases)},
        "metrics": {**scores, "final_train_loss": sum(tail) / len(tail) if tail else None},
        "phases": [{k: v for k, v in p.items() if k != "loss"} for p in phases],
        "loss_curve": curve,
        "model": str(final),
        "seconds": {"train": round(trained - start, 1), "score": round(time.perf_counter() - trained, 1)},
    }
    write_json_atomic(cell.result_path(study.config.output_dir), result)
    return result


def run_grid(
    config: AblationConfig, log: Callable[[str], None] = print, shard: tuple[int, int] = (0, 1)
) -> list[dict]:
    """Run the unfinished cells of this shard and return every finished cell's result.

    ``shard = (i, n)``: this process trains the seeds at positions i, i + n, ... of ``config.seeds`` (a
    seed's arms share its trunk, so seeds are the unit of parallel work: one shard per GPU or node).
    """
    from ablation.sweep import POINT_FILE, point_folder, run_point, sweep_done, sweep_rates

    index, count = shard
    study = None
    for j, lr in enumerate(sweep_rates(config)):  # the plain arm's LR sweep first: its cells need it
        if j % count != index or (point_folder(config.output_dir, lr) / POINT_FILE).is_file():
            continue
        study = study or Study.prepare(config)
        log(f"[ablate] plain-arm LR sweep: lr {lr:g}")
        point = run_point(study, lr)
        log(f"[ablate] plain-arm LR sweep: lr {lr:g} scores {point['score']:.4f} on validation text")
    for cell in cells(config):
        if config.seeds.index(cell.seed) % count != index:
            continue
        name = f"[ablate] {cell.variant.name} seed {cell.seed}"
        path = cell.result_path(config.output_dir)
        if path.is_file():
            log(f"{name}: finished earlier, kept ({path})")
            continue
        if cell.variant.kind == "hf_mlm" and not sweep_done(config):
            log(f"{name}: waits for the LR sweep points of the other shards; rerun once they are done")
            continue
        study = study or Study.prepare(config)
        log(f"{name}: training")
        result = run_cell(study, cell)
        log(
            f"{name}: done in {sum(result['seconds'].values()):.0f} s ({result['tokens']['consumed']} tokens)"
        )
    return finished_results(config)


def finished_results(config: AblationConfig) -> list[dict]:
    """The results of every finished cell (seed by seed, arms in config order)."""
    paths = [c.result_path(config.output_dir) for c in cells(config)]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]
