"""Attention backends over packed tokens, in one registry.

Shipped next to ``modeling_rexbert.py`` as remote code (torch, transformers and the standard library only;
flash-attn is imported lazily). Every backend has the signature::

    fn(q, k, v, batch, *, window_size, dropout, scale, deterministic) -> (out, weights | None)

with q, k, v and out (N, heads, head_dim) over the N real tokens of ``batch`` (a :class:`PackedBatch`)
and ``window_size=(left, right)`` in FlashAttention's convention: query i attends to keys j of its own
document with i - left <= j <= i + right; (-1, -1) is full attention.

=====================  ==========================================================================
``varlen``             ``torch.nn.attention.varlen.varlen_attn`` (PyTorch's FlashAttention varlen
                       kernel; CUDA, fp16 / bf16, no attention dropout). Reads only ``cu_seqlens``
                       and the host int ``max_seqlen``: no device-to-host copy.
``flash_attention_2``  ``flash_attn.flash_attn_varlen_func`` (optional ``flash-attn`` package).
``sdpa``               ``F.scaled_dot_product_attention`` on documents grouped by length (global
                       layers) or on query blocks with a band mask (local layers): few large calls,
                       no S x S matrix. Plans from host document lengths (one host read per forward).
``eager``              explicit softmax(QK^T) per document; returns the attention weights.
=====================  ==========================================================================

:func:`select_backend` picks ``varlen`` on CUDA whenever it applies and ``sdpa`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .packing_rexbert import PackedBatch

GLOBAL_WINDOW = (-1, -1)


# ====================================================================== GPU kernels
def _varlen_attn_fn():
    """``torch.nn.attention.varlen.varlen_attn``, or None on PyTorch < 2.10 (kept a function so tests can
    substitute a reference implementation)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_attention(q, k, v, batch: PackedBatch, *, window_size, dropout, scale, deterministic=False):
    """PyTorch's varlen FlashAttention kernel on the packed stream (CUDA, fp16 / bf16)."""
    if dropout:
        raise ValueError(
            "the 'varlen' attention backend has no attention dropout: set attention_dropout=0 "
            "or use attention_backend='sdpa' / 'flash_attention_2'"
        )
    varlen_attn = _varlen_attn_fn()
    if varlen_attn is None:
        raise ImportError("attention_backend='varlen' needs torch>=2.10 (torch.nn.attention.varlen)")
    out = varlen_attn(
        q,
        k,
        v,
        batch.cu_seqlens,
        batch.cu_seqlens,
        batch.max_seqlen,
        batch.max_seqlen,
        scale=scale,
        window_size=tuple(window_size),
    )
    return out, None


def flash_attention(q, k, v, batch: PackedBatch, *, window_size, dropout, scale, deterministic=False):
    """flash-attn 2 ``flash_attn_varlen_func`` on the packed stream (CUDA, fp16 / bf16)."""
    try:  # inside try: transformers' remote-code import check skips optional imports there
        from flash_attn import flash_attn_varlen_func
    except ImportError as err:
        raise ImportError(
            "attention_backend 'flash_attention_2' needs the flash-attn package and a CUDA GPU "
            "(pip install 'rexbert[gpu]'); the default 'varlen' backend needs neither"
        ) from err
    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):  # flash-attn kernels exist for half precision only
        q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
    out = flash_attn_varlen_func(
        q,
        k,
        v,
        batch.cu_seqlens,
        batch.cu_seqlens,
        batch.max_seqlen,
        batch.max_seqlen,
        dropout_p=dropout,
        softmax_scale=scale,
        causal=False,
        window_size=tuple(window_size),
        deterministic=deterministic,
    )
    return out.to(dtype), None


# ====================================================================== sdpa: length buckets / blocked band
@dataclass
class DenseBuckets:
    """Documents batched by similar length: one sdpa call per bucket of shape (n, heads, L, d).

    Tokens are gathered once into a padded stream (``gather``; None when the token stream already is
    that stream, e.g. equal-length rows), each bucket is a slice of it, and ``scatter`` puts the real
    tokens' outputs back in stream order. ``buckets`` holds (n, L, key_mask) with an additive
    (n, 1, 1, L) mask hiding padded keys, or None when the bucket has no padding (unmasked sdpa is
    PyTorch's flash kernel: O(L) memory, even for an 8k-token global layer).
    """

    gather: torch.Tensor | None  # (P,) token index of every padded-stream row
    buckets: list[tuple[int, int, torch.Tensor | None]]
    scatter: torch.Tensor | None  # (N,) padded-stream row of every token


@dataclass
class BlockedGroup:
    """Sliding-window attention over all N tokens in O(N * window) memory.

    The N tokens form one stream with ``half`` masked key slots in front and behind. Query block p
    (``block`` tokens) attends to the ``block + 2 * half`` keys around it -- overlapping windows gathered
    with one ``index_select`` of ``key_rows`` -- and ``mask`` keeps keys of the same document within
    distance <= half. Any token's +-half window lies inside its block's key span, so documents need no
    alignment and no S x S matrix is ever built.
    """

    block: int
    half: int
    nblocks: int
    ntokens: int
    mask: torch.Tensor  # (nblocks, 1, block, block + 2 * half) additive: 0 = attend, -inf = not
    key_rows: torch.Tensor  # (nblocks * (block + 2 * half),) token (0..N-1) read by every key slot


# Documents in one bucket are at least this fraction of its longest: <= 1.8x wasted scores in the worst
# case, ~8 buckets for 32 texts of 10..512 tokens. Each sdpa call is a thread barrier on CPU, so a few
# large calls beat one call per document.
BUCKET_MIN_FILL = 0.75


def _dense_buckets(seqlens: list[int], device: torch.device, dtype: torch.dtype) -> DenseBuckets:
    starts = [0]
    for n in seqlens:
        starts.append(starts[-1] + n)
    docs = [d for d, n in enumerate(seqlens) if n > 0]
    lengths = {seqlens[d] for d in docs}
    if len(lengths) <= 1:  # equal-length documents: the token stream is already the padded stream
        L = lengths.pop() if lengths else 0
        return DenseBuckets(None, [(len(docs), L, None)] if docs else [], None)
    order = sorted(docs, key=lambda d: -seqlens[d])
    groups: list[list[int]] = [[order[0]]]
    for d in order[1:]:
        if seqlens[d] < BUCKET_MIN_FILL * seqlens[groups[-1][0]]:
            groups.append([])
        groups[-1].append(d)
    gather, buckets = [], []
    scatter = torch.empty(starts[-1], dtype=torch.long, device=device)
    row = 0
    for members in groups:
        L = seqlens[members[0]]
        lens = torch.tensor([seqlens[d] for d in members], device=device)
        r = torch.arange(L, device=device)
        real = r[None, :] < lens[:, None]  # (n, L)
        first = torch.tensor([starts[d] for d in members], device=device)[:, None]
        gather.append(torch.where(real, first + r, first).reshape(-1))  # pad rows re-read a real token
        for j, d in enumerate(members):
            scatter[starts[d] : starts[d + 1]] = row + j * L + torch.arange(seqlens[d], device=device)
        mask = None
        if any(seqlens[d] != L for d in members):
            mask = torch.zeros(len(members), 1, 1, L, dtype=dtype, device=device)
            mask.masked_fill_(~real[:, None, None, :], float("-inf"))
        buckets.append((len(members), L, mask))
        row += len(members) * L
    return DenseBuckets(torch.cat(gather), buckets, scatter)


def _blocked_group(seqlens: list[int], half: int, device: torch.device, dtype: torch.dtype) -> BlockedGroup:
    """All N tokens (documents tile the stream) in query blocks with a band + same-document mask."""
    block = half
    span = block + 2 * half  # keys seen by one query block
    docs = [n for n in seqlens if n > 0]
    doc = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(docs)])
    pos = torch.cat([torch.arange(n, device=device) for n in docs])
    ntok = int(doc.numel())
    nblocks = -(-ntok // block)
    rows = half + nblocks * block + half
    # Padded stream: [half pad | tokens | tail padding | half pad]; pad rows carry doc id -1.
    doc_rows = torch.full((rows,), -1, device=device)
    pos_rows = torch.zeros(rows, dtype=torch.long, device=device)
    doc_rows[half : half + ntok] = doc
    pos_rows[half : half + ntok] = pos
    q_row = half + torch.arange(nblocks * block, device=device).view(nblocks, block)  # (nb, block)
    k_row = torch.arange(nblocks, device=device)[:, None] * block + torch.arange(span, device=device)
    dq, dk = doc_rows[q_row][:, :, None], doc_rows[k_row][:, None, :]
    near = (pos_rows[q_row][:, :, None] - pos_rows[k_row][:, None, :]).abs() <= half
    mask = (dq == dk) & (dk >= 0) & near
    # Padding query rows (outputs discarded) attend to themselves so no softmax row is empty (no NaN).
    mask |= (dq < 0) & (q_row[:, :, None] == k_row[:, None, :])
    # Additive float mask built once per forward: sdpa's CPU kernel would convert a bool mask per call.
    additive = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(~mask, float("-inf"))
    return BlockedGroup(
        block, half, nblocks, ntok, additive.unsqueeze(1), (k_row - half).clamp_(0, ntok - 1).reshape(-1)
    )


def sdpa_plan(batch: PackedBatch, half: int | None, dtype: torch.dtype) -> DenseBuckets | BlockedGroup:
    """How sdpa attends at one half window (None = global); built once per forward, shared by all layers.

    Local layers use the blocked kernel for every document as soon as one exceeds the half window (short
    documents are exact there too); global layers, and local layers whose documents all fit the window,
    use length buckets."""
    key = ("sdpa", half, dtype)
    if key not in batch.cache:
        seqlens = batch.host_seqlens()
        device = batch.cu_seqlens.device
        if half is not None and any(n > half + 1 for n in seqlens):  # some pair is out of window
            batch.cache[key] = _blocked_group(seqlens, half, device, dtype)
        else:
            batch.cache[key] = _dense_buckets(seqlens, device, dtype)
    return batch.cache[key]


def sdpa_attention(q, k, v, batch: PackedBatch, *, window_size, dropout, scale, deterministic=False):
    """Per-document sdpa over packed tokens: no padding and no cross-document scores are computed."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
        # PyTorch's CPU flash kernel trains (forward with grad + backward) 2-3x slower in bf16 than in
        # fp32 at these head sizes; inference is faster in bf16 and stays there.
        with torch.autocast("cpu", enabled=False):  # autocast would cast q, k, v back to bf16
            out, _ = sdpa_attention(
                q.float(), k.float(), v.float(), batch, window_size=window_size, dropout=dropout, scale=scale
            )
        return out.to(q.dtype), None
    half = None if tuple(window_size) == GLOBAL_WINDOW else window_size[0]
    plan = sdpa_plan(batch, half, q.dtype)
    if isinstance(plan, BlockedGroup):
        return _blocked_attention(q, k, v, plan, dropout, scale), None
    heads, d = q.shape[1], q.shape[2]
    if plan.gather is not None:
        q, k, v = (t.index_select(0, plan.gather) for t in (q, k, v))  # (P, heads, d) padded stream
    outs, row = [], 0
    for n, L, mask in plan.buckets:
        qb, kb, vb = (t[row : row + n * L].view(n, L, heads, d).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout, scale=scale)
        outs.append(o.transpose(1, 2).reshape(n * L, heads, d))
        row += n * L
    if not outs:
        return q.new_zeros(q.shape), None
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return (out if plan.scatter is None else out.index_select(0, plan.scatter)), None


def _blocked_attention(q, k, v, g: BlockedGroup, dropout: float, scale: float) -> torch.Tensor:
    heads, d, blk = q.shape[1], q.shape[2], g.block
    tail = g.nblocks * blk - g.ntokens
    if tail:  # padding queries (outputs dropped) complete the last block
        q = torch.cat((q, q.new_zeros(tail, heads, d)))
    qb = q.view(g.nblocks, blk, heads, d).transpose(1, 2)  # (nb, heads, blk, d)
    # Overlapping key windows gathered straight from the packed stream (backward: one index_add_).
    kb, vb = (
        t.index_select(0, g.key_rows).view(g.nblocks, -1, heads, d).transpose(1, 2) for t in (k, v)
    )  # (nb, heads, span, d)
    o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=g.mask, dropout_p=dropout, scale=scale)
    return o.transpose(1, 2).reshape(-1, heads, d)[: g.ntokens]


# ====================================================================== eager (attention weights)
def eager_attention(q, k, v, batch: PackedBatch, *, window_size, dropout, scale, deterministic=False):
    """Explicit softmax(QK^T) per document; also returns the weights re-padded to (B, heads, S, S)."""
    heads = q.shape[1]
    out = torch.empty_like(q)
    weights = q.new_zeros(batch.batch_size, heads, batch.seq_len, batch.seq_len)
    flat_pos = (
        batch.indices
        if batch.indices is not None
        else torch.arange(batch.batch_size * batch.seq_len, device=q.device)
    )
    half = None if tuple(window_size) == GLOBAL_WINDOW else window_size[0]
    s = 0
    for n in batch.host_seqlens():
        e, s0 = s + n, s
        s = e
        if n == 0:
            continue
        qd, kd, vd = (t[s0:e].transpose(0, 1) for t in (q, k, v))  # (heads, L, d)
        scores = torch.matmul(qd, kd.transpose(-1, -2)) * scale  # (heads, L, L)
        if half is not None:
            i = torch.arange(n, device=q.device)
            scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > half, float("-inf"))
        probs = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        probs = F.dropout(probs, p=dropout, training=dropout > 0)
        out[s0:e] = torch.matmul(probs, vd).transpose(0, 1)
        cols = flat_pos[s0:e] % batch.seq_len
        row = int(flat_pos[s0]) // batch.seq_len
        weights[row, :, cols[:, None], cols[None, :]] = probs  # (heads, L, L)
    return out, weights


# ====================================================================== registry
AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
ATTENTION_BACKENDS: dict[str, AttentionFn] = {
    "varlen": varlen_attention,
    "flash_attention_2": flash_attention,
    "sdpa": sdpa_attention,
    "eager": eager_attention,
}


def select_backend(requested: str, device: torch.device, dtype: torch.dtype, dropout: float) -> str:
    """Backend for one forward: ``requested`` unless it is ``"auto"``, which means ``varlen`` on CUDA
    for fp16 / bf16 activations without attention dropout when PyTorch has it, else ``sdpa``."""
    if requested != "auto":
        return requested
    if (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and not dropout
        and _varlen_attn_fn() is not None
    ):
        return "varlen"
    return "sdpa"
