"""RexBERT's attention backends over packed tokens, and the rule that picks one per forward.

Every backend is ``fn(q, k, v, batch, *, window, dropout, scale, need_weights) -> (out, weights | None)``
with q, k, v, out: (N, heads, head_dim) over the N real tokens of ``batch`` (a :class:`PackedBatch`) and
``window=(left, right)`` in FlashAttention's convention: query i attends to keys j of its own document
with i - left <= j <= i + right; (-1, -1) is global. ``config._attn_implementation`` names one of them
(any other name goes to transformers' ``AttentionInterface``):

- ``varlen`` (default): PyTorch's FlashAttention varlen kernel. It reads ``cu_seqlens`` and the host int
  ``max_seqlen``, no device-to-host copy. Where it cannot run (:func:`varlen_unavailable`), ``sdpa``.
- ``sdpa``: ``F.scaled_dot_product_attention`` on the documents padded to the longest, with a key mask
  (and the band on local layers); no host read. The ``modeling_rexbert`` package replaces it on CPU
  with length-bucketed / blocked scheduling (``sdpa_cpu.py``, not shipped).
- ``eager``: softmax(QK^T) on the same layout; the only one that returns attention weights.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers.utils import logging

from .packing_rexbert import PackedBatch

logger = logging.get_logger(__name__)

GLOBAL_WINDOW = (-1, -1)
# Eager attention refuses to build a score or weight tensor larger than this (4 GiB in fp32).
MAX_DENSE_ELEMENTS = 2**30


def varlen_attention(q, k, v, batch: PackedBatch, *, window, dropout, scale, need_weights=False):
    from torch.nn.attention.varlen import varlen_attn

    cu, m = batch.cu_seqlens, batch.max_seqlen
    return varlen_attn(q, k, v, cu, cu, m, m, scale=scale, window_size=tuple(window)), None


# The probes answer the same for the whole process: memoised, and constants under torch.compile.
_PROBED: dict = {}


@torch.compiler.assume_constant_result
def varlen_parameters() -> tuple[str, ...] | None:
    """Parameters of this torch's ``varlen_attn`` (None before torch 2.10, which introduced it)."""
    if "varlen" not in _PROBED:
        try:
            from torch.nn.attention.varlen import varlen_attn

            _PROBED["varlen"] = tuple(inspect.signature(varlen_attn).parameters)
        except ImportError:
            _PROBED["varlen"] = None
    return _PROBED["varlen"]


@torch.compiler.assume_constant_result
def cuda_capability(device: torch.device) -> tuple[int, int]:
    if device not in _PROBED:
        _PROBED[device] = torch.cuda.get_device_capability(device)
    return _PROBED[device]


def varlen_unavailable(device: torch.device, dtype: torch.dtype, dropout: float) -> str | None:
    """Why the varlen kernel cannot run a forward with these activations, or None when it can."""
    if device.type != "cuda":
        return "it is CUDA-only"
    params = varlen_parameters()
    if params is None or not {"window_size", "scale"} <= set(params):
        have = "a varlen_attn without window_size / scale" if params else "no torch.nn.attention.varlen"
        return f"torch {torch.__version__} has {have} (torch 2.13 has both)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"it needs fp16 / bf16 activations, not {dtype} (train under bf16 autocast)"
    if cuda_capability(device) < (8, 0):
        return f"FlashAttention needs compute capability >= 8.0; this GPU has {cuda_capability(device)}"
    if dropout:
        return f"it has no attention dropout (attention_dropout={dropout})"
    return None


def select_attention(config, device: torch.device, dtype: torch.dtype, training: bool, weights: bool) -> str:
    """The attention a forward uses: ``eager`` for attention weights, ``sdpa`` where ``varlen`` cannot run
    (one logged line on CUDA), else ``config._attn_implementation``."""
    impl = config._attn_implementation or "varlen"
    if weights or impl != "varlen":  # only eager materialises attention weights
        return "eager" if weights else impl
    why = varlen_unavailable(device, dtype, config.attention_dropout if training else 0.0)
    if why is not None:
        if device.type == "cuda":
            logger.warning_once(f"RexBERT attention falls back from varlen to sdpa: {why}.")
        return "sdpa"
    # PyTorch's FlashAttention backward has no deterministic switch of its own: it follows the global flag.
    on = (
        torch.are_deterministic_algorithms_enabled()
        and not torch.is_deterministic_algorithms_warn_only_enabled()
    )
    if config.deterministic_flash_attn and torch.is_grad_enabled() and not on:
        raise RuntimeError(
            "deterministic_flash_attn=True: the varlen kernel's backward is deterministic only under "
            "torch.use_deterministic_algorithms(True); call it before training, or use "
            "attn_implementation='flash_attention_2' (flash-attn's own switch)"
        )
    return "varlen"


def by_document(batch: PackedBatch, window) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Documents padded to the longest, built on the device from ``cu_seqlens`` (no host read).

    Returns ``gather`` (D, L) token read by every slot (padding re-reads a real token), the boolean
    ``mask`` (D, 1, 1 or L, L) of allowed keys (None when nothing is masked) and ``back`` (N,) the slot of
    every token. Padding queries attend to every key, so no softmax row is empty."""
    D, L, N = batch.num_docs, batch.max_seqlen, batch.num_tokens
    cu = batch.cu_seqlens.long()
    r = torch.arange(L, device=cu.device)
    real = r[None, :] < (cu[1:] - cu[:-1])[:, None]  # (D, L)
    gather = (cu[:-1, None] + r[None, :]).clamp_(max=N - 1)
    doc = batch.doc_ids()
    back = doc * L + torch.arange(N, device=cu.device) - cu[doc]
    half = None if tuple(window) == GLOBAL_WINDOW or window[0] + 1 >= L else window[0]
    if half is None:
        mask = None if N == D * L else (real | ~real.any(1, keepdim=True))[:, None, None, :]
    else:
        band = (r[:, None] - r[None, :]).abs() <= half  # (L, L)
        mask = ((real[:, None, :] & band) | ~real[:, :, None])[:, None]
    return gather, mask, back


def _padded(t: torch.Tensor, gather: torch.Tensor) -> torch.Tensor:
    """(N, heads, d) -> (D, heads, L, d)."""
    return t.index_select(0, gather.flatten()).view(*gather.shape, *t.shape[1:]).transpose(1, 2)


def _unpadded(t: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
    """(D, heads, L, d) -> (N, heads, d)."""
    return t.transpose(1, 2).flatten(0, 1).index_select(0, back)


def sdpa_attention(q, k, v, batch: PackedBatch, *, window, dropout, scale, need_weights=False):
    gather, mask, back = by_document(batch, window)
    q, k, v = (_padded(t, gather) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    return _unpadded(out, back), None


def _refuse_dense(what: str, shape: tuple[int, ...]) -> None:
    if (n := torch.Size(shape).numel()) > MAX_DENSE_ELEMENTS:
        raise ValueError(
            f"eager attention would build {what} of shape {shape} ({n * 4 / 2**30:.0f} GiB in fp32): use "
            "attn_implementation='sdpa' or 'varlen', or pass fewer / shorter documents"
        )


def eager_attention(q, k, v, batch: PackedBatch, *, window, dropout, scale, need_weights=False):
    heads, B, S = q.shape[1], batch.batch_size, batch.seq_len
    _refuse_dense("scores", (batch.num_docs, heads, batch.max_seqlen, batch.max_seqlen))
    if need_weights:
        _refuse_dense("attention weights", (B, heads, S, S))
    gather, mask, back = by_document(batch, window)
    q, k, v = (_padded(t, gather) for t in (q, k, v))
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (D, heads, L, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    probs = F.dropout(probs, dropout, training=dropout > 0)
    out = _unpadded(torch.matmul(probs, v), back)
    if not need_weights:
        return out, None
    # Weights (B, heads, S, S): each real query's row over its document's key slots goes to those keys'
    # input columns. Padding slots hold probability 0 (masked), so adding them anywhere changes nothing.
    flat = batch.indices if batch.indices is not None else torch.arange(B * S, device=q.device)
    columns = (flat[gather] % S)[batch.doc_ids()]  # (N, L)
    rows = _unpadded(probs, back)  # (N, heads, L)
    weights = rows.new_zeros(*rows.shape[:2], S).scatter_add_(2, columns[:, None].expand_as(rows), rows)
    return out, batch.repad(weights).transpose(1, 2)


ATTENTION_BACKENDS = {"varlen": varlen_attention, "sdpa": sdpa_attention, "eager": eager_attention}
