"""CPU scheduling of the sparse MLM loss: rows in cache-sized chunks (package only, not shipped).

The shipped ``_SparseCrossEntropy`` converts all (M, V) logits to fp32 at once in forward and again in
backward. On a CPU each pass over a tensor larger than the cache, and each fresh large allocation (page
faults), is paid in memory bandwidth, so ``import modeling_rexbert`` gives CPU tensors these versions
(:func:`register`): rows go through one reused fp32 buffer of about 2^20 values (4 MiB). Under
``torch.compile`` (which fuses the whole-tensor version) and on accelerators the shipped code runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .modeling_rexbert import _SparseCrossEntropy

CHUNK_VALUES = 1 << 20  # fp32 values per chunk: 4 MiB, within a core's L2 cache on current server CPUs

shipped_log_sum_exp = _SparseCrossEntropy.log_sum_exp
shipped_softmax_minus_onehot = _SparseCrossEntropy.softmax_minus_onehot


def _eager_cpu(logits: torch.Tensor) -> bool:
    return logits.device.type == "cpu" and not torch.compiler.is_compiling()


def row_chunks(logits: torch.Tensor, dtype: torch.dtype) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, those rows of ``logits`` copied into the reused ``dtype`` buffer of shape (r, V))."""
    size = max(1, min(logits.shape[0], CHUNK_VALUES // max(1, logits.shape[-1])))
    buffer = logits.new_empty((size, logits.shape[-1]), dtype=dtype)  # (chunk, V)
    for start in range(0, logits.shape[0], size):
        rows = slice(start, start + size)
        yield rows, buffer[: logits[rows].shape[0]].copy_(logits[rows])


def log_sum_exp(logits: torch.Tensor) -> torch.Tensor:
    """(M,) log-sum-exp of each row in (at least) fp32: the shipped function's result."""
    if not _eager_cpu(logits):
        return shipped_log_sum_exp(logits)
    lse = logits.new_empty(logits.shape[0], dtype=torch.promote_types(logits.dtype, torch.float32))
    for rows, work in row_chunks(logits, lse.dtype):
        peak = work.amax(dim=-1, keepdim=True)  # (r, 1)
        lse[rows] = work.sub_(peak).exp_().sum(dim=-1).log_().add_(peak[:, 0])
    return lse


def softmax_minus_onehot(logits, targets, lse, scale) -> torch.Tensor:
    """(M, V) gradient of sum(CE) × ``scale`` in the logits' dtype: the shipped function's result."""
    if not _eager_cpu(logits):
        return shipped_softmax_minus_onehot(logits, targets, lse, scale)
    grad = torch.empty_like(logits)
    for rows, work in row_chunks(logits, lse.dtype):
        probs = work.sub_(lse[rows, None]).exp_()  # (r, V) softmax
        probs[torch.arange(probs.shape[0]), targets[rows]] -= 1.0
        grad[rows] = probs.mul_(scale)
    return grad


def register() -> None:
    """Make the package's sparse MLM loss use these on CPU tensors (remote-code copies keep the shipped)."""
    _SparseCrossEntropy.log_sum_exp = staticmethod(log_sum_exp)
    _SparseCrossEntropy.softmax_minus_onehot = staticmethod(softmax_minus_onehot)
