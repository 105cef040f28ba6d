"""Which precision a run computes in: bf16 autocast where the device computes bf16 natively *and* faster,
fp32 elsewhere.

``auto`` decides per device:

* CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and later).
* CPU: bf16 only when oneDNN has native bf16 kernels (AVX512-BF16 or AMX) **and** a short matmul race at a
  training-like shape says bf16 is clearly faster. The flag alone is not enough: on AVX2 CPUs bf16 is
  emulated (20-70x slower than fp32), and a CPU that merely converts bf16 gains nothing. The race runs once
  per process (cached, like the peak-FLOPs probe of ``training/mfu.py``) and costs well under a second.

``bf16`` / ``fp32`` force the choice. bf16 here always means *autocast*: weights, gradients and optimizer
state stay fp32 (small updates would vanish in bf16 weights); matmuls and attention run in bf16.

    precision = resolve_precision("auto", "cpu")
    with precision.autocast("cpu"):
        logits = model(**batch).logits
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

CHOICES = ("auto", "bf16", "fp32")

# (tokens, hidden) @ (hidden, 3 * hidden): a 256-wide encoder's Wqkv on a 32 x 128-token micro-batch, the
# GEMMs a CPU training step spends most of its time in.
RACE_SHAPE = (4096, 256, 768)
# A training step gains much less than its GEMMs (casts, norms, attention softmax, optimizer stay fp32): a
# 2.3x bf16 GEMM gave a 1.3-1.45x step on AVX512-BF16. Below 1.5x the step would gain little or lose.
MIN_MATMUL_SPEEDUP = 1.5

_announced: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class MatmulRace:
    """FLOP/s of the same matmul in fp32 and bf16 (best of a few timed bursts each)."""

    fp32_flops: float
    bf16_flops: float

    @property
    def speedup(self) -> float:
        return self.bf16_flops / max(self.fp32_flops, 1e-9)


@dataclass(frozen=True)
class Precision:
    """The chosen compute precision and why.

    Args:
        dtype: ``torch.bfloat16`` (autocast) or ``torch.float32`` (no autocast).
        reason: one line saying how the choice was made (printed once, recorded in summaries).
    """

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    def autocast(self, device: torch.device | str = "cpu"):
        """``torch.autocast`` in bf16 on ``device``'s type, or a no-op context for fp32."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

    def as_dict(self) -> dict:
        return {"precision": self.name, "reason": self.reason}


def time_matmul(
    m: int, k: int, n: int, device: torch.device | str = "cpu", dtype=torch.float32, seconds: float = 0.5
) -> float:
    """FLOP/s of repeated ``(m, k) @ (k, n)`` matmuls in ``dtype``: the best timed burst in ``seconds``."""
    device = torch.device(device)
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.matmul(a, b)  # warm-up (allocations, kernel selection)
    sync()
    best, deadline, reps = 0.0, time.perf_counter() + seconds, 4
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync()
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * m * k * n * reps / elapsed)
        if elapsed < 0.05:
            reps *= 2
    return best


@functools.cache
def race_matmul(device_type: str = "cpu", seconds: float = 0.15) -> MatmulRace:
    """The fp32-vs-bf16 race at :data:`RACE_SHAPE`, once per process and device type. Interleaved
    (fp32, bf16, fp32, bf16) so a neighbour's burst of load hits both sides."""
    best = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for _ in range(2):
        for dtype in best:
            best[dtype] = max(best[dtype], time_matmul(*RACE_SHAPE, device_type, dtype, seconds))
    return MatmulRace(fp32_flops=best[torch.float32], bf16_flops=best[torch.bfloat16])


def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 natively here (AVX512-BF16 / AMX); False where it would emulate it (AVX2)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN
        return False


def _auto(device: torch.device, race: Callable[[str], MatmulRace]) -> Precision:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "auto: CUDA device with bf16")
        return Precision(torch.float32, "auto: CUDA device without bf16")
    if device.type != "cpu":
        return Precision(torch.float32, f"auto: {device.type} device (bf16 not probed)")
    capability = torch.backends.cpu.get_cpu_capability()
    if not cpu_has_native_bf16():
        reason = f"auto: CPU ({capability}) without native bf16 (bf16 would be emulated)"
        return Precision(torch.float32, reason)
    result = race(device.type)
    measured = f"bf16 matmul {result.speedup:.2f}x fp32 at {'x'.join(map(str, RACE_SHAPE))}"
    if result.speedup >= MIN_MATMUL_SPEEDUP:
        return Precision(torch.bfloat16, f"auto: CPU ({capability}) with native bf16, {measured}")
    return Precision(
        torch.float32, f"auto: CPU ({capability}) with native bf16 but {measured} (< {MIN_MATMUL_SPEEDUP}x)"
    )


def resolve_precision(
    choice: str,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = print,
    race: Callable[[str], MatmulRace] | None = None,
) -> Precision:
    """``choice`` (auto | bf16 | fp32) on ``device`` as a :class:`Precision`.

    Args:
        log: prints the choice, once per process for each (choice, device type); None = silent.
        race: the CPU matmul probe (default :func:`race_matmul`; tests inject a result).
    """
    if choice not in CHOICES:
        raise ValueError(f"precision {choice!r} is not one of {', '.join(CHOICES)}")
    device = torch.device(device)
    if choice == "bf16":
        emulated = device.type == "cpu" and not cpu_has_native_bf16()
        warning = " (this CPU emulates bf16: far slower than fp32)" if emulated else ""
        precision = Precision(torch.bfloat16, "forced: bf16" + warning)
    elif choice == "fp32":
        precision = Precision(torch.float32, "forced: fp32")
    else:
        precision = _auto(device, race or race_matmul)
    key = (choice, device.type)
    if log is not None and key not in _announced:
        _announced.add(key)
        log(f"precision: {precision.name} ({precision.reason})")
    return precision
