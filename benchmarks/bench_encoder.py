"""Encoder benchmarks: RexBERT vs transformers' ModernBERT (sdpa), same weights, this CPU.

Scenarios (issue 2, "Benchmarks"):
  forward  -- encoder forward on 32 real ESCI product texts (title + description), lengths spread over
              10-512 tokens, right-padded to the longest. Goal: >= 2x throughput. Every row's max abs
              difference is taken against the fp32 ModernBERT output. With ``--onnx`` also ONNX Runtime
              (fp32 graph and its dynamic int8 quantization); on CPUs that compute bf16 natively and faster
              (``rexbert_common.precision``, what ``--dtype auto`` picks) also RexBERT under bf16 autocast.
              Goal (issue 19): the fastest RexBERT row >= 2x the fastest ONNX Runtime row.
  mlm      -- forward+backward MLM step at 8x512 with sparse prediction on both sides. Goal: >= 1.2x.
  memory   -- peak RSS of a 1xS forward for S in 512..8192, each (implementation, S) in a fresh
              subprocess (see ``_common.peak_rss_delta_mib``). Goal at 8192: RexBERT <= 1/4 of ModernBERT.

Both models load the same random-initialised ModernBERT checkpoint folder (RexBERT loads ModernBERT
folders). Runs are interleaved (A B B A ...) and medians compared, because the CPU is shared.

Usage:
  .venv/bin/python -m benchmarks.bench_encoder [--quick] [--sizes micro,base] [--scenarios forward,mlm]
  .venv/bin/python -m benchmarks.bench_encoder --profile --sizes micro   # torch.profiler op tables
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks._common import (
    bert_tokenizer,
    esci_product_texts,
    interleaved_timings,
    markdown_table,
    median,
    peak_rss_delta_mib,
    run_json_subprocess,
)

VOCAB_SIZE = 50_368  # ModernBERT / RexBERT vocabulary: sets the embedding and decoder cost
# Paper Table 2 (= Ettin encoders): layers, hidden, intermediate, heads. "tiny" exists for smoke tests.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (3, 64, 96, 2),
    "micro": (7, 256, 384, 4),
    "mini": (19, 512, 768, 8),
    "base": (22, 768, 1152, 12),
    "large": (28, 1024, 2624, 16),
}
IMPLS = ("modernbert", "rexbert")
ONNX_IMPLS = ("onnxruntime", "onnxruntime-int8")
BF16_IMPL = "rexbert-bf16"
MLM_PROBABILITY = 0.3  # ModernBERT's pre-training rate: sets how many rows the sparse head sees


@dataclass
class Settings:
    """What one invocation runs. ``--quick`` shrinks repeats and the memory sweep."""

    sizes: list[str]
    scenarios: list[str]
    repeats: int  # timed calls per implementation (after one warm-up)
    batch_texts: int = 32  # forward scenario: texts in the mixed-length batch
    max_len: int = 512
    mlm_batch: int = 8  # mlm scenario: rows x max_len tokens
    memory_seqs: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    memory_sizes: tuple[str, ...] = ("micro",)


# ------------------------------------------------------------------------------------------ models
def modernbert_config(size: str, tok, max_position_embeddings: int = 8192):
    from transformers import ModernBertConfig

    layers, hidden, inter, heads = SIZES[size]
    return ModernBertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tok.pad_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        sparse_prediction=True,
    )


def make_checkpoint(size: str, tok, folder: Path) -> Path:
    """Save a random-initialised ModernBertForMaskedLM (seeded) that both implementations load."""
    from transformers import ModernBertForMaskedLM

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(modernbert_config(size, tok))
    out = folder / f"modernbert-{size}"
    model.save_pretrained(out)
    tok.save_pretrained(out)  # `rexbert export onnx` writes a loadable folder: model and tokenizer
    return out


def rexbert_available() -> str | None:
    """None when modeling_rexbert is importable and exports the classes we need, else the reason."""
    try:
        from modeling_rexbert import RexBertForMaskedLM, RexBertModel  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not ready yet"
        return f"{type(exc).__name__}: {exc}"
    return None


def baseline_module(rev: str):
    """``modeling_rexbert.modeling_rexbert`` as of git revision ``rev``, importable beside today's code
    (its files extracted into a throw-away package), so before / after run in one process."""
    import importlib
    import subprocess

    root = Path(__file__).parents[1]
    name = "rexbert_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    if name not in sys.modules:
        tmp = Path(tempfile.mkdtemp(prefix="rexbert-baseline-"))
        (tmp / name).mkdir()
        (tmp / name / "__init__.py").write_text("")
        listing = subprocess.run(
            ["git", "ls-tree", "--name-only", rev, "modeling_rexbert/"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for path in listing:
            if path.endswith(".py") and not path.endswith("__init__.py"):
                code = subprocess.run(
                    ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=True
                ).stdout
                (tmp / name / Path(path).name).write_text(code)
        sys.path.insert(0, str(tmp))
    module = importlib.import_module(f"{name}.modeling_rexbert")
    if hasattr(importlib.import_module(f"{name}.configuration_rexbert"), "CONFIG_CONVERTERS"):
        importlib.import_module(f"{name}.conversion").register()  # ModernBERT folders: the package's job
    return module


class OnnxRuntimeEncoder:
    """The encoder exported by ``rexbert export onnx`` (ModernBERT graph, fp32) in an ONNX Runtime CPU
    session with every graph optimisation on: what a careful CPU user serves today. ``int8``: the same
    graph after ONNX Runtime's dynamic quantization (``quantize_dynamic``: int8 weights, activations
    quantized per call), the usual next step for CPU serving."""

    def __init__(self, folder: Path, int8: bool = False):
        from rexbert_cli.export import export_onnx, onnx_session

        path = folder / "onnx"
        if not path.exists():
            export_onnx(folder, path)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = folder / "encoder.int8.onnx"
            if not quantized.exists():
                quantize_dynamic(path / "model.onnx", quantized, weight_type=QuantType.QInt8)
            path = quantized
        self.session = onnx_session(path, threads=torch.get_num_threads())

    def eval(self) -> OnnxRuntimeEncoder:
        return self

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_):
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        (hidden,) = self.session.run(None, feeds)
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))


class Bf16Autocast(torch.nn.Module):
    """A model run under ``torch.autocast(device, bfloat16)`` (weights stay fp32): the precision
    ``--dtype auto`` / ``mixed_precision: auto`` pick where the CPU computes bf16 natively and faster."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, **inputs):
        device = next(self.model.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            return self.model(**inputs)


def bf16_forward_available() -> str | None:
    """None when ``auto`` precision is bf16 on this CPU, else why the bf16 row is left out."""
    from rexbert_common.precision import resolve_precision

    chosen = resolve_precision("auto", "cpu", log=None)
    return None if chosen.bf16 else chosen.reason


def load_model(impl: str, folder: Path, mlm: bool) -> torch.nn.Module:
    if impl in ONNX_IMPLS:
        if mlm:
            raise ValueError(f"{impl} is timed in the forward scenario only")
        return OnnxRuntimeEncoder(folder, int8=impl == "onnxruntime-int8")
    if impl == BF16_IMPL:
        return Bf16Autocast(load_model("rexbert", folder, mlm))
    if impl.startswith("rexbert@"):  # today's encoder at an earlier commit, for before / after ratios
        module = baseline_module(impl.split("@", 1)[1])
        cls = module.RexBertForMaskedLM if mlm else module.RexBertModel
        kwargs = {"attn_implementation": "sdpa", "sparse_prediction": True} if mlm else {}
        return cls.from_pretrained(folder, dtype=torch.float32, **kwargs).float()
    if impl == "modernbert":
        from transformers import ModernBertForMaskedLM, ModernBertModel

        cls = ModernBertForMaskedLM if mlm else ModernBertModel
        kwargs: dict = {"attn_implementation": "sdpa"}
        if mlm:
            kwargs["sparse_prediction"] = True
    elif impl == "rexbert":
        from modeling_rexbert import RexBertForMaskedLM, RexBertModel

        cls = RexBertForMaskedLM if mlm else RexBertModel
        kwargs = {"attn_implementation": "sdpa", "sparse_prediction": True} if mlm else {}
    else:
        raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLS}")
    model = cls.from_pretrained(folder, dtype=torch.float32, **kwargs)
    return model.float()


# ------------------------------------------------------------------------------------------- inputs
def mixed_length_batch(tok, n: int, max_len: int) -> dict[str, torch.Tensor]:
    """``n`` real ESCI product texts whose token lengths are spread evenly over [10, max_len].

    For each of ``n`` evenly spaced target lengths pick the unused text whose length is closest, then
    right-pad to the longest -- the shape a serving batch of product texts has.
    """
    texts = esci_product_texts()
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_len)["input_ids"]]
    targets = torch.linspace(10, max_len, n).round().long().tolist()
    unused = set(range(len(texts)))
    chosen: list[int] = []
    for target in targets:
        best = min(unused, key=lambda i: (abs(lengths[i] - target), i))
        unused.remove(best)
        chosen.append(best)
    enc = tok(
        [texts[i] for i in chosen],
        truncation=True,
        max_length=max_len,
        padding="longest",
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def packed_mlm_batch(tok, rows: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``rows`` x ``seq`` tokens of concatenated ESCI texts (no padding) with 30% of tokens masked.

    Each row is treated as one sequence by both models (transformers' ModernBERT cannot separate packed
    documents with sdpa), so the comparison is like for like.
    """
    texts = esci_product_texts()
    stream: list[int] = []
    for ids in tok(texts, truncation=True, max_length=seq)["input_ids"]:
        stream.extend(ids)  # each text keeps its [CLS] ... [SEP]
        if len(stream) >= rows * seq:
            break
    if len(stream) < rows * seq:
        raise ValueError(f"ESCI texts hold {len(stream)} tokens, fewer than {rows}x{seq}")
    input_ids = torch.tensor(stream[: rows * seq]).view(rows, seq)
    return mask_tokens(tok, input_ids, torch.ones_like(input_ids), seed)


def padded_mlm_batch(tok, rows: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``rows`` mixed-length ESCI texts (10..seq tokens), right-padded, 30% of real tokens masked."""
    batch = mixed_length_batch(tok, rows, seq)
    return mask_tokens(tok, batch["input_ids"], batch["attention_mask"], seed)


def mask_tokens(
    tok, input_ids: torch.Tensor, attention_mask: torch.Tensor, seed: int
) -> dict[str, torch.Tensor]:
    """Replace MLM_PROBABILITY of the real, non-special tokens by [MASK]; labels -100 elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    special = torch.isin(input_ids, torch.tensor([tok.cls_token_id, tok.sep_token_id])) | (
        attention_mask == 0
    )
    masked = (torch.rand(input_ids.shape, generator=gen) < MLM_PROBABILITY) & ~special
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
    return {
        "input_ids": input_ids.masked_fill(masked, tok.mask_token_id),
        "attention_mask": attention_mask,
        "labels": labels,
    }


# ---------------------------------------------------------------------------------------- scenarios
def forward_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    model.eval()

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(**batch).last_hidden_state

    return run


def packing_contract(batch: dict[str, torch.Tensor]) -> dict:
    """A padded (B, S) MLM batch in the packing contract training uses: the real tokens of every row as
    one document of a (1, N) stream, with cu_seqlens, max_seqlen, position_ids and label_positions."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1)
    labels = batch["labels"][mask][None]
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    return {
        "input_ids": batch["input_ids"][mask][None],
        "position_ids": torch.cat([torch.arange(int(n)) for n in lengths])[None],
        "cu_seqlens": cu,
        "max_seqlen": int(lengths.max()),
        "labels": labels,
        "label_positions": (labels[0] != -100).nonzero().squeeze(1),
    }


def mlm_step_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    model.train()
    if type(model).__module__.startswith("modeling_rexbert"):  # today's RexBERT trains on packed input
        batch = packing_contract(batch)

    def run() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return loss.detach()

    return run


def bench_forward(size: str, folder: Path, tok, cfg: Settings, impls: list[str]) -> list[list]:
    batch = mixed_length_batch(tok, cfg.batch_texts, cfg.max_len)
    real = int(batch["attention_mask"].sum())
    shape = tuple(batch["input_ids"].shape)
    models = {impl: load_model(impl, folder, mlm=False) for impl in impls}
    fns = {impl: forward_fn(m, batch) for impl, m in models.items()}
    outs = {impl: fn() for impl, fn in fns.items()}
    keep = batch["attention_mask"].bool()
    reference = outs["modernbert"][keep].float()  # fp32 transformers: what every row is compared with
    times = interleaved_timings(fns, cfg.repeats, warmup=0)  # the parity call above was the warm-up
    base = median(times["modernbert"])
    diffs = {impl: f"{float((out[keep].float() - reference).abs().max()):.1e}" for impl, out in outs.items()}
    diffs["modernbert"] = "-"
    rows = []
    for impl in impls:
        t = median(times[impl])
        rows.append(
            [
                size,
                impl,
                f"{shape[0]}x{shape[1]}",
                real,
                f"{t:.3f}",
                f"{real / t:,.0f}",
                f"{base / t:.2f}x",
                diffs[impl],
            ]
        )
    return rows


def serving_verdict(rows: list[list]) -> list[str]:
    """Per size: the fastest RexBERT row against the fastest ONNX Runtime row (real tokens/s), with both
    rows' max abs differences vs fp32 (the goal asks for equal or better accuracy)."""
    lines = []
    for size in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == size]
        ours = [r for r in mine if r[1].startswith("rexbert")]
        onnx = [r for r in mine if r[1] in ONNX_IMPLS]
        if not ours or not onnx:
            continue
        speed = lambda r: float(r[5].replace(",", ""))  # noqa: E731
        best, rival = max(ours, key=speed), max(onnx, key=speed)
        lines.append(
            f"{size}: fastest RexBERT ({best[1]}, {best[5]} real tok/s, max abs diff {best[7]}) is "
            f"**{speed(best) / speed(rival):.2f}x** the fastest ONNX Runtime ({rival[1]}, {rival[5]} real "
            f"tok/s, max abs diff {rival[7]}); goal >= 2x at equal or better accuracy"
        )
    return lines


def bench_mlm(size: str, folder: Path, tok, cfg: Settings, impls: list[str]) -> list[list]:
    """Packed full rows (the goal's 8x512) and, for contrast, mixed-length padded rows."""
    inputs = {
        "packed": packed_mlm_batch(tok, cfg.mlm_batch, cfg.max_len),
        "padded": padded_mlm_batch(tok, cfg.mlm_batch, cfg.max_len),
    }
    models = {impl: load_model(impl, folder, mlm=True) for impl in impls}
    rows = []
    for kind, batch in inputs.items():
        n_labels = int((batch["labels"] != -100).sum())
        real = int(batch["attention_mask"].sum())
        shape = "x".join(map(str, batch["input_ids"].shape))
        fns = {impl: mlm_step_fn(m, batch) for impl, m in models.items()}
        losses = {impl: float(fn()) for impl, fn in fns.items()}  # also the warm-up
        loss_diff = f"{max(losses.values()) - min(losses.values()):.1e}" if len(losses) > 1 else "-"
        times = interleaved_timings(fns, cfg.repeats, warmup=0)
        base = median(times["modernbert"])
        for impl in impls:
            t = median(times[impl])
            rows.append(
                [
                    size,
                    kind,
                    impl,
                    shape,
                    real,
                    n_labels,
                    f"{t:.3f}",
                    f"{real / t:,.0f}",
                    f"{base / t:.2f}x",
                    f"{losses[impl]:.4f}",
                    loss_diff,
                ]
            )
    return rows


def memory_worker(impl: str, folder: Path, seq: int) -> dict:
    """Runs inside a fresh subprocess: peak RSS added by one 1 x seq forward, then its time."""
    torch.manual_seed(0)
    model = load_model(impl, folder, mlm=False).eval()
    vocab_hi = min(30_000, model.config.vocab_size)
    ids = torch.randint(1000, vocab_hi, (1, seq))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        model(input_ids=ids[:, :16], attention_mask=mask[:, :16])  # thread pools, oneDNN caches, lazy init

        def run() -> None:
            model(input_ids=ids, attention_mask=mask)

        peak = peak_rss_delta_mib(run)
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return {"impl": impl, "seq": seq, "peak_mib": peak, "seconds": seconds}


def bench_memory(size: str, folder: Path, cfg: Settings, impls: list[str]) -> list[list]:
    order = list(impls)
    rows = []
    for seq in cfg.memory_seqs:
        res = {}
        for impl in impls:  # one fresh process per (impl, seq); alternate order per seq
            args = ["--worker-memory", impl, "--checkpoint", str(folder), "--seq", str(seq)]
            args += ["--threads", str(torch.get_num_threads())]
            res[impl] = run_json_subprocess("benchmarks.bench_encoder", args)
        for impl in impls:
            r, b = res[impl], res["modernbert"]
            rows.append(
                [
                    size,
                    seq,
                    impl,
                    f"{r['peak_mib']:.1f}",
                    f"{r['peak_mib'] / b['peak_mib']:.3f}",
                    f"{r['seconds']:.3f}",
                    f"{b['seconds'] / r['seconds']:.2f}x",
                ]
            )
        impls = impls[::-1]
        print(f"  memory {size} seq={seq} done", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r[1], order.index(r[2])))
    return rows


# ---------------------------------------------------------------------------------------- profiling
def profile_table(fn: Callable[[], object], label: str, rows: int = 15) -> str:
    """torch.profiler op table (self CPU time and self CPU memory) of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        fn()
    avg = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avg)
    head = f"#### {label}: total self CPU {total / 1e6:.2f} s\n\n"
    by_time = avg.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=45)
    by_mem = avg.table(sort_by="self_cpu_memory_usage", row_limit=8, max_name_column_width=45)
    return head + "```\n" + by_time + "\n" + by_mem + "```\n"


def run_profiles(size: str, folder: Path, tok, cfg: Settings, impls: list[str]) -> str:
    out = [f"### profile: {size}\n"]
    if "forward" in cfg.scenarios:
        batch = mixed_length_batch(tok, cfg.batch_texts, cfg.max_len)
        for impl in impls:
            model = load_model(impl, folder, mlm=False)
            out.append(
                profile_table(forward_fn(model, batch), f"forward {impl} {tuple(batch['input_ids'].shape)}")
            )
    if "mlm" in cfg.scenarios:
        batch = packed_mlm_batch(tok, cfg.mlm_batch, cfg.max_len)
        for impl in impls:
            model = load_model(impl, folder, mlm=True)
            out.append(
                profile_table(mlm_step_fn(model, batch), f"mlm step {impl} {cfg.mlm_batch}x{cfg.max_len}")
            )
    if "memory" in cfg.scenarios:
        seq = max(cfg.memory_seqs)
        ids = torch.randint(1000, 30_000, (1, seq))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for impl in impls:
            model = load_model(impl, folder, mlm=False)
            out.append(profile_table(forward_fn(model, batch), f"forward {impl} 1x{seq}"))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="micro only, 3 repeats, memory sweep to 2,048")
    p.add_argument("--sizes", help="comma list of " + ",".join(SIZES) + " (default micro,base)")
    p.add_argument("--scenarios", default="forward,mlm,memory", help="comma list of forward,mlm,memory")
    p.add_argument("--repeats", type=int, help="timed calls per implementation (default 5; quick 3)")
    p.add_argument("--memory-seqs", help="comma list of sequence lengths for the memory sweep")
    p.add_argument("--memory-sizes", help="sizes for the memory sweep (default micro)")
    p.add_argument("--mlm-sizes", help="sizes for the mlm step (default: --sizes)")
    p.add_argument("--impls", default="auto", help="auto (both if modeling_rexbert imports), or a comma list")
    p.add_argument("--profile", action="store_true", help="print torch.profiler op tables instead of timing")
    p.add_argument("--max-len", type=int, default=512, help="longest text / MLM row length (default 512)")
    p.add_argument("--batch-texts", type=int, default=32, help="texts in the forward batch (default 32)")
    p.add_argument("--mlm-batch", type=int, default=8, help="rows of the MLM step (default 8)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice, = cores)")
    p.add_argument("--json", type=Path, help="also write all rows as JSON here")
    # internal: one memory measurement in this (fresh) process
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also time ONNX Runtime (fp32 and dynamic int8) in the forward scenario",
    )
    p.add_argument(
        "--baseline", metavar="REV", help="also time RexBERT as of git revision REV (before/after)"
    )
    p.add_argument("--worker-memory", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def quiet_transformers() -> None:
    """Load reports and progress bars would bury the tables (the head keys are expected to be unused)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    sizes = (args.sizes or ("micro" if quick else "micro,base")).split(",")
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"--sizes: unknown size {s!r}; expected one of {', '.join(SIZES)}")
    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in ("forward", "mlm", "memory"):
            raise SystemExit(f"--scenarios: unknown scenario {s!r}; expected forward, mlm, memory")
    cfg = Settings(
        sizes=sizes,
        scenarios=scenarios,
        repeats=args.repeats or (3 if quick else 5),
        batch_texts=args.batch_texts,
        max_len=args.max_len,
        mlm_batch=args.mlm_batch,
    )
    if quick:
        cfg.memory_seqs = (512, 2048)
    if args.memory_seqs:
        cfg.memory_seqs = tuple(int(x) for x in args.memory_seqs.split(","))
    cfg.memory_sizes = tuple(args.memory_sizes.split(",")) if args.memory_sizes else (sizes[0],)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker_memory:
        print(json.dumps(memory_worker(args.worker_memory, args.checkpoint, args.seq)))
        return 0
    cfg = settings_from(args)
    version = code_version()  # at the start: the encoder may be edited while a long run goes on
    if args.impls == "auto":
        reason = rexbert_available()
        impls = ["modernbert"] if reason else list(IMPLS)
        if reason:
            print(f"note: modeling_rexbert not usable ({reason}); timing ModernBERT only", file=sys.stderr)
    else:
        impls = args.impls.split(",")
    if args.baseline:
        impls.append(f"rexbert@{args.baseline}")
    if "modernbert" not in impls:
        raise SystemExit("--impls must include modernbert (the reference every ratio is taken against)")
    mlm_sizes = args.mlm_sizes.split(",") if args.mlm_sizes else cfg.sizes
    tok = bert_tokenizer()
    torch.manual_seed(0)
    tables: dict[str, list[list]] = {"forward": [], "mlm": [], "memory": []}
    with tempfile.TemporaryDirectory(prefix="rexbert-bench-") as tmp:
        all_sizes = dict.fromkeys([*cfg.sizes, *mlm_sizes, *cfg.memory_sizes])
        folders = {s: make_checkpoint(s, tok, Path(tmp)) for s in all_sizes}
        if args.profile:
            for size in cfg.sizes:
                print(run_profiles(size, folders[size], tok, cfg, impls), flush=True)
            return 0
        forward_impls = [*impls, *(ONNX_IMPLS if args.onnx else ())]
        if "rexbert" in impls and args.impls == "auto":
            reason = bf16_forward_available()
            forward_impls += [BF16_IMPL] if reason is None else []
            if reason:
                print(f"note: no {BF16_IMPL} row ({reason})", file=sys.stderr)
        for size in cfg.sizes:
            if "forward" in cfg.scenarios:
                tables["forward"] += bench_forward(size, folders[size], tok, cfg, forward_impls)
                print(f"  forward {size} done", file=sys.stderr, flush=True)
        for size in mlm_sizes:
            if "mlm" in cfg.scenarios:
                tables["mlm"] += bench_mlm(size, folders[size], tok, cfg, impls)
                print(f"  mlm {size} done", file=sys.stderr, flush=True)
        for size in cfg.memory_sizes:
            if "memory" in cfg.scenarios:
                tables["memory"] += bench_memory(size, folders[size], cfg, impls)
    print(render(tables, cfg, version))
    if args.json:
        args.json.write_text(json.dumps(tables, indent=1))
    return 0


def code_version(path: str = "modeling_rexbert") -> str:
    """Last commit touching ``path`` (+ "-dirty" with local edits): results depend on the encoder."""
    import subprocess

    root = Path(__file__).parents[1]
    try:
        head = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", path],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", path], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def render(tables: dict[str, list[list]], cfg: Settings, version: str) -> str:
    threads = torch.get_num_threads()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    capability = torch.backends.cpu.get_cpu_capability()
    parts = [
        f"Encoder benchmarks -- fp32 unless the row says bf16 / int8, {os.cpu_count()}-core CPU "
        f"({capability}; load average at the end: {load}), {threads} torch threads, torch "
        f"{torch.__version__}, {IMPLS[1]} at {version}; median of {cfg.repeats} interleaved runs; "
        "ratio = ModernBERT time / this time (higher is better); max abs diff against the fp32 ModernBERT "
        "output over real tokens."
    ]
    if tables["forward"]:
        parts.append(
            "\n**Forward, mixed-length ESCI batch** (goal: rexbert >= 2x)\n\n"
            + markdown_table(
                [
                    "size",
                    "impl",
                    "padded shape",
                    "real tokens",
                    "s/batch",
                    "real tok/s",
                    "speed-up",
                    "max abs diff vs fp32",
                ],
                tables["forward"],
            )
        )
        parts += [f"\n{line}" for line in serving_verdict(tables["forward"])]
    if tables["mlm"]:
        parts.append(
            "\n**MLM forward+backward, sparse prediction** (goal: rexbert >= 1.2x)\n\n"
            + markdown_table(
                [
                    "size",
                    "input",
                    "impl",
                    "shape",
                    "real tokens",
                    "labelled",
                    "s/step",
                    "real tok/s",
                    "speed-up",
                    "loss",
                    "loss diff",
                ],
                tables["mlm"],
            )
        )
    if tables["memory"]:
        parts.append(
            "\n**Peak RSS of a 1xS forward** (fresh process each; goal at 8,192: rexbert <= 0.25x)\n\n"
            + markdown_table(
                ["size", "seq", "impl", "peak MiB", "mem / modernbert", "s/forward", "speed-up"],
                tables["memory"],
            )
        )
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
