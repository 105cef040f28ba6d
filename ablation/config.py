"""The ablation study file: which variants, how many tokens, which seeds, what to measure.

One schema serves a CPU study and a GPU cluster study: only sizes and sources change. Loaded through the
shared loader (:mod:`rexbert_common.config`), so every mistake is one line naming the file, the dotted
field and the value, and ``--set budget.tokens=2e6`` overrides work as for recipes.

Example (``experiments/cpu_study.yaml``)::

    name: cpu_study
    recipe: training/recipes/demo.yaml
    seeds: [0, 1, 2]
    budget: {tokens: 4000000, phase1: 0.72, phase2: 0.03}      # phase 3 gets the rest
    variants:
      - {name: a_phases12, anneal: false}
      - {name: b_anneal, guided_fraction: 0.0}
      - {name: c_guided, guided_fraction: 0.05}
      - {name: d_plain_mlm, kind: hf_mlm}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rexbert_common.config import ConfigError, checked, load_config

VARIANT_KINDS = ("rexbert", "hf_mlm")
MLM_PROTOCOLS = ("span", "collator")


@dataclass
class BudgetConfig:
    """The token budget every variant trains on (real, non-pad tokens).

    Args:
        tokens: total tokens per (variant, seed) cell, identical for every variant.
        phase1: share of ``tokens`` in phase 1 (general pre-training) of the RexBERT variants.
        phase2: share in phase 2 (context extension); phase 3 gets the rest. Variant (a) has no annealing:
            its phase 3 continues phase 2's data and masking, so it trains phases 1-2 for the whole budget
            under the same LR schedule (the decay included) and differs from (b) only in what is annealed.
        tolerance: largest relative difference allowed between a cell's consumed tokens and ``tokens``
            (whole optimizer steps are trained, so a phase loses less than one step of rows).
    """

    tokens: int = checked(4_000_000, gt=0)
    phase1: float = checked(0.72, gt=0, lt=1)
    phase2: float = checked(0.03, gt=0, lt=1)
    tolerance: float = checked(0.02, gt=0, lt=1)

    def phase_tokens(self) -> tuple[int, int, int]:
        """Tokens of phases 1, 2, 3 (summing to ``tokens``)."""
        first = round(self.tokens * self.phase1)
        second = round(self.tokens * self.phase2)
        return first, second, self.tokens - first - second


@dataclass(frozen=True)
class VariantConfig:
    """One arm of the study.

    Args:
        name: label in folders, tables and plots (letters, digits, ``_`` and ``-``).
        kind: ``rexbert`` (the curriculum, ``training/``) or ``hf_mlm`` (the plain recipe a user would
            otherwise run: transformers' ``ModernBertForMaskedLM``, ``DataCollatorForLanguageModeling``,
            ``torch.optim.AdamW``, a linear schedule, no curriculum; see ``baseline``).
        anneal: phase 3 anneals the mixture toward the domain corpus with phase 3's masking rate
            (False: phase 3 continues phase 2's mixture and masking -- "phases 1-2 only").
        guided_fraction: share of phase-3 sequences masked on mined entity/attribute spans (Guided MLM).
        domain_end: phase-3 domain share at the end of the anneal (None = the recipe's ``phase3``).
    """

    name: str
    kind: str = checked("rexbert", choices=VARIANT_KINDS)
    anneal: bool = True
    guided_fraction: float = checked(0.0, ge=0, le=1)
    domain_end: float | None = checked(None, ge=0, le=1)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"variant name {self.name!r} must be letters, digits, '_' or '-'")
        if not self.anneal and (self.guided_fraction > 0 or self.domain_end is not None):
            raise ValueError(f"variant {self.name!r}: guided_fraction / domain_end need anneal: true")

    def settings(self) -> tuple:
        """What the variant trains (two variants with equal settings are one arm)."""
        if self.kind == "hf_mlm":
            return (self.kind,)
        return (self.kind, self.anneal, self.guided_fraction, self.domain_end)


@dataclass
class SweepConfig:
    """Knobs that add annealed RexBERT variants to ``variants`` (duplicates of an arm are dropped).

    Args:
        guided_fractions: one variant per Guided-MLM share, e.g. ``[0.0, 0.05, 0.2]`` (``guided_5pct`` ...).
        domain_shares: one variant per phase-3 final domain share, e.g. ``[0.5, 0.95]``, with
            ``sweep_guided_fraction`` Guided MLM.
        sweep_guided_fraction: the Guided-MLM share of the domain-share variants.
    """

    guided_fractions: list[float] = checked(default_factory=list, ge=0, le=1)
    domain_shares: list[float] = checked(default_factory=list, ge=0, le=1)
    sweep_guided_fraction: float = checked(0.05, ge=0, le=1)


@dataclass
class BaselineConfig:
    """The plain-MLM arm (``kind: hf_mlm``): what a user would run with transformers alone.

    Args:
        mlm_probability: ``DataCollatorForLanguageModeling`` masking rate (BERT / transformers default).
        lr_sweep: AdamW peak LRs tried (``ablation.sweep``): each trains the arm once (first seed, full
            budget) and is scored on validation texts disjoint from the scored held-out text; the best
            trains every seed. The recipe's peak LR is tuned for StableAdamW + WSD, not for AdamW + linear.
        sweep_validation_texts: validation texts per field (held-out texts after the scored ones).
        lr: a fixed AdamW peak LR instead of the sweep (``lr_sweep: []``; None then = the recipe's
            ``phase1.lr``).
        weight_decay: AdamW weight decay (transformers' examples use 0.01).
        warmup_fraction: share of steps with linear warmup, then linear decay to 0.
        max_grad_norm: gradient clipping (the Trainer's default).
        domain_share: domain share of the (unannealed) mixture; None = the token-weighted share of the
            annealed RexBERT recipe over all its phases, so both arms see the same data mixture overall.
    """

    mlm_probability: float = checked(0.15, gt=0, lt=1)
    lr_sweep: list[float] = checked(default_factory=lambda: [3e-4, 1e-3, 3e-3], gt=0)
    sweep_validation_texts: int = checked(200, ge=1)
    lr: float | None = checked(None, gt=0)
    weight_decay: float = checked(0.01, ge=0)
    warmup_fraction: float = checked(0.05, ge=0, lt=1)
    max_grad_norm: float = checked(1.0, ge=0)
    domain_share: float | None = checked(None, ge=0, le=1)


@dataclass
class EsciEval:
    """ESCI similarity (``evaluation.esci_similarity``): CoSENT fine-tuning, grouped folds, Spearman.

    Args: folds, epochs, max_pairs: as ``rexbert eval esci``; the cell's seed seeds the folds.
    """

    folds: int = checked(2, ge=2)
    epochs: float = checked(1.0, ge=0)
    max_pairs: int | None = checked(600, ge=2)


@dataclass
class EvaluationConfig:
    """What every cell's final model is scored on (texts no cell trained on).

    Args:
        protocols: masked-token recovery protocols of ``evaluation.mlm_recovery``, each scored separately:
            ``span`` (whole-word spans, the paper's Table 3: hard for small models, whole words hidden) and
            ``collator`` (i.i.d. 15% of the tokens, 80/10/10: mostly single tokens in context).
        block_size: tokens per evaluation block.
        max_texts: texts per field (product titles, product descriptions, general passages).
        mask_probability: masked share of each block / of the entity tokens' blocks.
        entity_max_texts: held-out product texts for the entity/attribute recovery.
        esci: ESCI similarity settings (null: skip; it fine-tunes one model per fold).
        seed: evaluation seed (texts and masks are identical for every cell).
    """

    protocols: list[str] = field(default_factory=lambda: ["span", "collator"])
    block_size: int = checked(128, ge=16)
    max_texts: int = checked(400, ge=1)
    mask_probability: float = checked(0.15, gt=0, lt=1)
    entity_max_texts: int = checked(600, ge=1)
    esci: EsciEval | None = field(default_factory=EsciEval)
    seed: int = 0


@dataclass
class HeldoutConfig:
    """Text kept out of every cell's training data.

    Args:
        general_share: one general document in N (WikiText articles, Gutenberg books: whole documents, by a
            stable hash of their title / file name) is held out.
        min_chars: shortest held-out general passage evaluated.
    """

    general_share: int = checked(8, ge=2)
    min_chars: int = checked(200, ge=1)


@dataclass
class AblationConfig:
    """An ablation study.

    Args:
        name: study name.
        recipe: the training recipe the RexBERT variants derive from (model, tokenizer, data sources, trainer
            settings, phase shapes); relative paths are read from the repository root.
        recipe_overrides: ``field.path=value`` overrides applied to the recipe first (as ``--set``).
        output_dir: cells, trunks, data splits (large files).
        report_dir: the report (Markdown, JSON, PNG; small files); None = ``<output_dir>/report``.
        seeds: each variant runs once per seed (model init, data order, masks).
        budget: tokens per cell.
        variants: the arms; ``sweep`` adds more.
        baseline: the ``hf_mlm`` arm's settings.
        evaluation / heldout: what is measured, on what.
        reference: the arm the paired differences are computed against (None = the first variant).
    """

    name: str
    recipe: str = "training/recipes/demo.yaml"
    recipe_overrides: list[str] = field(default_factory=list)
    output_dir: str = "outputs/ablation"
    report_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    variants: list[VariantConfig] = field(default_factory=list)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    reference: str | None = None

    def arms(self) -> list[VariantConfig]:
        """``variants`` then the sweep's, each distinct setting once (the first name wins)."""
        extra = [
            VariantConfig(f"guided_{_percent(g)}pct", guided_fraction=g) for g in self.sweep.guided_fractions
        ] + [
            VariantConfig(
                f"domain_{_percent(d)}pct", guided_fraction=self.sweep.sweep_guided_fraction, domain_end=d
            )
            for d in self.sweep.domain_shares
        ]
        arms, seen = [], set()
        for variant in [*self.variants, *extra]:
            if variant.settings() not in seen:
                seen.add(variant.settings())
                arms.append(variant)
        return arms

    @property
    def report_path(self) -> Path:
        return Path(self.report_dir) if self.report_dir else Path(self.output_dir) / "report"


def _percent(share: float) -> str:
    return f"{share * 100:g}".replace(".", "p")


def _validate(config: AblationConfig, source: str) -> None:
    if not config.seeds:
        raise ConfigError(f"{source}: seeds must list at least one seed")
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"{source}: seeds = {config.seeds} repeats a seed")
    if config.budget.phase1 + config.budget.phase2 >= 1:
        raise ConfigError(
            f"{source}: budget.phase1 + budget.phase2 = {config.budget.phase1 + config.budget.phase2:g} "
            "must leave phase 3 a share (< 1)"
        )
    protocols = config.evaluation.protocols
    if not protocols or not set(protocols) <= set(MLM_PROTOCOLS) or len(set(protocols)) < len(protocols):
        raise ConfigError(
            f"{source}: evaluation.protocols = {protocols} must list distinct protocols of "
            f"{list(MLM_PROTOCOLS)}"
        )
    arms = config.arms()
    if not arms:
        raise ConfigError(f"{source}: variants and sweep define no arm to train")
    names = [v.name for v in arms]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{source}: variant name {name!r} is used by two different arms")
    if config.baseline.lr_sweep and config.baseline.lr is not None:
        raise ConfigError(
            f"{source}: baseline.lr = {config.baseline.lr:g} and baseline.lr_sweep = "
            f"{config.baseline.lr_sweep} both choose the plain arm's LR: set one (lr_sweep: [] for lr)"
        )
    if len(set(config.baseline.lr_sweep)) != len(config.baseline.lr_sweep):
        raise ConfigError(f"{source}: baseline.lr_sweep = {config.baseline.lr_sweep} repeats a rate")
    if config.reference is not None and config.reference not in names:
        raise ConfigError(f"{source}: reference = {config.reference!r} is not a variant ({', '.join(names)})")


def load_ablation(path: str | os.PathLike, overrides: list[str] | None = None) -> AblationConfig:
    """Read and validate a study file (``--set`` overrides applied first)."""
    return load_config(path, AblationConfig, overrides, validate=_validate)
