"""One-command GPU check of the RexBERT encoder (unattended, a few minutes on one CUDA GPU).

  (a) attention backends in bf16 -- varlen / flash_attention_2 (if importable) / sdpa / eager -- against an
      fp32 eager reference: max |delta| of the attention output on packed and padded layouts, global and
      local windows, and of the MLM logits of a whole model;
  (b) forward+backward training steps at base size on packed 8x512 and 1x8,192 contract batches (bf16
      autocast, default backend), run under ``torch.cuda.set_sync_debug_mode("error")`` so any
      device-to-host synchronisation in the step fails the check;
  (c) real tokens/s and peak memory of RexBERT vs transformers' ``ModernBertForMaskedLM`` (its default
      attention) on the same mixed-length batch (32 texts of 10..512 tokens), inference and training.

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``. ``--dry-run`` runs every part at tiny sizes on
the CPU (backends that need CUDA are reported as skipped) -- what the test suite exercises.

Usage:
  python -m benchmarks.gpu_check --out outputs/gpu_check
  python -m benchmarks.gpu_check --dry-run --device cpu --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
from modeling_rexbert.attention_rexbert import ATTENTION_BACKENDS, GLOBAL_WINDOW
from modeling_rexbert.conversion import rexbert_config_to_modernbert
from modeling_rexbert.packing_rexbert import pack_flat, pack_padded

VOCAB = 50_368
# The dry run's size; the real check runs the paper's base size (RexBertConfig.for_size).
TINY = {"num_hidden_layers": 3, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 2}


def model_config(size: str, max_len: int) -> RexBertConfig:
    if size == "tiny":
        return RexBertConfig(vocab_size=VOCAB, max_position_embeddings=max_len, **TINY)
    return RexBertConfig.for_size(size, vocab_size=VOCAB, max_position_embeddings=max_len)


def mixed_lengths(n: int, longest: int) -> list[int]:
    """``n`` document lengths spread evenly over [10, longest] (the serving batch of the CPU benchmark)."""
    return torch.linspace(10, longest, n).round().long().tolist()


def contract_batch(lengths: list[int], device: torch.device, seed: int = 0) -> dict:
    """A packed micro-batch as the collator builds it (30% of tokens labelled)."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    ids = torch.randint(1000, 30_000, (1, n), generator=gen)
    labels = torch.where(torch.rand(1, n, generator=gen) < 0.3, ids, torch.full_like(ids, -100))
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    batch = {
        "input_ids": ids,
        "labels": labels,
        "cu_seqlens": cu,
        "position_ids": torch.cat([torch.arange(m) for m in lengths])[None],
        "label_positions": (labels[0] != -100).nonzero().squeeze(1),
    }
    return {k: v.to(device) for k, v in batch.items()} | {"max_seqlen": max(lengths)}


def padded_batch(lengths: list[int], device: torch.device, seed: int = 0) -> dict:
    """The same kind of documents right-padded to (B, S) with an attention mask (ModernBERT's input)."""
    gen = torch.Generator().manual_seed(seed)
    S = max(lengths)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(1000, 30_000, (len(lengths), S), generator=gen) * mask
    labels = torch.where((torch.rand(ids.shape, generator=gen) < 0.3) & mask.bool(), ids, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def available_backends(device: torch.device) -> dict[str, str | None]:
    """Backend -> None when it can run here, else why not."""
    status: dict[str, str | None] = {"sdpa": None, "eager": None}
    status["varlen"] = None if device.type == "cuda" else "CUDA only"
    try:
        import flash_attn  # noqa: F401

        status["flash_attention_2"] = None if device.type == "cuda" else "CUDA only"
    except ImportError:
        status["flash_attention_2"] = "flash-attn not installed"
    return status


# ------------------------------------------------------------------------------ (a) backend agreement
def backend_agreement(device: torch.device, heads: int, head_dim: int, half_window: int) -> list[dict]:
    """Attention output of every backend in bf16 vs fp32 eager, on packed and padded layouts."""
    lengths = [300, 7, 129, 64, 512, 1]
    layouts = {
        "packed": pack_flat(
            sum(lengths),
            torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32),
            max(lengths),
            None,
            device,
        ),
        "padded": pack_padded(
            len(lengths),
            max(lengths),
            device,
            (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long(),
        ),
    }
    gen = torch.Generator().manual_seed(0)
    rows = []
    for layout, batch in layouts.items():
        q, k, v = (torch.randn(batch.num_tokens, heads, head_dim, generator=gen).to(device) for _ in range(3))
        for window in (GLOBAL_WINDOW, (half_window, half_window)):
            kind = "global" if window == GLOBAL_WINDOW else f"local +-{half_window}"
            args = {"window_size": window, "dropout": 0.0, "scale": head_dim**-0.5}
            ref, _ = ATTENTION_BACKENDS["eager"](q, k, v, batch, **args)
            for name, why in available_backends(device).items():
                row = {"layout": layout, "window": kind, "backend": name}
                if why:
                    rows.append(row | {"max_abs_delta": None, "note": why})
                    continue
                out, _ = ATTENTION_BACKENDS[name](*(t.bfloat16() for t in (q, k, v)), batch, **args)
                rows.append(row | {"max_abs_delta": float((out.float() - ref).abs().max()), "note": ""})
    return rows


def model_agreement(cfg: RexBertConfig, device: torch.device, lengths: list[int]) -> list[dict]:
    """MLM logits under bf16 autocast with each backend vs the fp32 sdpa forward, packed input."""
    model = RexBertForMaskedLM(cfg).to(device).eval()
    batch = contract_batch(lengths, device)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "cu_seqlens", "max_seqlen")}
    rows = []
    with torch.no_grad():
        cfg.attention_backend = "sdpa"
        ref = model(**inputs).logits.float()
        for name, why in available_backends(device).items():
            if why:
                rows.append({"backend": name, "max_abs_delta": None, "note": why})
                continue
            cfg.attention_backend = name
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(**inputs).logits.float()
            rows.append(
                {
                    "backend": name,
                    "max_abs_delta": float((out - ref).abs().max()),
                    "note": f"logit scale {float(ref.abs().max()):.2f}",
                }
            )
    cfg.attention_backend = "auto"
    return rows


# ------------------------------------------------------------------------------ timing helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds per call (after one warm-up) and peak device memory in MiB (CUDA only)."""
    fn()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def train_step_fn(model, batch: dict, device: torch.device) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()

    return step


def infer_fn(model, batch: dict, device: torch.device) -> Callable[[], None]:
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "label_positions")}

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(**inputs)

    return forward


# ------------------------------------------------------------------------------ (b) training steps
def training_steps(
    cfg: RexBertConfig, device: torch.device, shapes: dict[str, list[int]], repeats: int
) -> list[dict]:
    model = RexBertForMaskedLM(cfg).to(device).train()
    rows = []
    for name, lengths in shapes.items():
        batch = contract_batch(lengths, device)
        step = train_step_fn(model, batch, device)
        step()  # warm-up (kernel selection, allocator) outside the sync check
        synchronize(device)
        sync_check = "not checked (CPU)"
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")  # any device-to-host sync in the step raises
            try:
                step()
                sync_check = "no sync"
            except RuntimeError as err:  # reported, not fatal: the timings below still matter
                sync_check = f"SYNC: {str(err).splitlines()[0][:120]}"
            finally:
                torch.cuda.set_sync_debug_mode("default")
        seconds, peak = timed(step, device, repeats)
        backend = model.model.attention_backend(device, torch.bfloat16)
        rows.append(
            {
                "input": name,
                "tokens": sum(lengths),
                "backend": backend,
                "s_per_step": seconds,
                "tokens_per_s": sum(lengths) / seconds,
                "peak_mib": peak,
                "sync_check": sync_check,
            }
        )
    return rows


# ------------------------------------------------------------------------------ (c) vs transformers
def versus_modernbert(
    cfg: RexBertConfig, device: torch.device, lengths: list[int], repeats: int
) -> list[dict]:
    from transformers import ModernBertForMaskedLM

    torch.manual_seed(0)
    ours = RexBertForMaskedLM(cfg).to(device)
    theirs = ModernBertForMaskedLM(rexbert_config_to_modernbert(cfg)).to(device)  # its default attention
    theirs.load_state_dict(ours.state_dict())
    theirs.config.sparse_prediction = True  # like for like: both heads run on labelled tokens only
    real = sum(lengths)
    packed, padded = contract_batch(lengths, device), padded_batch(lengths, device)
    cases = [
        ("inference", "rexbert (packed)", ours, infer_fn(ours, packed, device)),
        ("inference", "rexbert (padded)", ours, infer_fn(ours, padded, device)),
        ("inference", "modernbert", theirs, infer_fn(theirs, padded, device)),
        ("training", "rexbert (packed)", ours, train_step_fn(ours, packed, device)),
        ("training", "modernbert", theirs, train_step_fn(theirs, padded, device)),
    ]
    rows = []
    for mode, name, model, fn in cases:
        model.train(mode == "training")
        seconds, peak = timed(fn, device, repeats)
        rows.append(
            {
                "mode": mode,
                "model": name,
                "real_tokens": real,
                "s_per_batch": seconds,
                "real_tokens_per_s": real / seconds,
                "peak_mib": peak,
                "attention": theirs.config._attn_implementation
                if name == "modernbert"
                else ours.model.attention_backend(device, torch.bfloat16),
            }
        )
    for mode in ("inference", "training"):
        base = next(r for r in rows if r["mode"] == mode and r["model"] == "modernbert")
        for r in rows:
            if r["mode"] == mode:
                r["speedup_vs_modernbert"] = base["s_per_batch"] / r["s_per_batch"]
    return rows


# ------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    def table(rows: list[dict]) -> str:
        if not rows:
            return "(none)\n"
        keys = list(rows[0])
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    head = (
        f"GPU check -- {report['device_name']}, torch {report['torch']}, size {report['size']}, "
        f"{report['seconds']:.0f} s{' (dry run)' if report['dry_run'] else ''}\n"
    )
    return "\n".join(
        [
            head,
            "**(a) attention backends, bf16 vs fp32 eager (max |delta| of the attention output)**\n",
            table(report["backend_agreement"]),
            "**(a) MLM logits, bf16 autocast per backend vs fp32 sdpa (packed input)**\n",
            table(report["model_agreement"]),
            "**(b) training steps (bf16 autocast, sync debug mode 'error' on CUDA)**\n",
            table(report["training_steps"]),
            "**(c) vs transformers' ModernBertForMaskedLM, same mixed-length batch**\n",
            table(report["versus_modernbert"]),
        ]
    )


def run(device: torch.device, dry_run: bool, repeats: int) -> dict:
    start = time.perf_counter()
    size = "tiny" if dry_run else "base"
    long_len = 256 if dry_run else 8192
    cfg = model_config(size, max_len=long_len)
    heads, head_dim = cfg.num_attention_heads, cfg.head_dim
    shapes = (
        {"packed 4x64": [64] * 4, "1x256": [256]}
        if dry_run
        else {"packed 8x512": [512] * 8, "1x8192": [8192]}
    )
    mixed = mixed_lengths(8 if dry_run else 32, 64 if dry_run else 512)
    report = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "size": size,
        "dry_run": dry_run,
        "backend_agreement": backend_agreement(device, heads, head_dim, cfg.sliding_window),
        "model_agreement": model_agreement(cfg, device, mixed),
        "training_steps": training_steps(cfg, device, shapes, repeats),
        "versus_modernbert": versus_modernbert(cfg, device, mixed, repeats),
    }
    report["seconds"] = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the script, not the GPU")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (median)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --dry-run --device cpu to check the script", file=sys.stderr)
        return 2
    from transformers.utils import logging

    logging.set_verbosity_error()
    report = run(device, args.dry_run, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out / "gpu_check.json")
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
