"""One decisive GPU run of the RexBERT encoder: right on this GPU, free of host syncs, and as fast as claimed.

  python -m benchmarks.gpu_check --out outputs/gpu_check --budget-s 420   # one CUDA GPU, <= 8 minutes
  python -m benchmarks.gpu_check --out /tmp/gpu_check --dry-run           # CPU, tiny: checks the script

Sections run in order. Each is guarded (an exception is recorded and the next section runs) and each
rewrites ``gpu_check.json`` / ``gpu_check.md`` in ``--out`` when it ends, so a run cut short keeps what
it measured. Sections that no longer fit ``--budget-s`` are skipped, lowest priority last.

  header     torch / CUDA / transformers versions, device, compute capability, varlen_attn's signature, the
             dense bf16 peak (datasheet table) and a measured bf16 matmul peak.
  agreement  RexBERT's attention backends in bf16 vs fp32 eager -- outputs and dq, dk, dv, global and local
             windows -- on q / k / v made by a base-size RexBertAttention (projection + RoPE per document).
  syncs      every device-to-host synchronisation over one whole training step, named by source line: a
             pinned host batch copied non_blocking, forward, backward, StableAdamW step.
  training   base size, 64k tokens per step: 8 x 8,192-token packs of phase-1-like documents (<= 512
             tokens) and 8 single 8,192-token documents; real tokens/s, MFU and peak-memory delta for
             RexBERT (varlen, varlen compiled, sdpa) and transformers' ModernBERT (sdpa, sdpa compiled,
             flex_attention; padded rows: it has no packed input).
  bf16       bf16-weight logits vs fp32 weights, RexBERT beside ModernBERT.
  inference  ModernBERT's published protocol with bf16 weights: fixed 512, N(256, 64) in [32, 512], fixed
             8,192, N(4,096, 1,024) in [32, 8,192]; RexBERT vs ModernBERT sdpa, real tokens/s.
  verdict    THRESHOLDS below; exit status 1 when a check fails or was not measured.

``--dry-run`` runs every section at tiny sizes on the CPU (PyTorch's varlen op with the CPU reference kernel
of ``modeling_rexbert.varlen_reference``); performance checks are then reported, not judged.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import inspect
import json
import math
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks._common import markdown_table, median
from modeling_rexbert import RexBertConfig, RexBertForMaskedLM, attention_rexbert
from modeling_rexbert.conversion import rexbert_config_to_modernbert
from modeling_rexbert.modeling_rexbert import RexBertAttention, apply_rope, rope_cos_sin
from modeling_rexbert.packing_rexbert import pack_inputs
from training.mfu import MlmFlops, measure_peak_flops
from training.optim import StableAdamW, param_groups

VOCAB = 50_368
GRACE_S = 30.0  # past --budget-s, the watchdog stops the running section
TINY = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_attention_heads": 2,
    "local_attention": 16,
}
TINY_IDS = {
    "pad_token_id": 0,
    "bos_token_id": 1,
    "cls_token_id": 1,
    "eos_token_id": 2,
    "sep_token_id": 2,
    "mask_token_id": 3,
}
THRESHOLDS = {
    "forward_max_abs_delta": 2e-2,  # attention output, bf16 vs fp32 eager
    "grad_relative_error": 5e-2,  # ||g - g_ref|| / ||g_ref|| for dq, dk, dv
    "syncs_per_step": 0,  # in the copy, forward, backward and optimizer step
    "speedup_vs_modernbert_sdpa": 1.5,  # real tokens/s, training on the phase-1 packs
    "mfu": 0.35,  # best RexBERT variant on the phase-1 packs, vs the dense bf16 peak
    "bf16_error_vs_modernbert": 2.0,  # RexBERT's bf16-weight logit error <= 2x ModernBERT's (+ 1e-3)
}
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; matched by device name.
DATASHEET_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


@dataclass
class Sizes:
    """What the run measures: the paper's base size on a GPU, a tiny copy for the CPU dry run."""

    vocab: int
    step_tokens: int  # tokens per training step
    row_tokens: int  # tokens per packed row (and per long document)
    phase1_max: int  # longest phase-1 document
    agreement_lengths: list[int]
    inference: dict[str, tuple[int, int]]  # workload -> (sequences, sequences per batch)
    timed_steps: int = 5
    compile_backend: str = "inductor"
    estimates_s: dict[str, float] = field(default_factory=dict)  # per-variant start-up cost to budget for

    @classmethod
    def for_run(cls, dry_run: bool) -> Sizes:
        if dry_run:
            workloads = {"fixed_512": (8, 4), "var_256": (8, 4), "fixed_8192": (2, 2), "var_4096": (2, 2)}
            return cls(512, 256, 128, 64, [40, 7, 19, 64, 1, 30], workloads, 1, "eager")
        workloads = {
            "fixed_512": (2048, 256),
            "var_256": (2048, 256),
            "fixed_8192": (128, 16),
            "var_4096": (128, 16),
        }
        estimates = {"compiled": 180.0, "flex_attention": 150.0, "eager": 25.0}
        return cls(
            65536, 8192, 512, [1000, 7, 129, 64, 512, 1, 2048, 300], workloads, 5, "inductor", estimates
        )


class Context:
    def __init__(self, device: torch.device, dry_run: bool, budget_s: float):
        self.device, self.dry_run = device, dry_run
        self.sizes = Sizes.for_run(dry_run)
        self.deadline = time.monotonic() + budget_s
        self.peaks: dict[str, float | None] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def config(self, **overrides) -> RexBertConfig:
        size = dict(TINY) if self.dry_run else {}
        base = {"vocab_size": self.sizes.vocab, "max_position_embeddings": 8192, "sparse_prediction": True}
        if self.dry_run:
            return RexBertConfig(**base, **size, **TINY_IDS, **overrides)
        return RexBertConfig.for_size("base", **base, **overrides)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ====================================================================== header
def header(ctx: Context) -> dict:
    import transformers

    cuda = ctx.device.type == "cuda"
    name = torch.cuda.get_device_name(ctx.device) if cuda else "cpu"
    datasheet = next((tf for key, tf in DATASHEET_BF16_TFLOPS.items() if key in name), None) if cuda else None
    measured = measure_peak_flops(
        ctx.device, torch.bfloat16, size=8192 if cuda else 256, seconds=1.0 if cuda else 0.1
    )
    ctx.peaks = {"datasheet": datasheet * 1e12 if datasheet else None, "measured": measured}
    try:
        from torch.nn.attention.varlen import varlen_attn

        signature = str(inspect.signature(varlen_attn))
    except ImportError:
        signature = None
    return {
        "device": name,
        "compute_capability": list(torch.cuda.get_device_capability(ctx.device)) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "varlen_attn_signature": signature,
        "varlen_usable": attention_rexbert.varlen_unavailable(ctx.device, torch.bfloat16, 0.0) or "yes",
        "bf16_peak_tflops_datasheet": datasheet,
        "bf16_peak_tflops_measured": measured / 1e12,
        "size": "tiny (dry run)" if ctx.dry_run else "base",
    }


# ====================================================================== agreement
def agreement(ctx: Context) -> dict:
    """Outputs and dq, dk, dv of each backend in bf16 against fp32 eager on the same q / k / v."""
    cfg, lengths, device = ctx.config(), ctx.sizes.agreement_lengths, ctx.device
    n = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    batch = pack_inputs(
        torch.zeros(1, n, dtype=torch.long, device=device), cu_seqlens=cu, max_seqlen=max(lengths)
    )
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.nn.functional.layer_norm(torch.randn(n, cfg.hidden_size, generator=gen), (cfg.hidden_size,))
    upstream = torch.randn(n, cfg.num_attention_heads, cfg.head_dim, generator=gen).to(device)
    rows = []
    for layer_idx in (0, 1):  # layer 0 is global, layer 1 local
        layer = RexBertAttention(cfg, layer_idx).to(device)
        with torch.no_grad():
            qkv = layer.Wqkv(x.to(device)).view(n, 3, cfg.num_attention_heads, cfg.head_dim)
            rope = rope_cos_sin(
                batch.position_ids, cfg.head_dim, cfg.rope_theta_for(cfg.layer_types[layer_idx])
            )
            q, k = apply_rope(qkv[:, :2], *rope).unbind(1)
            v = qkv[:, 2]
        args = {"window": layer.window, "dropout": 0.0, "scale": cfg.head_dim**-0.5}
        ref_out, ref_grads = _attend(attention_rexbert.eager_attention, (q, k, v), batch, upstream, args)
        window = "global" if layer.window == attention_rexbert.GLOBAL_WINDOW else f"local +-{layer.window[0]}"
        for name in ("varlen", "sdpa", "eager"):
            row = {"backend": name, "window": window}
            try:
                out, grads = _attend(
                    attention_rexbert.ATTENTION_BACKENDS[name],
                    (q, k, v),
                    batch,
                    upstream,
                    args,
                    torch.bfloat16,
                )
            except Exception as error:  # reported per backend; the others still run
                rows.append(row | {"error": f"{type(error).__name__}: {error}"[:300]})
                continue
            row["forward_max_abs_delta"] = float((out.float() - ref_out).abs().max())
            for g_name, g, g_ref in zip(("dq", "dk", "dv"), grads, ref_grads):
                row[f"{g_name}_relative_error"] = float((g.float() - g_ref).norm() / g_ref.norm())
            rows.append(row)
    return {"lengths": lengths, "rows": rows}


def _attend(fn, qkv, batch, upstream, args, dtype=torch.float32):
    leaves = [t.detach().to(dtype).requires_grad_() for t in qkv]
    out, _ = fn(*leaves, batch, **args)
    grads = torch.autograd.grad(out, leaves, upstream.to(dtype), allow_unused=True)  # unused: a zero gradient
    return out.detach(), [
        torch.zeros_like(t).float() if g is None else g.float() for t, g in zip(leaves, grads)
    ]


# ====================================================================== batches
def phase1_rows(ctx: Context, seed: int = 0) -> list[list[int]]:
    """Document lengths of ``step_tokens / row_tokens`` packed rows, each filled to ``row_tokens`` with
    phase-1-like documents: log-normal lengths (median ~60 % of the maximum) clipped to [16, max], the
    row's last document cut to fit, as the packer does."""
    gen = torch.Generator().manual_seed(seed)
    top = ctx.sizes.phase1_max
    rows = []
    for _ in range(ctx.sizes.step_tokens // ctx.sizes.row_tokens):
        row, free = [], ctx.sizes.row_tokens
        while free:
            length = int(torch.empty(1).log_normal_(math.log(0.6 * top), 0.6, generator=gen).clamp(16, top))
            row.append(min(length, free))
            free -= row[-1]
        rows.append(row)
    return rows


def mlm_batch(lengths: list[int], vocab: int, seed: int = 0) -> dict:
    """A packed host batch as the collator builds it (30 % of tokens labelled), plus its padded twin for
    ModernBERT (the same documents, one per row) and the counts MFU needs."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    ids = torch.randint(5, vocab, (1, n), generator=gen)
    labels = torch.where(torch.rand(1, n, generator=gen) < 0.3, ids, torch.full_like(ids, -100))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    packed = {
        "input_ids": ids,
        "labels": labels,
        "cu_seqlens": cu,
        "position_ids": torch.cat([torch.arange(m) for m in lengths])[None],
        "label_positions": (labels[0] != -100).nonzero().squeeze(1),
        "max_seqlen": max(lengths),
    }
    S = max(lengths)
    mask = (torch.arange(S)[None] < torch.tensor(lengths)[:, None]).long()
    padded = {"input_ids": torch.zeros(len(lengths), S, dtype=torch.long), "attention_mask": mask}
    padded["labels"] = torch.full_like(padded["input_ids"], -100)
    padded["input_ids"][mask.bool()], padded["labels"][mask.bool()] = ids[0], labels[0]
    counts = {
        "real_tokens": n,
        "labelled": int((labels != -100).sum()),
        "global_pairs": sum(m * m for m in lengths),
    }
    return {"packed": packed, "padded": padded, "counts": counts, "lengths": lengths}


def to_device(batch: dict, device: torch.device) -> dict:
    """Host tensors -> device, asynchronously from pinned memory (a DataLoader's pin_memory=True)."""
    move = lambda t: t.to(device, non_blocking=t.is_pinned())  # noqa: E731
    return {key: move(value) if torch.is_tensor(value) else value for key, value in batch.items()}


def pinned(batch: dict) -> dict:
    return {key: value.pin_memory() if torch.is_tensor(value) else value for key, value in batch.items()}


def step_flops(cfg: RexBertConfig, batch: dict) -> float:
    """Useful training FLOPs of one step (real tokens, the local window, the sparse head)."""
    lengths, window = batch["lengths"], cfg.local_attention
    local_pairs = sum(m * min(m, window + 1) for m in lengths)
    c = batch["counts"]
    return MlmFlops(cfg).step(
        c["real_tokens"], c["labelled"], c["global_pairs"], local_pairs, sparse_head=True
    )


# ====================================================================== models and steps
def build(ctx: Context, family: str, impl: str, compiled: bool, dtype=torch.float32):
    """A base-size MLM model of ``family`` (rexbert | modernbert) with ``impl`` attention, sparse
    prediction on (set at construction: ModernBERT reads it in __init__ only), seeded weights."""
    from transformers import ModernBertForMaskedLM

    torch.manual_seed(0)
    cfg = ctx.config(attn_implementation=impl)
    if family == "rexbert":
        model = RexBertForMaskedLM(cfg)
    else:
        mb_cfg = rexbert_config_to_modernbert(cfg)
        mb_cfg.sparse_prediction, mb_cfg._attn_implementation = True, impl
        model = ModernBertForMaskedLM(mb_cfg)
        assert model.sparse_prediction, "ModernBERT must be built with sparse prediction on"
    model = model.to(ctx.device, dtype)
    runner = torch.compile(model, dynamic=True, backend=ctx.sizes.compile_backend) if compiled else model
    return model, runner


def train_step(runner, optimizer, inputs: Callable[[], dict], device: torch.device, num_items=None):
    """One optimizer step: inputs (host -> device), forward under bf16 autocast, backward, StableAdamW."""

    def step() -> None:
        batch = inputs()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
            loss = runner(**batch, **kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(ctx: Context, step: Callable[[], None], warmup: int, repeats: int) -> dict:
    """Median seconds per call of ``repeats`` calls (fewer if the budget runs out) after ``warmup`` ones,
    and the peak device memory above what was allocated before (weights, optimizer state)."""
    for _ in range(warmup):
        step()
    ctx.sync()
    cuda = ctx.device.type == "cuda"
    if cuda:
        base = torch.cuda.memory_allocated(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        ctx.sync()
        times.append(time.perf_counter() - start)
        if ctx.left() < 2 * times[-1]:
            break
    peak = (torch.cuda.max_memory_allocated(ctx.device) - base) / 2**20 if cuda else None
    return {"s_per_step": median(times), "steps_timed": len(times), "peak_mib_delta": peak}


# ====================================================================== syncs
@contextlib.contextmanager
def capture_syncs(device: torch.device):
    """Name every synchronisation: CUDA's sync debug mode (each synchronizing CUDA call warns; the warning's
    Python stack names the line) and, so the CPU dry run counts too, every Tensor method that reads a value
    back to the host (tolist, item, cpu, int(), bool(), ...). Yields {"cuda": ..., "host_reads": ...}
    Counters of sites."""
    found = {"cuda": collections.Counter(), "host_reads": collections.Counter()}
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def reader(name):
        def read(self, *args, **kwargs):
            found["host_reads"][f"Tensor.{name} at {_site()}"] += 1
            return originals[name](self, *args, **kwargs)

        return read

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            found["cuda"][_site()] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        for name in HOST_READS:
            setattr(torch.Tensor, name, reader(name))
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            for name, method in originals.items():
                setattr(torch.Tensor, name, method)


HOST_READS = ("tolist", "item", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")


def _site() -> str:
    """The innermost caller outside torch, the warnings module and the capture itself: the line that
    asked for the value."""
    here = os.path.abspath(__file__)
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        capture = path == here and frame.name in ("read", "show", "_site")
        if (
            not capture
            and f"{os.sep}torch{os.sep}" not in path
            and not path.endswith(("warnings.py", "contextlib.py"))
        ):
            shown = os.path.relpath(path) if path.startswith(os.getcwd()) else path
            return f"{shown}:{frame.lineno} ({frame.name})"
    return "unknown"


def syncs(ctx: Context) -> dict:
    """One whole base-size training step under the sync capture, phase by phase."""
    model, runner = build(ctx, "rexbert", "varlen", compiled=False)
    optimizer = StableAdamW(param_groups(model, 0.01), lr=1e-4)
    rows = phase1_rows(ctx)
    host = mlm_batch([m for row in rows for m in row], ctx.sizes.vocab)["packed"]
    host = pinned(host) if ctx.device.type == "cuda" else host  # pinned before the step, as by the DataLoader
    num_items = host["label_positions"].numel()  # a host int, as the trainer passes it
    train_step(runner, optimizer, lambda: to_device(host, ctx.device), ctx.device, num_items)()  # warm-up
    ctx.sync()
    phases = {}
    with capture_syncs(ctx.device) as found:
        batch = to_device(host, ctx.device)
        phases["copy"] = _take(found)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            loss = runner(**batch, num_items_in_batch=num_items).loss
        phases["forward"] = _take(found)
        loss.backward()
        phases["backward"] = _take(found)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases["optimizer"] = _take(found)
    ctx.sync()
    kind = "cuda" if ctx.device.type == "cuda" else "host_reads"
    return {
        "detector": "torch.cuda.set_sync_debug_mode('warn')"
        if kind == "cuda"
        else "Tensor host-read methods (CPU)",
        "attention": model.model.attention_implementation(ctx.device, torch.bfloat16),
        "tokens": host["input_ids"].shape[1],
        "syncs_per_step": sum(sum(p[kind].values()) for p in phases.values()),
        "phases": phases,
    }


def _take(found: dict) -> dict:
    taken = {kind: dict(counter) for kind, counter in found.items()}
    for counter in found.values():
        counter.clear()
    return taken


# ====================================================================== training
VARIANTS = [  # priority order: the verdict's pair first
    ("rexbert varlen", "rexbert", "varlen", False),
    ("modernbert sdpa", "modernbert", "sdpa", False),
    ("rexbert varlen compiled", "rexbert", "varlen", True),
    ("rexbert sdpa", "rexbert", "sdpa", False),
    ("modernbert sdpa compiled", "modernbert", "sdpa", True),
    ("modernbert flex_attention", "modernbert", "flex_attention", False),
]


def training(ctx: Context) -> dict:
    cfg = ctx.config()
    workloads = {
        "phase1_packs": mlm_batch([m for row in phase1_rows(ctx) for m in row], ctx.sizes.vocab, seed=1),
        "long_docs": mlm_batch(
            [ctx.sizes.row_tokens] * (ctx.sizes.step_tokens // ctx.sizes.row_tokens), ctx.sizes.vocab, seed=2
        ),
    }
    rows = []
    for name, family, impl, compiled in VARIANTS:
        cost = ctx.sizes.estimates_s.get(
            "compiled" if compiled else impl, ctx.sizes.estimates_s.get("eager", 0.0)
        )
        if ctx.left() < cost:
            rows.append({"variant": name, "skipped": f"budget: {ctx.left():.0f} s left, needs ~{cost:.0f} s"})
            continue
        if impl == "flex_attention" and ctx.device.type != "cuda":
            rows.append({"variant": name, "skipped": "flex_attention has no backward on CPU"})
            continue
        if compiled and family == "modernbert" and ctx.dry_run:  # tracing it is most of a dry run's time
            rows.append({"variant": name, "skipped": "dry run: only RexBERT is compiled"})
            continue
        try:
            model, runner = build(ctx, family, impl, compiled)
            optimizer = StableAdamW(param_groups(model, 0.01), lr=1e-4)
            for workload, batch in workloads.items():
                inputs = batch["packed"] if family == "rexbert" else batch["padded"]
                on_device = to_device(inputs, ctx.device)
                step = train_step(runner, optimizer, lambda b=on_device: b, ctx.device)
                result = timed(ctx, step, warmup=3 if compiled else 1, repeats=ctx.sizes.timed_steps)
                flops = step_flops(cfg, batch) / result["s_per_step"]
                used = (
                    model.model.attention_implementation(ctx.device, torch.bfloat16)
                    if family == "rexbert"
                    else impl
                )
                rows.append(
                    {
                        "variant": name,
                        "workload": workload,
                        "attention": used,
                        "real_tokens": batch["counts"]["real_tokens"],
                        "documents": len(batch["lengths"]),
                        **result,
                        "real_tokens_per_s": batch["counts"]["real_tokens"] / result["s_per_step"],
                        "mfu_datasheet": flops / ctx.peaks["datasheet"]
                        if ctx.peaks.get("datasheet")
                        else None,
                        "mfu_measured_peak": flops / ctx.peaks["measured"]
                        if ctx.peaks.get("measured")
                        else None,
                    }
                )
        except Exception as error:  # one variant failing (e.g. flex on an old torch) leaves the others
            rows.append({"variant": name, "error": f"{type(error).__name__}: {error}"[:300]})
        finally:
            model = runner = optimizer = None
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    return {"tokens_per_step": ctx.sizes.step_tokens, "rows": rows}


# ====================================================================== inference
def inference_lengths(workload: str, count: int, seed: int = 0) -> list[int]:
    """ModernBERT's protocol: fixed lengths, or normal lengths (mean, std) clipped to [32, max]."""
    kind, size = workload.split("_")
    top, mean = (512, 256) if size in ("512", "256") else (8192, 4096)
    if kind == "fixed":
        return [top] * count
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(count, generator=gen) * mean / 4 + mean).round().clamp(32, top).long().tolist()


def inference(ctx: Context) -> dict:
    rows = []
    for family, impl in (("rexbert", "varlen"), ("modernbert", "sdpa")):
        model, _ = build(ctx, family, impl, compiled=False, dtype=torch.bfloat16)
        model.eval()
        for workload, (count, per_batch) in ctx.sizes.inference.items():
            if ctx.left() < 5:
                rows.append({"model": family, "workload": workload, "skipped": "budget"})
                continue
            top = ctx.sizes.phase1_max if "512" in workload or "256" in workload else ctx.sizes.row_tokens
            lengths = [min(m, top) for m in inference_lengths(workload, count)]
            batches = [
                mlm_batch(lengths[i : i + per_batch], ctx.sizes.vocab, seed=i)["padded"]
                for i in range(0, count, per_batch)
            ]
            batches = [
                to_device({k: b[k] for k in ("input_ids", "attention_mask")}, ctx.device) for b in batches
            ]
            done, tokens, start = 0, 0, None
            with torch.inference_mode():
                model(**batches[0])  # warm-up
                ctx.sync()
                start = time.perf_counter()
                for batch in batches:
                    model(**batch)
                    done, tokens = done + 1, tokens + int(batch["attention_mask"].sum())
                    if ctx.left() < 5:
                        break
                ctx.sync()
            seconds = time.perf_counter() - start
            sequences = sum(len(b["input_ids"]) for b in batches[:done])
            used = (
                model.model.attention_implementation(ctx.device, torch.bfloat16)
                if family == "rexbert"
                else impl
            )
            row = {"model": family, "workload": workload, "attention": used, "sequences": sequences}
            rows.append(row | {"real_tokens_per_s": tokens / seconds})
        model = None
    return {"weights": "bf16", "rows": rows}


# ====================================================================== bf16 weights
def bf16_weights(ctx: Context) -> dict:
    """Max |logit delta| of bf16 weights vs fp32 weights, relative to the fp32 logits' scale."""
    batch = mlm_batch([ctx.sizes.phase1_max, 37, 200, 5], ctx.sizes.vocab, seed=3)["padded"]
    batch = to_device(batch, ctx.device)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    real = batch["attention_mask"].bool()
    result = {}
    for family, impl in (("rexbert", "varlen"), ("modernbert", "sdpa")):
        model, _ = build(ctx, family, impl, compiled=False)
        with torch.inference_mode():
            exact = model.eval()(**inputs).logits.float()[real]
            approx = model.to(torch.bfloat16)(**inputs).logits.float()[real]
        result[f"{family}_relative_error"] = float((approx - exact).abs().max() / exact.abs().max())
    return result


# ====================================================================== verdict
def verdict(report: dict, dry_run: bool) -> list[dict]:
    """Every check with its value and threshold; performance checks are reported, not judged, in a dry run."""
    sections = report["sections"]
    result = lambda name: sections.get(name, {}).get("result") or {}  # noqa: E731
    checks = []

    def check(name: str, value, threshold: str, passes: Callable[[float], bool], performance=False):
        status = "not measured" if value is None else ("pass" if passes(value) else "FAIL")
        if performance and dry_run:
            status += " (not judged: dry run)"
        checks.append({"check": name, "value": value, "threshold": threshold, "status": status})

    def worst(values: list) -> float | None:
        return None if not values or None in values else max(values)

    agree, t = result("agreement").get("rows", []), THRESHOLDS
    fwd = worst([r.get("forward_max_abs_delta") for r in agree])
    grad = worst([r.get(f"{g}_relative_error") for r in agree for g in ("dq", "dk", "dv")])
    check(
        "attention forward max |delta|, bf16 vs fp32 eager",
        fwd,
        f"< {t['forward_max_abs_delta']}",
        lambda v: v < t["forward_max_abs_delta"],
    )
    check(
        "attention dq / dk / dv relative error",
        grad,
        f"< {t['grad_relative_error']}",
        lambda v: v < t["grad_relative_error"],
    )
    n_syncs = result("syncs").get("syncs_per_step")
    check("syncs in copy + forward + backward + optimizer step", n_syncs, "== 0", lambda v: v == 0)

    train = [r for r in result("training").get("rows", []) if "real_tokens_per_s" in r]

    def best(prefix: str, workload: str, key: str) -> float | None:
        """The best value among the variants named ``prefix`` or ``prefix ...`` (e.g. compiled)."""
        named = [r for r in train if r["variant"].split(" compiled")[0].startswith(prefix)]
        values = [r[key] for r in named if r["workload"] == workload and r.get(key) is not None]
        return max(values, default=None)

    ours = best("rexbert varlen", "phase1_packs", "real_tokens_per_s")  # eager or compiled
    theirs = next(
        (
            r["real_tokens_per_s"]
            for r in train
            if (r["variant"], r["workload"]) == ("modernbert sdpa", "phase1_packs")
        ),
        None,
    )
    speedup = ours / theirs if ours and theirs else None
    target = t["speedup_vs_modernbert_sdpa"]
    check(
        "training real tokens/s vs ModernBERT sdpa, phase-1 packs",
        speedup,
        f">= {target}",
        lambda v: v >= target,
        True,
    )
    mfu = best("rexbert", "phase1_packs", "mfu_datasheet") or best(
        "rexbert", "phase1_packs", "mfu_measured_peak"
    )
    check("MFU at 64k tokens, best RexBERT variant", mfu, f">= {t['mfu']}", lambda v: v >= t["mfu"], True)
    mem = [
        [r["peak_mib_delta"] for r in train if r["variant"] == v and r["workload"] == "long_docs"]
        for v in ("rexbert varlen", "modernbert sdpa")
    ]
    ratio = mem[0][0] / mem[1][0] if all(m and m[0] for m in mem) else None
    check("8k-document peak memory, RexBERT / ModernBERT sdpa", ratio, "< 1", lambda v: v < 1.0, True)
    bf16 = result("bf16")
    ours_err, theirs_err = bf16.get("rexbert_relative_error"), bf16.get("modernbert_relative_error")
    limit = None if theirs_err is None else t["bf16_error_vs_modernbert"] * theirs_err + 1e-3
    check(
        "bf16-weight logit error",
        ours_err,
        f"<= {limit} (2 x ModernBERT's + 1e-3)",
        lambda v: limit is not None and v <= limit,
    )
    for name, section in sections.items():
        if section["status"] != "ok":
            checks.append(
                {"check": f"section {name}", "value": section["status"], "threshold": "ok", "status": "FAIL"}
            )
    return checks


# ====================================================================== report
SECTIONS = [  # cheap correctness first; a run short of time skips the tail
    ("header", header),
    ("agreement", agreement),
    ("syncs", syncs),
    ("bf16", bf16_weights),
    ("training", training),
    ("inference", inference),
]


class Report:
    """The run's results, written (atomically) after every section."""

    def __init__(self, out: Path, dry_run: bool):
        self.out, self.data = (
            out,
            {"dry_run": dry_run, "thresholds": THRESHOLDS, "sections": {}, "verdict": None},
        )
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[Context], dict], ctx: Context) -> None:
        start = time.perf_counter()
        entry = {"status": "ok"}
        try:
            if ctx.left() <= 0:
                raise TimeoutError("budget spent before the section started")
            entry["result"] = fn(ctx)
        except Exception as error:  # a failing section is reported; the others still run
            entry = {
                "status": f"error: {type(error).__name__}: {error}"[:500],
                "traceback": traceback.format_exc()[-3000:],
            }
        entry["seconds"] = round(time.perf_counter() - start, 2)
        self.data["sections"][name] = entry
        self.write()

    def write(self) -> None:
        tmp = self.out / ".gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_check.json")
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def markdown(data: dict) -> str:
    lines = [f"# GPU check{' (dry run)' if data['dry_run'] else ''}", ""]
    for name, section in data["sections"].items():
        lines += [f"## {name} ({section['status']}, {section['seconds']} s)", ""]
        result = section.get("result")
        if isinstance(result, dict) and isinstance(result.get("rows"), list) and result["rows"]:
            keys = list(dict.fromkeys(k for row in result["rows"] for k in row))
            lines.append(markdown_table(keys, [[row.get(k, "") for k in keys] for row in result["rows"]]))
        elif result is not None:
            lines.append("```\n" + json.dumps(result, indent=1, default=str) + "\n```")
        lines.append("")
    if data["verdict"]:
        lines += [
            "## verdict",
            "",
            markdown_table(
                ["check", "value", "threshold", "status"], [list(c.values()) for c in data["verdict"]]
            ),
        ]
    return "\n".join(lines) + "\n"


def run(out: Path, device: torch.device, dry_run: bool, budget_s: float) -> int:
    """All sections, then the verdict; returns the exit status."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    ctx, report = Context(device, dry_run, budget_s), Report(out, dry_run)
    with _dry_run_varlen() if dry_run else contextlib.nullcontext(), _watchdog(budget_s + GRACE_S):
        for name, fn in SECTIONS:
            report.run(name, fn, ctx)
    report.data["verdict"] = verdict(report.data, dry_run)
    report.write()
    failed = [c for c in report.data["verdict"] if c["status"] in ("FAIL", "not measured")]
    print(markdown(report.data))
    return 1 if failed else 0


@contextlib.contextmanager
def _watchdog(seconds: float):
    """Raise TimeoutError in the running section once ``seconds`` have passed, so a section that overruns
    its estimate (a slow compile) cannot keep the run past its budget: it is recorded, the rest skipped,
    and the verdict still written."""

    def expire(signum, frame):
        raise TimeoutError(f"the budget (+{GRACE_S:.0f} s grace) is spent")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _dry_run_varlen():
    from modeling_rexbert.varlen_reference import varlen_on_cpu

    return varlen_on_cpu()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="wall-clock budget; sections that do not fit are skipped",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, not the GPU"
    )
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    return run(args.out, device, args.dry_run, args.budget_s)


if __name__ == "__main__":
    raise SystemExit(main())
