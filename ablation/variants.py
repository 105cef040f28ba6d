"""The RexBERT arms: one training recipe per (variant, seed), trained through ``training.curriculum``.

Every RexBERT arm of a seed shares phases 1-2 (same recipe, seed, data and masks: the same computation), so
they are trained once per seed in a *trunk* (``trunks/seed<k>/``) and each arm trains only its own phase 3
from the trunk's phase-2 weights and optimizer moments (the curriculum's ordinary phase hand-off). The arms
differ only in phase 3:

* ``anneal: false`` -- phase 3 continues phase 2's mixture and masking (phases 1-2 for the whole budget,
  same LR schedule and decay);
* ``anneal: true`` -- phase 3 anneals the domain share toward ``domain_end`` with phase 3's masking rate and
  ``guided_fraction`` Guided-MLM sequences.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from pathlib import Path

from ablation.config import AblationConfig, VariantConfig
from ablation.heldout import StudySplit, point_at_training
from training.recipe import PHASES, Recipe, load_recipe, recipe_from_dict, recipe_to_dict

REPO_ROOT = Path(__file__).resolve().parents[1]


def base_recipe(config: AblationConfig) -> Recipe:
    """The study's training recipe (with its overrides), before any arm's changes."""
    path = Path(config.recipe)
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    return load_recipe(path, config.recipe_overrides)


def study_recipe(config: AblationConfig, split: StudySplit, tokenizer_dir: str | None) -> Recipe:
    """The recipe every cell derives from: sources pointed at the training split, the study's shared
    tokenizer (when the recipe trains one), the phase budgets."""
    recipe = base_recipe(config)
    point_at_training(recipe, split)
    if tokenizer_dir is not None:
        recipe.tokenizer.name_or_path = tokenizer_dir
    for name, tokens in zip(PHASES, config.budget.phase_tokens()):
        recipe.phase(name).tokens = tokens
    return recipe


def arm_recipe(recipe: Recipe, variant: VariantConfig, seed: int, output_dir: str | os.PathLike) -> Recipe:
    """The validated recipe of one RexBERT arm and seed (``recipe`` is left unchanged)."""
    recipe = copy.deepcopy(recipe)
    recipe.seed = seed  # model init and masks
    recipe.data.seed = seed  # document order
    recipe.output_dir = str(output_dir)
    phase2, phase3 = recipe.phase2, recipe.phase3
    if variant.anneal:
        end = phase3.mixture.domain_end if variant.domain_end is None else variant.domain_end
        phase3.mixture = replace(phase3.mixture, domain_end=end)
        phase3.masking = replace(phase3.masking, guided_fraction=variant.guided_fraction)
    else:
        share = phase2.mixture.domain_end
        phase3.mixture = replace(phase2.mixture, domain_start=share, domain_end=share)
        phase3.masking = replace(phase2.masking, guided_fraction=0.0)
    # through the recipe loader again: the cross-field checks hold for the arm's values too
    return recipe_from_dict(recipe_to_dict(recipe), f"ablation arm {variant.name}, seed {seed}")


def overall_domain_share(recipe: Recipe) -> float:
    """Token-weighted domain share over the three phases (every schedule's mean is (start + end) / 2)."""
    phases = [recipe.phase(name) for name in PHASES]
    total = sum(p.tokens for p in phases)
    return sum(p.tokens * (p.mixture.domain_start + p.mixture.domain_end) / 2 for p in phases) / total


def train_shared_tokenizer(recipe: Recipe, folder: Path) -> str | None:
    """Train the recipe's BPE once for the whole study (on the training split only), through the
    curriculum's own tokenizer step; None when the recipe loads an existing tokenizer."""
    from training.curriculum import run_curriculum

    if recipe.tokenizer.name_or_path:
        return None
    if not (folder / "tokenizer" / "tokenizer.json").is_file():
        recipe = copy.deepcopy(recipe)
        recipe.output_dir = str(folder)
        run_curriculum(recipe, [], prepare_only=True)  # no phase: sources, tokenizer, miner only
    return str(folder / "tokenizer")


def train_trunk(recipe: Recipe, folder: Path) -> Path:
    """Phases 1-2 of one seed (resumed when interrupted, skipped when finished)."""
    from training.curriculum import run_curriculum

    trunk = copy.deepcopy(recipe)
    trunk.output_dir = str(folder)
    run_curriculum(trunk, list(PHASES[:2]), resume=True)
    return folder


def train_arm(recipe: Recipe, trunk: Path) -> Path:
    """Phase 3 of one arm from the trunk's phases 1-2 (linked into the arm's folder); returns the final
    model folder. An interrupted phase 3 resumes from its last intact checkpoint."""
    from training.curriculum import run_curriculum

    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in PHASES[:2]:
        link = out / name
        if not link.is_symlink():
            link.symlink_to((trunk / name).resolve(), target_is_directory=True)
    final = run_curriculum(recipe, [PHASES[2]], resume=True)[PHASES[2]]
    if final is None:
        raise RuntimeError(f"{out}: phase 3 stopped before its last step")
    return Path(final)


def phase_record(phase_dir: Path) -> dict:
    """What one finished phase trained: steps, real tokens consumed (the planned rows' lengths, checked
    against the rows the trainer reports it trained), its loss log, realised Guided MLM and domain share."""

    summary = json.loads((phase_dir / "final" / "phase_summary.json").read_text(encoding="utf-8"))
    planned = summary["planned_rows"]
    # the trainer's row counts cover its last train() call: the whole plan unless the phase was resumed
    every_row = (
        summary["trained_rows"] == planned and summary["trained_row_id_sum"] == planned * (planned - 1) // 2
    )
    if summary["resumed_from"] is None and not every_row:
        raise RuntimeError(f"{phase_dir}: the trainer did not train every planned row exactly once")
    consumed = summary["trained_tokens"]  # rows [0, planned) of the phase's prepared rows (BatchPlan)
    return {
        "phase": summary["phase"],
        "steps": summary["steps"],
        "tokens": consumed,
        "loss": [[e["step"], e["loss"]] for e in summary["log_history"]],
        "guided_share": summary["guided_mlm"]["share"],
        "realised_domain_share": summary["data"]["realised_domain_share"],
        "train_loss": summary["train"].get("train_loss"),
    }
