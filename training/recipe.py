"""YAML training recipes validated into documented dataclasses.

A recipe is the whole curriculum as data: model size, tokenizer, data sources, trainer settings and three
phases (``phase1`` general pre-training, ``phase2`` context extension, ``phase3`` annealing toward the
domain). Recipes load through the shared loader (:mod:`rexbert_common.config`), so every mistake -- an
unknown field, a value out of range, a batch that is not a multiple of the micro-batch, an override with a
bad list index -- fails at load, before anything is built or written, with one line naming the file, the
dotted field path and the value. Strings may reference environment variables (``${REXBERT_DATA_DIR}``).
Command-line overrides use the same dotted paths: ``--set phase1.lr=1e-3 --set data.general.0.weight=2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rexbert_common.config import ConfigError, checked, config_from_dict, config_to_dict, load_config
from rexbert_common.config import apply_overrides as apply_overrides  # re-exported for callers
from rexbert_common.executors import ExecutorConfig
from training.masking import MaskingConfig

PHASES = ("phase1", "phase2", "phase3")


class RecipeError(ConfigError):
    """A recipe field is unknown or invalid (the message names file, field and value)."""


@dataclass
class SourceConfig:
    """One data source.

    Args:
        name: label used in logs.
        path: a local file/folder (parquet, jsonl/json(.gz), txt, zip of .txt) or a Hub dataset id.
        weight: share of its group's (general or domain) tokens, relative to the other sources; before
            temperature. Balanced on tokens, not documents: a source of long documents does not crowd out one
            of short records.
        text_fields: columns joined (by newline) into the document text; the first must exist.
        split: split to read (Hub datasets / HF loaders).
        subset: Hub dataset configuration name.
        streaming: ``load_source`` reads the source lazily (file by file, reshuffled each epoch through a
            ``data.shuffle_buffer_docs`` buffer) instead of into memory. The phase build reads every source
            block by block whatever this says (training/source_index.py), so it does not change the rows.
        max_docs: use only the first ``max_docs`` documents, in file order (None = all).
        mine_attributes: extract Guided-MLM spans from this source's documents (product text).
        doc_per_line: for txt files, one document per non-empty line (True) or per blank-line block (False).
    """

    name: str
    path: str
    weight: float = checked(1.0, gt=0)
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    split: str = "train"
    subset: str | None = None
    streaming: bool = False
    max_docs: int | None = checked(None, ge=1)
    mine_attributes: bool = False
    doc_per_line: bool = False


@dataclass
class DataConfig:
    """The general and domain corpora and how they are mixed.

    Args:
        general: general-text sources (web, books, encyclopaedia).
        domain: domain sources (Ecom-niverse, product catalogues).
        temperature: weights become ``w ** (1 / temperature)`` (T > 1 flattens toward uniform).
        buffer_docs: documents packed together (best-fit window).
        max_doc_tokens: documents longer than this are truncated (None = keep whole; packing splits
            them into rows anyway). Small phases need it so one long web page cannot fill the phase.
        seed: seed of the sources' draw orders and of the row shuffles.
        shuffle_buffer_docs: documents in the per-epoch shuffle buffer of ``load_source`` streams (not
            used by the phase build).
        miner_sample_docs: documents read from each ``mine_attributes`` source to fit the Guided-MLM
            attribute miner's brand lexicon (a bounded sample).
        shard_buffers: packing buffers a shard aims at (a shard is the unit of parallel work and of
            restart; 64 × 2048 documents ≈ 50-150 MB of rows).
        task_memory_bytes: memory budget of one preparation task: rows go to disk in record batches of
            budget/16 bytes as they are packed, and a recipe whose packing buffer or source blocks would
            not fit is refused before any shard is built. Does not change the rows.
        in_process_max_tokens: a multi-process training job builds a phase that was not prepared only up
            to this many tokens (on its main process, the others waiting); a larger one refuses at once
            with the ``rexbert prepare`` command to run (one process always builds in-process).
        executor: how ``rexbert prepare`` and training's in-process build run their datatrove tasks
            (``local`` / ``ray`` / ``slurm``, tasks, workers; rows do not depend on it). Training's
            in-process build always runs ``local`` with these tasks and workers.
    """

    general: list[SourceConfig] = field(default_factory=list)
    domain: list[SourceConfig] = field(default_factory=list)
    temperature: float = checked(1.0, gt=0)
    buffer_docs: int = checked(2048, ge=1)
    max_doc_tokens: int | None = checked(None, ge=1)
    seed: int = 0
    shuffle_buffer_docs: int = checked(10_000, ge=1)
    miner_sample_docs: int = checked(20_000, ge=1)
    shard_buffers: int = checked(64, ge=1)
    task_memory_bytes: int = checked(4 << 30, ge=1 << 20)
    in_process_max_tokens: int = checked(50_000_000, ge=0)
    executor: ExecutorConfig = field(default_factory=lambda: ExecutorConfig(tasks=1, workers=1))


@dataclass
class TokenizerConfig:
    """Which tokenizer.

    Args:
        name_or_path: Hub id or folder of an existing tokenizer (e.g. answerdotai/ModernBERT-base);
            None = train a ModernBERT-style byte-level BPE on the recipe's data.
        vocab_size: size of the trained BPE (ignored when loading).
        train_docs: documents (drawn from all sources) used to train the BPE.
    """

    name_or_path: str | None = None
    vocab_size: int = checked(32768, ge=256)  # the byte-level alphabet alone has 256 symbols
    train_docs: int = checked(20000, ge=1)


@dataclass
class ModelConfig:
    """The encoder.

    Args:
        size: micro | mini | base | large (Table 2), passed to ``RexBertConfig.for_size``.
        overrides: any other RexBertConfig field (e.g. num_hidden_layers for a tiny test model).
        attn_implementation: varlen (PyTorch's FlashAttention varlen kernel on GPUs, sdpa elsewhere) | sdpa |
            eager | flash_attention_2 (the flash-attn package); see modeling_rexbert/attention_rexbert.py.
        init_from: start phase 1 from this checkpoint (folder or Hub id) instead of random init; the same
            as ``phase1.init_from`` (kept for older recipes; set one of the two).
    """

    size: str = checked("micro", choices=("micro", "mini", "base", "large"))
    overrides: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str = checked("varlen", choices=("varlen", "sdpa", "eager", "flash_attention_2"))
    init_from: str | None = None


@dataclass
class TrainerSettings:
    """How the phases run: logging, data-loader workers, distributed and compile settings.

    These are merged into transformers' ``TrainingArguments`` (the fields RexBERT owns -- steps, batch
    sizes, LR, checkpoint cadence -- come from the phase). Every phase uses the same settings.

    Args:
        report_to: experiment trackers (``wandb``, ``tensorboard``, ``mlflow`` ...; [] = none). A multi-week
            run should report somewhere.
        run_name: the run's name in those trackers (None = ``<recipe name>-<phase>``).
        mixed_precision: ``auto`` (bf16 autocast where the device computes bf16 natively and faster: CUDA
            with bf16, a CPU with AVX512-BF16/AMX that wins a short matmul race; else fp32), ``bf16`` or
            ``fp32`` (forced). Master weights and optimizer state are always fp32.
        dataloader_num_workers: DataLoader worker processes collating (masking) micro-batches off the
            training thread (0 = on the training thread).
        dataloader_pin_memory: page-locked host batches (faster host→GPU copies).
        dataloader_persistent_workers: keep workers alive between epochs (needs workers > 0).
        dataloader_prefetch_factor: batches each worker prepares ahead (None = torch's default; needs
            workers > 0).
        ddp_timeout: seconds a collective may wait (rank 0 building data while others wait needs headroom).
        torch_compile: compile the model with ``torch.compile`` (GPU; no gain on CPU).
        activation_checkpointing: recompute activations in backward (memory for compute; formerly
            gradient_checkpointing).
        skip_nonfinite_steps: optimizer steps with a non-finite loss or gradient norm (on any process) that
            a phase skips -- no update, the step's rows consumed, logged as ``skipped_nonfinite_step`` and
            listed in the phase summary -- before it stops; 0 = stop at the first (the default: a spike is
            worth a look). Stopping names the step and the checkpoint to resume from; nothing after the bad
            step is saved. Skipping costs one host synchronisation per step (docs/training.md).
        extra: any other ``TrainingArguments`` field, e.g. ``{logging_dir: runs/, save_safetensors: true}``.
    """

    report_to: list[str] = field(default_factory=list)
    run_name: str | None = None
    mixed_precision: str = checked("auto", choices=("auto", "bf16", "fp32"))
    dataloader_num_workers: int = checked(0, ge=0)
    dataloader_pin_memory: bool = True
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int | None = checked(None, ge=1)
    ddp_timeout: int = checked(7200, ge=1)
    torch_compile: bool = False
    activation_checkpointing: bool = False
    skip_nonfinite_steps: int = checked(0, ge=0)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MixtureConfig:
    """Share of the domain group in a phase, linearly or cosine-annealed over the phase's tokens.

    Args:
        domain_start: domain share at the start of the phase (0 = general only).
        domain_end: domain share at the end (phase 3 anneals toward the domain corpus).
        schedule: linear | cosine | step (step = jump to domain_end at the midpoint).
    """

    domain_start: float = checked(0.0, ge=0, le=1)
    domain_end: float = checked(0.0, ge=0, le=1)
    schedule: str = checked("linear", choices=("linear", "cosine", "step"))


@dataclass
class PhaseConfig:
    """One curriculum phase.

    Args:
        tokens: real (non-pad) tokens to train on; sets the number of steps.
        max_seq_len: packed row length (phase 1: 512; phases 2-3: 8192).
        batch_size: rows per optimizer step (global, all processes).
        micro_batch_size: rows per process per forward pass (gradient accumulation fills the rest).
        lr: peak learning rate.  weight_decay: decoupled weight decay (StableAdamW).
        betas / eps: StableAdamW moments.
        warmup_fraction: share of the phase's steps with linear LR warmup.
        decay_fraction: share of the phase's steps with the final decay.
        decay_shape: 1-sqrt | linear.  alpha_f: final LR multiplier (also where warmup starts, as in
            transformers' get_wsd_schedule).
        batch_warmup_tokens: tokens over which the global batch grows from one warmup step
            (``batch_warmup_step_rows``) to batch_size. Device micro-batches stay full: warmup varies
            how many of them make an optimizer step (training/batch_plan.py).
        batch_warmup_step_rows: the global batch grows in multiples of this many rows (0 = micro_batch_size
            × processes). Set it to micro_batch_size × the largest process count you will run on to
            train the same steps on any process count that divides it.
        global_rope_theta / local_rope_theta: RoPE bases (phase 2: global 160k).
        global_rope_scaling / local_rope_scaling: NTK-aware RoPE scaling for the phase, e.g.
            ``{rope_type: ntk, factor: 4.0}`` (None = none); RexBertConfig validates the mapping.
        max_position_embeddings: the model's context (>= max_seq_len); also the saved tokenizer's
            ``model_max_length``.
        init_from: start this phase from a checkpoint (folder or Hub id: RexBERT, ModernBERT, Ettin)
            instead of the previous phase's final weights -- e.g. the paper's phase 3 alone, annealing from
            an 8k checkpoint. Such a start has no optimizer state: give it an LR warmup.
        carry_optimizer: start from the optimizer state (moments) the previous phase ended with, taken from
            its last checkpoint, with this phase's LR / weight decay / betas (ModernBERT's and Ettin's phase
            restarts). False = fresh moments (then warm the LR up: a fresh Adam's first steps are sign-like).
        masking: span masking / Guided MLM settings.
        mixture: domain share over the phase.
        logging_steps / save_steps / save_total_limit: Trainer cadence.
    """

    tokens: int = checked(1_000_000, gt=0)
    max_seq_len: int = checked(512, ge=8)
    batch_size: int = checked(32, ge=1)
    micro_batch_size: int = checked(8, ge=1)
    lr: float = checked(3e-3, gt=0)
    weight_decay: float = checked(3e-4, ge=0)
    betas: list[float] = checked(default_factory=lambda: [0.9, 0.98], gt=0, lt=1)
    eps: float = checked(1e-6, gt=0)
    warmup_fraction: float = checked(0.05, ge=0, le=1)
    decay_fraction: float = checked(0.1, ge=0, le=1)
    decay_shape: str = checked("1-sqrt", choices=("1-sqrt", "linear"))
    alpha_f: float = checked(0.0, ge=0, le=1)
    batch_warmup_tokens: int = checked(0, ge=0)
    batch_warmup_step_rows: int = checked(0, ge=0)
    global_rope_theta: float = checked(160_000.0, gt=0)
    local_rope_theta: float = checked(10_000.0, gt=0)
    global_rope_scaling: dict[str, Any] | None = None
    local_rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = checked(8192, ge=8)
    init_from: str | None = None
    carry_optimizer: bool = True
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    logging_steps: int = checked(10, ge=1)
    save_steps: int = checked(500, ge=1)
    save_total_limit: int = checked(2, ge=1)


@dataclass
class Recipe:
    """A full three-phase curriculum.

    Args:
        name: recipe name (used in output folders and logs).
        output_dir: where phase folders go (``<output_dir>/phase1/final`` ...).
        seed: training seed (model init, masking).
        model / tokenizer / data / trainer: see their classes.
        phase1 / phase2 / phase3: the curriculum.
        measure_peak_flops: run a short matmul probe to estimate peak FLOP/s for MFU.
    """

    name: str
    output_dir: str = "outputs/rexbert"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    phase1: PhaseConfig = field(default_factory=PhaseConfig)
    phase2: PhaseConfig = field(default_factory=PhaseConfig)
    phase3: PhaseConfig = field(default_factory=PhaseConfig)
    measure_peak_flops: bool = True

    def phase(self, name: str) -> PhaseConfig:
        return getattr(self, name)

    def init_source(self, name: str) -> str | None:
        """The external checkpoint ``name`` starts from (None = random init / the previous phase)."""
        phase = self.phase(name)
        return phase.init_from or (self.model.init_from if name == PHASES[0] else None)


def _validate_phase(recipe: Recipe, name: str, source: str) -> None:
    phase = recipe.phase(name)

    def fail(message: str) -> None:
        raise RecipeError(f"{source}: {name}.{message}")

    if phase.max_seq_len > phase.max_position_embeddings:
        fail(
            f"max_seq_len ({phase.max_seq_len}) exceeds max_position_embeddings "
            f"({phase.max_position_embeddings})"
        )
    if phase.batch_size % phase.micro_batch_size:
        fail(
            f"batch_size ({phase.batch_size}) must be a multiple of micro_batch_size "
            f"({phase.micro_batch_size})"
        )
    step_rows = phase.batch_warmup_step_rows
    if step_rows and (step_rows % phase.micro_batch_size or phase.batch_size % step_rows):
        fail(
            f"batch_warmup_step_rows ({step_rows}) must be a multiple of micro_batch_size "
            f"({phase.micro_batch_size}) and divide batch_size ({phase.batch_size})"
        )
    if phase.warmup_fraction + phase.decay_fraction > 1:
        fail(
            f"warmup_fraction + decay_fraction = {phase.warmup_fraction + phase.decay_fraction:g} "
            "must be <= 1"
        )
    if phase.tokens < phase.batch_size * phase.max_seq_len:
        fail(
            f"tokens = {phase.tokens} is less than one optimizer step of batch_size × max_seq_len = "
            f"{phase.batch_size * phase.max_seq_len}"
        )
    model_init = recipe.model.init_from if name == PHASES[0] else None
    if phase.init_from and model_init and phase.init_from != model_init:
        fail(
            f"init_from = {phase.init_from!r} and model.init_from = {recipe.model.init_from!r} disagree: "
            "set one of them"
        )
    for key in ("domain_start", "domain_end"):
        if getattr(phase.mixture, key) > 0 and not recipe.data.domain:
            fail(f"mixture.{key} = {getattr(phase.mixture, key)} > 0 but data.domain has no sources")
    if (phase.mixture.domain_start < 1 or phase.mixture.domain_end < 1) and not recipe.data.general:
        fail("mixture samples general data (domain share < 1) but data.general has no sources")


def _validate(recipe: Recipe, source: str) -> None:
    """Checks across fields (single-field bounds are on the fields themselves)."""
    for name in PHASES:
        _validate_phase(recipe, name, source)
    seen = set()
    for group in ("general", "domain"):
        for i, src in enumerate(getattr(recipe.data, group)):
            where = f"data.{group}.{i}"
            if not src.text_fields or not all(f.strip() for f in src.text_fields):
                raise RecipeError(
                    f"{source}: {where}.text_fields = {src.text_fields!r} needs at least one "
                    "non-empty column name"
                )
            if src.name in seen:
                raise RecipeError(f"{source}: {where}.name = {src.name!r} is used by another source")
            seen.add(src.name)
    settings = recipe.trainer
    if settings.dataloader_num_workers == 0 and (
        settings.dataloader_persistent_workers or settings.dataloader_prefetch_factor is not None
    ):
        raise RecipeError(
            f"{source}: trainer.dataloader_persistent_workers / dataloader_prefetch_factor "
            "need trainer.dataloader_num_workers > 0"
        )
    if settings.extra:  # the check imports torch and transformers (seconds): only when there is something
        from training.trainer_settings import check_extra_arguments

        check_extra_arguments(settings.extra, source)


def _as_recipe_error(error: ConfigError) -> RecipeError:
    return error if isinstance(error, RecipeError) else RecipeError(str(error))


def recipe_from_dict(data: dict, source: str = "<dict>") -> Recipe:
    """Validate a raw mapping into a :class:`Recipe`."""
    try:
        recipe = config_from_dict(Recipe, data, source)
    except ConfigError as error:
        raise _as_recipe_error(error) from None
    _validate(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML (or JSON) recipe, apply ``--set`` overrides and validate it -- all before any work."""
    try:
        return load_config(path, Recipe, overrides, validate=_validate)
    except ConfigError as error:
        raise _as_recipe_error(error) from None


def recipe_to_dict(recipe: Recipe) -> dict:
    return config_to_dict(recipe)


__all__ = [
    "PHASES",
    "DataConfig",
    "MixtureConfig",
    "ModelConfig",
    "PhaseConfig",
    "Recipe",
    "RecipeError",
    "SourceConfig",
    "TokenizerConfig",
    "TrainerSettings",
    "apply_overrides",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
]
