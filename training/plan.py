"""What a recipe costs on N GPUs, and whether it fits, before anything runs (``rexbert plan``).

Per phase: tokens, optimizer steps (the batch plan the run will follow), model FLOPs per token
(``training.mfu.MlmFlops``, the accounting the training logs' MFU uses), GPU-hours and wall time at an
MFU, the peak GPU memory of one training step at the recipe's micro-batch (the fake-tensor dry run of
``training.dry_run``), whether that fits the GPU with headroom, the CPU core-hours to prepare the phase's
rows and their disk size. The launch runs the same checks (:func:`check_launch`) before it reads a source:
a recipe that cannot run on this world size, with FSDP, or in this GPU's memory is refused at once.

Every number is an estimate; the assumptions are constants below, each with where it comes from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from rexbert_common.errors import UserError
from training.batch_plan import EqualRows, check_world_size, plan_batches
from training.recipe import PHASES, PhaseConfig, Recipe

GIB = 1 << 30


@dataclass(frozen=True)
class Gpu:
    """Datasheet numbers: dense (no sparsity) bf16 tensor-core TFLOP/s and memory."""

    name: str
    bf16_tflops: float
    memory_gib: float
    source: str


# The datasheets quote bf16 "with sparsity": dense is half of it. Memory is the HBM capacity; CUDA reports a
# little less (an H100 80GB ≈ 79.2 GiB), which the headroom below absorbs.
GPUS = {
    "h100": Gpu(
        "NVIDIA H100 SXM5 80GB",
        989.4,
        80,
        "https://www.nvidia.com/en-us/data-center/h100/ (BF16 1,979 TFLOPS with sparsity; 80 GB)",
    ),
    "h200": Gpu(
        "NVIDIA H200 SXM 141GB",
        989.4,
        141,
        "https://www.nvidia.com/en-us/data-center/h200/ (BF16 1,979 TFLOPS with sparsity; 141 GB)",
    ),
    "a100": Gpu(
        "NVIDIA A100 SXM4 80GB",
        312.0,
        80,
        "https://www.nvidia.com/en-us/data-center/a100/ (BF16 312 TFLOPS, 624 with sparsity; 80 GB)",
    ),
}

# ModernBERT's pace: ModernBERT-base trained 1.719T tokens in 194 h on 8 x H100, 307k tokens/s per GPU, which
# is 25% of 989 TFLOP/s at MlmFlops' 0.82 GFLOP per token (base, 1,024-token rows). Pass --mfu with the
# `mfu` your own run logs.
DEFAULT_MFU = 0.25
# Share of the GPU's memory kept free: the caching allocator's fragmentation and block rounding.
MEMORY_HEADROOM = 0.10
# CUDA context, cuBLAS workspaces and NCCL buffers, outside any tensor the dry run counts.
RUNTIME_RESERVE_GIB = 1.0
# Real tokens / slots of best-fit packed rows (the packer's measured efficiency is ≥ 0.99 on web text; a
# run reports its own in phase_summary.json).
PACKING_EFFICIENCY = 0.99
# Read + tokenize (+ mine) + pack + write, tokens per second per CPU core: `rexbert prepare`'s one-worker
# rates in benchmarks/bench_data_prep.py (BENCHMARKS.md, "Training data preparation"), rounded down. Only
# phases with Guided MLM mine their product text, which makes them the slower kind.
PREP_TOKENS_PER_CORE_SECOND = 600_000
PREP_MINED_TOKENS_PER_CORE_SECOND = 400_000


def prep_rate(phase: PhaseConfig) -> int:
    """Preparation tokens per second per core of ``phase`` (mined for Guided MLM or not)."""
    return (
        PREP_MINED_TOKENS_PER_CORE_SECOND
        if phase.masking.guided_fraction > 0
        else PREP_TOKENS_PER_CORE_SECOND
    )


@dataclass(frozen=True)
class PhasePlan:
    """One phase's estimate (``as_dict`` gives the JSON keys)."""

    tokens: int
    steps: int
    batch_rows: int
    micro_batch_size: int
    micro_batches_per_gpu: int  # per optimizer step at the full batch
    flops_per_token: float
    gpu_hours: float
    wall_hours: float
    step_tensors_gib: float  # the dry run's peak: weights, gradients, optimizer state, activations
    peak_memory_gib: float  # + DDP gradient buckets and the CUDA runtime
    budget_gib: float  # the GPU's memory less the headroom
    fits: bool
    prep_core_hours: float
    disk_gib: float
    memory_at_peak_gib: dict[str, float]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RecipePlan:
    recipe: str
    gpus: int
    gpu: str
    mfu: float
    vocab_size: int
    vocab_note: str
    phases: dict[str, PhasePlan]

    def total(self) -> dict:
        keys = ("tokens", "steps", "gpu_hours", "wall_hours", "prep_core_hours", "disk_gib")
        total = {k: sum(getattr(p, k) for p in self.phases.values()) for k in keys}
        total["peak_memory_gib"] = max(p.peak_memory_gib for p in self.phases.values())
        total["fits"] = all(p.fits for p in self.phases.values())
        return total

    def as_dict(self) -> dict:
        return {
            "recipe": self.recipe,
            "gpus": self.gpus,
            "gpu": dataclasses.asdict(GPUS[self.gpu]),
            "mfu": self.mfu,
            "vocab_size": self.vocab_size,
            "assumptions": assumptions(self),
            "phases": {name: p.as_dict() for name, p in self.phases.items()},
            "total": self.total(),
        }


def assumptions(plan: RecipePlan) -> dict[str, str]:
    return {
        "mfu": f"{plan.mfu:g} of the dense bf16 peak"
        + (" (ModernBERT's pace: 1.719T tokens in 194 h on 8 x H100)" if plan.mfu == DEFAULT_MFU else ""),
        "flops": "MlmFlops (training/mfu.py): dense layers on real tokens, attention within a row taken as "
        "one document (an upper bound), the sparse head on the masked tokens, x3 for the backward",
        "memory": "fake-tensor dry run of the training step (varlen FlashAttention, bf16 autocast, fp32 "
        f"weights and moments, up to two micro-batches) + DDP gradient buckets + {RUNTIME_RESERVE_GIB:g} GiB "
        f"CUDA runtime; fits = within {1 - MEMORY_HEADROOM:.0%} of the GPU's memory",
        "vocab": plan.vocab_note,
        "packing": f"rows {PACKING_EFFICIENCY:.0%} full",
        "prep": f"{PREP_TOKENS_PER_CORE_SECOND:,} tokens/s per CPU core, "
        f"{PREP_MINED_TOKENS_PER_CORE_SECOND:,} in phases with Guided MLM (their product text is mined; "
        "benchmarks/bench_data_prep.py)",
    }


# -- the model and its data --------------------------------------------------------------------------------


def vocab_size(recipe: Recipe) -> tuple[int, str]:
    """The model's vocabulary (the tokenizer's, rounded up to 64) without training or downloading a
    tokenizer: a trained BPE's target size; a local or cached tokenizer's size; else RexBertConfig's
    default, ModernBERT's 50,368 (the paper recipes' tokenizer)."""
    from modeling_rexbert import RexBertConfig

    name = recipe.tokenizer.name_or_path
    if name is None:
        size = -(-recipe.tokenizer.vocab_size // 64) * 64
        return size, f"{size:,} ids (the BPE the run trains, tokenizer.vocab_size rounded up to 64)"
    from rexbert_common.errors import UserError
    from training.tokenizer import load_tokenizer, padded_vocab_size

    try:
        size = padded_vocab_size(load_tokenizer(name, local_files_only=True))
        return size, f"{size:,} ids ({name})"
    except (UserError, ValueError):  # not in the local cache (UserError wraps the OSError), or unusable
        size = RexBertConfig.vocab_size
        return size, f"{size:,} ids assumed (ModernBERT's: {name} is not in the local cache)"


def model_config(recipe: Recipe, phase_name: str, vocab: int):
    """The architecture the phase trains: the recipe's size and overrides with the phase's context (a phase
    hand-off keeps the architecture; an ``init_from`` checkpoint of another size is not looked up)."""
    from modeling_rexbert import RexBertConfig
    from training.curriculum import phase_context

    special = {}
    if vocab <= RexBertConfig.mask_token_id:  # ModernBERT's ids do not fit a small trained BPE's vocabulary
        special = {"pad_token_id": 0, "cls_token_id": 1, "sep_token_id": 2, "mask_token_id": 3}
        special.update(bos_token_id=1, eos_token_id=2)
    return RexBertConfig.for_size(
        recipe.model.size,
        vocab_size=vocab,
        **{**special, **phase_context(recipe.phase(phase_name)), **recipe.model.overrides},
    )


def flops_per_token(config, phase: PhaseConfig) -> float:
    """Training FLOPs per real token with every row one document of ``max_seq_len`` tokens."""
    from training.mfu import MlmFlops

    n = phase.max_seq_len
    local = min(n, config.local_attention + 1)  # keys per query in a local layer, as the collator counts
    masked = phase.masking.mlm_probability * n
    return MlmFlops(config).step(n, masked, n * n, n * local) / n


def disk_bytes(phase: PhaseConfig, vocab: int) -> float:
    """The phase's packed rows in the on-disk schema (training/phase_build.py): token ids of its width, and
    16 bytes per row (its length and three list offsets); 4 bytes per document and 8 per mined span are
    left out (< 1% for documents of a few hundred tokens)."""
    from training.phase_build import _schema

    id_bytes = _schema(vocab).field("input_ids").type.value_type.bit_width // 8
    rows = phase.tokens / (PACKING_EFFICIENCY * phase.max_seq_len)
    return phase.tokens * id_bytes + 16 * rows


# -- the plan ----------------------------------------------------------------------------------------------


def step_memory(recipe: Recipe, phase_name: str, config, gpus: int):
    """The dry run of one training step of the phase on ``gpus`` GPUs (``training.dry_run.DryRun``)."""
    from training.dry_run import StepShape, dry_run

    phase = recipe.phase(phase_name)
    per_step = phase.batch_size // (phase.micro_batch_size * gpus)
    shape = StepShape(phase.micro_batch_size, phase.max_seq_len, phase.masking, micro_batches=per_step)
    return dry_run(
        config,
        shape,
        bf16=recipe.trainer.mixed_precision != "fp32",
        activation_checkpointing=recipe.trainer.activation_checkpointing,
        processes=gpus,
    )


def memory_need_gib(run, gpus: int) -> float:
    """A GPU's peak: the dry run's step (``run``), DDP's gradient buckets when there is more than one
    process (a copy of the fp32 gradients: as many bytes as the weights) and the CUDA runtime."""
    buckets = run.at_peak.get("parameters", 0) if gpus > 1 else 0
    return (run.peak_bytes + buckets) / GIB + RUNTIME_RESERVE_GIB


def plan_phase(recipe: Recipe, phase_name: str, gpus: int, gpu: Gpu, mfu: float, vocab: int) -> PhasePlan:
    phase = recipe.phase(phase_name)
    check_world_size(phase, gpus, phase_name)
    config = model_config(recipe, phase_name, vocab)
    row_tokens = PACKING_EFFICIENCY * phase.max_seq_len
    steps = plan_batches(EqualRows(math.ceil(phase.tokens / row_tokens), row_tokens), phase, gpus).steps
    fpt = flops_per_token(config, phase)
    gpu_hours = phase.tokens * fpt / (mfu * gpu.bf16_tflops * 1e12) / 3600
    run = step_memory(recipe, phase_name, config, gpus)
    need = memory_need_gib(run, gpus)
    budget = (1 - MEMORY_HEADROOM) * gpu.memory_gib
    return PhasePlan(
        tokens=int(phase.tokens),
        steps=steps,
        batch_rows=phase.batch_size,
        micro_batch_size=phase.micro_batch_size,
        micro_batches_per_gpu=phase.batch_size // (phase.micro_batch_size * gpus),
        flops_per_token=fpt,
        gpu_hours=gpu_hours,
        wall_hours=gpu_hours / gpus,
        step_tensors_gib=run.peak_gib,
        peak_memory_gib=need,
        budget_gib=budget,
        fits=need <= budget,
        prep_core_hours=phase.tokens / prep_rate(phase) / 3600,
        disk_gib=disk_bytes(phase, vocab) / GIB,
        memory_at_peak_gib={k: v / GIB for k, v in run.at_peak.items()},
    )


def plan_recipe(recipe: Recipe, gpus: int, gpu: str = "h100", mfu: float = DEFAULT_MFU) -> RecipePlan:
    if gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    if gpu not in GPUS:
        raise UserError(f"--gpu {gpu!r}: choose one of {', '.join(GPUS)}")
    for name in PHASES:  # every refusal before any dry run
        check_world_size(recipe.phase(name), gpus, name)
    vocab, note = vocab_size(recipe)
    phases = {name: plan_phase(recipe, name, gpus, GPUS[gpu], mfu, vocab) for name in PHASES}
    return RecipePlan(recipe.name, gpus, gpu, mfu, vocab, note, phases)


# -- at launch ---------------------------------------------------------------------------------------------

FSDP_REFUSAL = (
    "FSDP is not supported by RexBERT's StableAdamW (per-shard update RMS); use DDP (accelerate launch "
    "without --use_fsdp), which fits every RexBERT size"
)


def uses_fsdp(recipe: Recipe) -> bool:
    """``accelerate launch --use_fsdp`` (or an FSDP config) sets ACCELERATE_USE_FSDP; ``trainer.extra``
    can ask the Trainer for it too."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_FSDP") or bool(recipe.trainer.extra.get("fsdp"))


def cuda_memory_gib() -> float | None:
    """This process's GPU memory (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    from training.phase_data import process_state

    return torch.cuda.get_device_properties(process_state().device).total_memory / GIB


def check_launch(recipe: Recipe, phases: list[str], world_size: int) -> None:
    """Everything the run would refuse later, refused before a source is read or a row is built: the world
    size against the batch sizes, FSDP, and (on CUDA) a step that does not fit this GPU."""
    for name in phases:
        check_world_size(recipe.phase(name), world_size, name)
    if uses_fsdp(recipe):
        raise UserError(FSDP_REFUSAL)
    memory = cuda_memory_gib()
    if memory is None:
        return
    vocab, _ = vocab_size(recipe)
    budget = (1 - MEMORY_HEADROOM) * memory
    for name in phases:
        run = step_memory(recipe, name, model_config(recipe, name, vocab), world_size)
        need = memory_need_gib(run, world_size)
        if need > budget:
            phase = recipe.phase(name)
            raise UserError(
                f"{name}: a training step needs ≈ {need:.1f} GiB per GPU (micro_batch_size "
                f"{phase.micro_batch_size} × {phase.max_seq_len} tokens), more than {budget:.1f} GiB "
                f"({1 - MEMORY_HEADROOM:.0%} of this GPU's {memory:.1f} GiB): lower {name}.micro_batch_size "
                "or set trainer.activation_checkpointing=true (see `rexbert plan`)"
            )


# -- output ------------------------------------------------------------------------------------------------


def _count(n: float) -> str:
    """1.7e12 -> '1.7T', 40000 -> '40k'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n:g}"


def _amount(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def _days(hours: float) -> str:
    return f"{hours:,.0f} h = {hours / 24:,.1f} d" if hours >= 48 else f"{_amount(hours)} h"


def _table_row(name: str, values: dict) -> str:
    fits = "yes" if values["fits"] else "NO"
    memory = f"{values['peak_memory_gib']:.1f} GiB"
    return (
        f"{name:<7}{_count(values['tokens']):>8}{values['steps']:>9,}{values['gflops']:>8}"
        f"{_amount(values['gpu_hours']):>11}{_days(values['wall_hours']):>17}{memory:>13}"
        f"{fits:>5}{_amount(values['prep_core_hours']):>12}{_amount(values['disk_gib']):>9} GiB"
    )


def format_plan(plan: RecipePlan) -> str:
    """The plan as a table and the per-phase memory, followed by the assumptions."""
    gpu = GPUS[plan.gpu]
    lines = [
        f"rexbert plan: {plan.recipe} on {plan.gpus} x {gpu.name} ({gpu.bf16_tflops:g} dense bf16 TFLOP/s, "
        f"{gpu.memory_gib:g} GB), MFU {plan.mfu:g}",
        "",
        f"{'phase':<7}{'tokens':>8}{'steps':>9}{'GFLOP':>8}{'GPU-hours':>11}{'wall time':>17}"
        f"{'memory/GPU':>13}{'fits':>5}{'prep core-h':>12}{'disk':>13}",
    ]
    for name, p in plan.phases.items():
        lines.append(_table_row(name, {**p.as_dict(), "gflops": f"{p.flops_per_token / 1e9:.3g}"}))
    lines.append(_table_row("total", {**plan.total(), "gflops": ""}))
    lines.append("(GFLOP: training FLOPs per token; memory/GPU: the peak of one training step)")
    lines.append("")
    for name, p in plan.phases.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in p.memory_at_peak_gib.items() if v >= 0.005)
        lines.append(
            f"{name}: {p.batch_rows:,} rows per step = {p.micro_batches_per_gpu} micro-batch(es) of "
            f"{p.micro_batch_size} rows per GPU; step peak {p.step_tensors_gib:.2f} GiB ({parts}); "
            f"fits within {p.budget_gib:.1f} GiB: {'yes' if p.fits else 'NO'}"
        )
    lines.append("")
    lines.append("Estimates. Assumptions:")
    lines.extend(f"  {key}: {value}" for key, value in assumptions(plan).items())
    return "\n".join(lines)
