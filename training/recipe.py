"""YAML training recipes validated into documented dataclasses.

A recipe is the whole curriculum as data: model size, tokenizer, data sources, and three phases
(``phase1`` general pre-training, ``phase2`` context extension, ``phase3`` annealing toward the domain).
Unknown or invalid fields fail early with the file, the dotted field path and the closest valid name.
Strings may reference environment variables (``${REXBERT_DATA_DIR}``). Command-line overrides use the
same dotted paths: ``--set phase1.lr=1e-3 --set data.general.0.weight=2``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.masking import MaskingConfig

PHASES = ("phase1", "phase2", "phase3")


class RecipeError(ValueError):
    """A recipe field is unknown or invalid (the message names file, field and value)."""


@dataclass
class SourceConfig:
    """One data source.

    Args:
        name: label used in logs.
        path: a local file/folder (parquet, jsonl/json(.gz), txt, zip of .txt) or a Hub dataset id.
        weight: relative sampling weight within its group (general or domain) before temperature.
        text_fields: columns joined (by newline) into the document text; the first must exist.
        split: split to read (Hub datasets / HF loaders).
        subset: Hub dataset configuration name.
        streaming: read lazily, file by file (large local corpora such as the curation output, Hub
            corpora), reshuffled each epoch through a ``data.shuffle_buffer_docs`` buffer; else in memory.
        max_docs: read at most this many documents (None = all).
        mine_attributes: extract Guided-MLM spans from this source's documents (product text).
        doc_per_line: for txt files, one document per non-empty line (True) or per blank-line block (False).
    """

    name: str
    path: str
    weight: float = 1.0
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    split: str = "train"
    subset: str | None = None
    streaming: bool = False
    max_docs: int | None = None
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
        seed: seed of the mixture sampler.
        shuffle_buffer_docs: documents in the per-epoch shuffle buffer of each streaming source.
        miner_sample_docs: documents read from each ``mine_attributes`` source to fit the Guided-MLM
            attribute miner's brand lexicon (a bounded sample: works on streams).
        shard_buffers: packing buffers per on-disk shard (a shard is the unit of parallel work and
            of restart; 64 × 2048 documents ≈ 50-150 MB of rows).
        workers: processes that tokenize, mine and pack shards in parallel (rows do not depend on it).
    """

    general: list[SourceConfig] = field(default_factory=list)
    domain: list[SourceConfig] = field(default_factory=list)
    temperature: float = 1.0
    buffer_docs: int = 2048
    max_doc_tokens: int | None = None
    seed: int = 0
    shuffle_buffer_docs: int = 10_000
    miner_sample_docs: int = 20_000
    shard_buffers: int = 64
    workers: int = 1


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
    vocab_size: int = 32768
    train_docs: int = 20000


@dataclass
class ModelConfig:
    """The encoder.

    Args:
        size: micro | mini | base | large (Table 2), passed to ``RexBertConfig.for_size``.
        overrides: any other RexBertConfig field (e.g. num_hidden_layers for a tiny test model).
        attn_implementation: sdpa | eager | flash_attention_2.
        init_from: start phase 1 from this checkpoint (folder or Hub id) instead of random init.
    """

    size: str = "micro"
    overrides: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    init_from: str | None = None


@dataclass
class MixtureConfig:
    """Share of the domain group in a phase, linearly or cosine-annealed over the phase's tokens.

    Args:
        domain_start: domain share at the start of the phase (0 = general only).
        domain_end: domain share at the end (phase 3 anneals toward the domain corpus).
        schedule: linear | cosine | step (step = jump to domain_end at the midpoint).
    """

    domain_start: float = 0.0
    domain_end: float = 0.0
    schedule: str = "linear"


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
        decay_shape: 1-sqrt | linear.  alpha_f: final LR multiplier.
        batch_warmup_tokens: tokens over which the global batch grows from one warmup step
            (``batch_warmup_step_rows``) to batch_size. Device micro-batches stay full: warmup varies
            how many of them make an optimizer step (training/batch_plan.py).
        batch_warmup_step_rows: the global batch grows in multiples of this many rows (0 = micro_batch_size
            × processes). Set it to micro_batch_size × the largest process count you will run on to
            train the same steps on any process count that divides it.
        global_rope_theta / local_rope_theta: RoPE bases (phase 2: global 160k).
        global_rope_scaling / local_rope_scaling: NTK-aware RoPE scaling for the phase, e.g.
            ``{rope_type: ntk, factor: 4.0}`` (None = none); RexBertConfig validates the mapping.
        max_position_embeddings: the model's context (>= max_seq_len).
        masking: span masking / Guided MLM settings.
        mixture: domain share over the phase.
        logging_steps / save_steps / save_total_limit: Trainer cadence.
    """

    tokens: int = 1_000_000
    max_seq_len: int = 512
    batch_size: int = 32
    micro_batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.1
    decay_shape: str = "1-sqrt"
    alpha_f: float = 0.0
    batch_warmup_tokens: int = 0
    batch_warmup_step_rows: int = 0
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    global_rope_scaling: dict[str, Any] | None = None
    local_rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 8192
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2


@dataclass
class Recipe:
    """A full three-phase curriculum.

    Args:
        name: recipe name (used in output folders and logs).
        output_dir: where phase folders go (``<output_dir>/phase1/final`` ...).
        seed: training seed (model init, masking).
        model / tokenizer / data: see their classes.
        phase1 / phase2 / phase3: the curriculum.
        measure_peak_flops: run a short matmul probe to estimate peak FLOP/s for MFU.
    """

    name: str
    output_dir: str = "outputs/rexbert"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    phase1: PhaseConfig = field(default_factory=PhaseConfig)
    phase2: PhaseConfig = field(default_factory=PhaseConfig)
    phase3: PhaseConfig = field(default_factory=PhaseConfig)
    measure_peak_flops: bool = True

    def phase(self, name: str) -> PhaseConfig:
        return getattr(self, name)


# -- validation -----------------------------------------------------------------------------------
_CHOICES = {
    "decay_shape": ("1-sqrt", "linear"),
    "schedule": ("linear", "cosine", "step"),
    "size": ("micro", "mini", "base", "large"),
    "attn_implementation": ("sdpa", "eager", "flash_attention_2"),
}
_ENV = re.compile(r"\$\{(\w+)\}")


def _expand(value: str, where: str, source: str) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise RecipeError(f"{source}: {where} references ${{{name}}}, an unset environment variable")
        return os.environ[name]

    return _ENV.sub(sub, value)


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where, source)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: {where} must be a mapping, got {value!r}")
        return _build(tp, value, where, source)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{source}: {where} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: {where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{source}: {where} must be true/false, got {value!r}")
        return value
    if tp in (int, float):
        # YAML reads 1e-3 as a string (no dot in the mantissa); accept numeric strings explicitly
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise TypeError
            if tp is int:
                if float(number) != int(number):
                    raise TypeError
                return int(number)
            return float(number)
        except (TypeError, ValueError):
            raise RecipeError(f"{source}: {where} must be a {tp.__name__}, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise RecipeError(f"{source}: {where} must be a string, got {value!r}")
        value = _expand(str(value), where, source)
        leaf = where.rsplit(".", 1)[-1]
        if leaf in _CHOICES and value not in _CHOICES[leaf]:
            raise RecipeError(f"{source}: {where} = {value!r} is not one of {_CHOICES[leaf]}")
        return value
    return value


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f" -- did you mean {close[0]!r}?" if close else f" (valid: {', '.join(names)})"
            raise RecipeError(f"{source}: unknown field {prefix + '.' if prefix else ''}{key}{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], where, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{source}: missing required field {where}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{source}: invalid {prefix or cls.__name__}: {error}") from None


def apply_overrides(data: dict, overrides: list[str], source: str = "command line") -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw recipe mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{source}: override {item!r} must look like field.path=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node: Any = data
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = node[int(key)]
            else:
                node = node.setdefault(key, {})
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"{source}: cannot set {path}: {'.'.join(keys[: i + 1])} is not a mapping")
        value = yaml.safe_load(raw)
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return data


def _validate(recipe: Recipe, source: str) -> None:
    for name in PHASES:
        phase = recipe.phase(name)
        if phase.max_seq_len > phase.max_position_embeddings:
            raise RecipeError(
                f"{source}: {name}.max_seq_len ({phase.max_seq_len}) exceeds "
                f"{name}.max_position_embeddings ({phase.max_position_embeddings})"
            )
        if phase.batch_size % phase.micro_batch_size:
            raise RecipeError(
                f"{source}: {name}.batch_size ({phase.batch_size}) must be a multiple of "
                f"{name}.micro_batch_size ({phase.micro_batch_size})"
            )
        step_rows = phase.batch_warmup_step_rows
        if step_rows and (step_rows % phase.micro_batch_size or phase.batch_size % step_rows):
            raise RecipeError(
                f"{source}: {name}.batch_warmup_step_rows ({step_rows}) must be a multiple of "
                f"{name}.micro_batch_size ({phase.micro_batch_size}) and divide "
                f"{name}.batch_size ({phase.batch_size})"
            )
        if phase.warmup_fraction + phase.decay_fraction > 1:
            raise RecipeError(f"{source}: {name}.warmup_fraction + decay_fraction must be <= 1")
        for key in ("domain_start", "domain_end"):
            share = getattr(phase.mixture, key)
            if not 0 <= share <= 1:
                raise RecipeError(f"{source}: {name}.mixture.{key} must be in [0, 1], got {share}")
            if share > 0 and not recipe.data.domain:
                raise RecipeError(f"{source}: {name}.mixture.{key} > 0 but data.domain has no sources")
        uses_general = phase.mixture.domain_start < 1 or phase.mixture.domain_end < 1
        if uses_general and not recipe.data.general:
            raise RecipeError(f"{source}: {name} samples general data but data.general has no sources")
    for group in (recipe.data.general, recipe.data.domain):
        for i, src in enumerate(group):
            if src.weight <= 0:
                raise RecipeError(f"{source}: source {src.name!r} (#{i}) needs weight > 0, got {src.weight}")
    if recipe.data.temperature <= 0:
        raise RecipeError(f"{source}: data.temperature must be > 0, got {recipe.data.temperature}")


def recipe_from_dict(data: dict, source: str = "<dict>") -> Recipe:
    """Validate a raw mapping into a :class:`Recipe`."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping")
    recipe = _build(Recipe, data, "", source)
    _validate(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a YAML recipe."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RecipeError(f"cannot read recipe {path}: {error}") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML: {error}") from None
    data = apply_overrides(data or {}, overrides or [])
    return recipe_from_dict(data, str(path))


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)
