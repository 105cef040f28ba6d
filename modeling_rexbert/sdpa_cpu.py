"""CPU scheduling of the ``sdpa`` backend: few large calls, no S x S tensor (package only, not shipped).

The shipped ``attention_rexbert.sdpa_attention`` pads every document to the longest and masks: right
everywhere, and sync-free on a GPU. On a CPU each op is a thread barrier and padding is paid in full, so
``import modeling_rexbert`` replaces it for CPU tensors with this one (:func:`register`):

- global layers group documents into length buckets (each >= 75 % of its bucket's longest), gathered once
  and scattered back once; equal-length documents (full packed rows) are a free view. Unmasked sdpa is
  PyTorch's flash kernel on CPU, so a global layer over 8,192 tokens needs O(S) memory;
- local layers, once any document exceeds the half window, use the blocked sliding window: query blocks
  of ``half`` tokens attend to the ``3 * half`` keys around them with a band + same-document mask.

Both plans are built from host document lengths (one device-to-host read per forward, shared by all
layers), which is why GPUs run ``varlen`` or the shipped sdpa instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import attention_rexbert
from .attention_rexbert import GLOBAL_WINDOW
from .attention_rexbert import sdpa_attention as shipped_sdpa
from .packing_rexbert import PackedBatch


def host_seqlens(batch: PackedBatch) -> list[int]:
    """Document lengths on the host (a device-to-host read), memoised for the forward's other layers."""
    if "seqlens" not in batch.cache:
        batch.cache["seqlens"] = torch.diff(batch.cu_seqlens).tolist()
    return batch.cache["seqlens"]


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
        seqlens = host_seqlens(batch)
        device = batch.cu_seqlens.device
        if half is not None and any(n > half + 1 for n in seqlens):  # some pair is out of window
            batch.cache[key] = _blocked_group(seqlens, half, device, dtype)
        else:
            batch.cache[key] = _dense_buckets(seqlens, device, dtype)
    return batch.cache[key]


def sdpa_attention(q, k, v, batch: PackedBatch, *, window, dropout, scale, need_weights=False):
    """Per-document sdpa over packed tokens: no padding and no cross-document scores are computed. Tensors
    off the CPU go to the shipped (sync-free) backend."""
    if q.device.type != "cpu":
        return shipped_sdpa(q, k, v, batch, window=window, dropout=dropout, scale=scale)
    if q.dtype == torch.bfloat16 and torch.is_grad_enabled():
        # PyTorch's CPU flash kernel trains (forward with grad + backward) 2-3x slower in bf16 than in
        # fp32 at these head sizes; inference is faster in bf16 and stays there.
        with torch.autocast("cpu", enabled=False):  # autocast would cast q, k, v back to bf16
            out, _ = sdpa_attention(
                q.float(), k.float(), v.float(), batch, window=window, dropout=dropout, scale=scale
            )
        return out.to(q.dtype), None
    half = None if tuple(window) == GLOBAL_WINDOW else window[0]
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


def register() -> None:
    """Make the package's ``sdpa`` backend this one (remote-code copies keep the shipped one)."""
    attention_rexbert.ATTENTION_BACKENDS["sdpa"] = sdpa_attention
