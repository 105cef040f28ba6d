"""RexBERT: a ModernBERT-architecture encoder that unpads on every attention backend.

Self-contained (torch, transformers and the standard library only; flash-attn is imported lazily) because
this file is copied verbatim into Hub repositories and loaded with ``trust_remote_code=True``.

Data flow of one forward pass::

    (B, S) ids + mask / document ids / position ids / cu_seqlens
      -> VarlenBatch: real-token indices (N,), per-document cu_seqlens, restarting RoPE positions (N,)
      -> embeddings, every Linear / MLP / LayerNorm on (N, H) real tokens only
      -> attention per document through ONE backend registry (sdpa | eager | flash_attention_2)
      -> re-pad to (B, S, H) once at the end (pad rows are zeros)

State-dict names are identical to transformers' ``ModernBertForMaskedLM`` so weights move both ways.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_rexbert import RexBertConfig

_GLOBAL, _LOCAL = "full_attention", "sliding_attention"
# Queries per block of the blocked sliding-window kernel (None = half window). Each block attends to
# block + window keys, so smaller blocks waste fewer scores but make more, smaller sdpa tiles.
BLOCKED_QUERY_BLOCK: int | None = None


# ====================================================================== unpadded batch description
@dataclass
class VarlenBatch:
    """Where the N real tokens of a (B, S) batch live and how they split into documents.

    Attributes:
        batch_size, seq_len: the padded input shape (B, S).
        indices: (N,) flat positions of real tokens in B*S, or None when every position is real.
        cu_seqlens: (D+1,) int32 cumulative document lengths over the N tokens.
        seqlens: host copy of the D document lengths (drives the CPU attention loops).
        position_ids: (N,) long RoPE positions, restarting at each document.
    """

    batch_size: int
    seq_len: int
    indices: torch.Tensor | None
    cu_seqlens: torch.Tensor
    seqlens: list[int]
    position_ids: torch.Tensor
    _plans: dict = field(default_factory=dict, repr=False)

    @property
    def num_tokens(self) -> int:
        return int(self.position_ids.shape[0])

    @property
    def max_seqlen(self) -> int:
        return max(self.seqlens, default=0)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (N, ...)."""
        flat = x.reshape(self.batch_size * self.seq_len, *x.shape[2:])
        return flat if self.indices is None else flat.index_select(0, self.indices)

    def repad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, S, ...), zeros at padded positions."""
        if self.indices is None:
            return x.reshape(self.batch_size, self.seq_len, *x.shape[1:])
        out = x.new_zeros(self.batch_size * self.seq_len, *x.shape[1:])
        out = out.index_put((self.indices,), x)
        return out.view(self.batch_size, self.seq_len, *x.shape[1:])

    def plan(self, window: int | None, dtype: torch.dtype = torch.float32) -> AttentionPlan:
        """Grouping of documents for the sdpa backend, built once per forward and shared by all layers."""
        key = (window, dtype)
        if key not in self._plans:
            self._plans[key] = AttentionPlan.build(self.seqlens, window, self.cu_seqlens.device, dtype)
        return self._plans[key]


def build_varlen_batch(
    batch_size: int,
    seq_len: int,
    device: torch.device,
    attention_mask: torch.Tensor | None = None,
    document_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> VarlenBatch:
    """Describe the documents of a batch from whichever packing signal was given.

    Precedence: ``cu_seqlens`` (input must be (1, N)) > ``document_ids`` > restarting ``position_ids`` >
    one document per row. Positions with ``attention_mask == 0`` are dropped first.
    """
    B, S = batch_size, seq_len
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"cu_seqlens requires flattened input of shape (1, N); got ({B}, {S})")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("cu_seqlens with a padded attention_mask is ambiguous: pass one or the other")
        cu = cu_seqlens.to(device=device, dtype=torch.int32)
        if cu.ndim != 1 or int(cu[0]) != 0 or int(cu[-1]) != S or bool((cu[1:] < cu[:-1]).any()):
            raise ValueError(f"cu_seqlens must be 1-D, start at 0, be non-decreasing and end at N={S}; "
                             f"got {cu.tolist()[:8]}...")
        seqlens = [n for n in (cu[1:] - cu[:-1]).tolist() if n > 0]
        cu = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32, device=device)
        if max_seqlen is not None and max(seqlens, default=0) > max_seqlen:
            raise ValueError(f"max_seqlen={max_seqlen} is smaller than the longest document "
                             f"({max(seqlens)}) in cu_seqlens")
        starts = cu[:-1].long()
        doc_of_token = torch.repeat_interleave(torch.arange(len(seqlens), device=device),
                                               torch.tensor(seqlens, device=device))
        pos = torch.arange(S, device=device) - starts[doc_of_token]
        return VarlenBatch(B, S, None, cu, seqlens, pos)

    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and document_ids is None and position_ids is None:
        # Fast path: B documents of length S, no gather / scatter at all.
        cu = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=device)
        pos = torch.arange(S, device=device).repeat(B)
        return VarlenBatch(B, S, None, cu, [S] * B if S > 0 else [], pos)

    indices = attention_mask.reshape(-1).nonzero().squeeze(1) if padded else None
    n = int(indices.numel()) if padded else B * S
    token_index = indices if padded else torch.arange(B * S, device=device)
    row = token_index // S
    start = torch.ones(n, dtype=torch.bool, device=device)
    if n:
        start[1:] = row[1:] != row[:-1]
    if document_ids is not None:
        did = document_ids.reshape(-1).to(device)
        did = did[indices] if padded else did
        start[1:] |= did[1:] != did[:-1]
        # A document must be one contiguous run: as many runs as distinct (row, id) pairs.
        n_pairs = torch.unique(torch.stack([row, did]), dim=1).shape[1] if n else 0
        if n_pairs != int(start.sum()):
            raise ValueError("document_ids: every document must be one contiguous run of tokens within a row "
                             "(an id re-appears after a different id)")
    given_pos = None
    if position_ids is not None:
        given_pos = position_ids.reshape(-1).to(device)
        given_pos = given_pos[indices] if padded else given_pos
        if document_ids is None:
            start[1:] |= given_pos[1:] <= given_pos[:-1]
    starts = start.nonzero().squeeze(1)
    seqlens = torch.diff(torch.cat([starts, torch.tensor([n], device=device)])).tolist()
    cu = torch.zeros(len(seqlens) + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.tensor(seqlens, device=device).cumsum(0)
    if given_pos is not None and document_ids is None:
        pos = given_pos.long()
    else:
        doc_of_token = start.long().cumsum(0) - 1
        pos = torch.arange(n, device=device) - starts[doc_of_token]
    return VarlenBatch(B, S, indices, cu, seqlens, pos)


# ====================================================================== sdpa plan (CPU-friendly grouping)
@dataclass
class DenseBuckets:
    """Documents batched by similar length: one sdpa call per bucket of shape (n, heads, L, d).

    Tokens are gathered once into a padded stream (``gather``; None when the token stream already is
    that stream, e.g. equal-length rows), each bucket is a slice of it, and one ``scatter`` gather puts
    the real tokens' outputs back in stream order. ``buckets`` holds (n, L, key_mask) with an additive
    (n, 1, 1, L) mask hiding padded keys, or None when the bucket has no padding (unmasked sdpa is
    PyTorch's flash kernel: O(L) memory, even for an 8k-token global layer).
    """

    gather: torch.Tensor | None  # (P,) token index of every padded-stream row
    buckets: list[tuple[int, int, torch.Tensor | None]]
    scatter: torch.Tensor | None  # (N,) padded-stream row of every token


@dataclass
class BlockedGroup:
    """Sliding-window attention over all N tokens in O(N * window) memory.

    The N tokens form one stream with ``half`` masked key slots in front and behind. Query
    block p (``block`` tokens) attends to the ``block + 2 * half`` keys around it -- overlapping windows
    gathered with one ``index_select`` of ``key_rows`` (backward: one ``index_add_``, measured ~15% cheaper
    per layer than an ``unfold`` view's fold backward) -- and ``mask`` keeps keys of the same
    document within distance <= half. Any token's +-half window lies inside its block's key span, so
    documents need no alignment and no S x S matrix is ever built.
    """

    block: int
    half: int
    nblocks: int
    ntokens: int
    mask: torch.Tensor  # (nblocks, 1, block, block + 2 * half) additive: 0 = attend, -inf = not
    key_rows: torch.Tensor  # (nblocks * (block + 2 * half),) token (0..N-1) read by every key slot


@dataclass
class AttentionPlan:
    """How the sdpa backend attends at one window size; built once per forward, shared by all layers.

    Exactly one of ``dense`` / ``blocked`` is set. Windowed layers use the blocked kernel for every
    document as soon as one exceeds the half window (short documents are exact there too); global
    layers, and windowed layers whose documents all fit the window, use length buckets.

    Few, large ops matter on a shared CPU: each op is a thread barrier, and per-document sdpa calls
    were measured 5x slower than ~8 length buckets with 2 threads on a busy 2-core machine (equal with
    1 thread), so documents are bucketed rather than attended one by one.
    """

    dense: DenseBuckets | None
    blocked: BlockedGroup | None

    @staticmethod
    def build(seqlens: list[int], window: int | None, device: torch.device,
              dtype: torch.dtype = torch.float32) -> AttentionPlan:
        starts = [0]
        for n in seqlens:
            starts.append(starts[-1] + n)
        half = None if window is None else window // 2
        docs = [d for d, n in enumerate(seqlens) if n > 0]
        if half is not None and any(seqlens[d] > half + 1 for d in docs):  # some pair is out of window
            return AttentionPlan(None, _blocked_group(docs, seqlens, half, device, dtype))
        return AttentionPlan(_dense_buckets(docs, seqlens, starts, device, dtype), None)


# Documents in one bucket are at least this fraction of its longest: <= 1.8x wasted scores in the worst
# case, ~8 buckets for 32 texts of 10..512 tokens.
BUCKET_MIN_FILL = 0.75


def _dense_buckets(docs: list[int], seqlens: list[int], starts: list[int], device: torch.device,
                   dtype: torch.dtype) -> DenseBuckets:
    lengths = {seqlens[d] for d in docs}
    if len(lengths) <= 1:  # equal-length documents: the token stream is already the padded stream
        n = len(docs)
        L = lengths.pop() if lengths else 0
        return DenseBuckets(None, [(n, L, None)] if n else [], None)
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
            scatter[starts[d]:starts[d + 1]] = row + j * L + torch.arange(seqlens[d], device=device)
        mask = None
        if not bool(real.all()):
            mask = torch.zeros(len(members), 1, 1, L, dtype=dtype, device=device)
            mask.masked_fill_(~real[:, None, None, :], float("-inf"))
        buckets.append((len(members), L, mask))
        row += len(members) * L
    return DenseBuckets(torch.cat(gather), buckets, scatter)


def _blocked_group(docs: list[int], seqlens: list[int], half: int, device: torch.device,
                   dtype: torch.dtype) -> BlockedGroup:
    """All N tokens (documents tile the stream) in query blocks with a band + same-document mask."""
    block = BLOCKED_QUERY_BLOCK or half
    span = block + 2 * half  # keys seen by one query block
    doc = torch.cat([torch.full((seqlens[d],), i, device=device) for i, d in enumerate(docs)])
    pos = torch.cat([torch.arange(seqlens[d], device=device) for d in docs])
    ntok = int(doc.numel())
    nblocks = -(-ntok // block)
    rows = half + nblocks * block + half
    # Padded stream: [half pad | group tokens | tail padding | half pad]; pad rows carry doc id -1.
    doc_rows = torch.full((rows,), -1, device=device)
    pos_rows = torch.zeros(rows, dtype=torch.long, device=device)
    doc_rows[half:half + ntok] = doc
    pos_rows[half:half + ntok] = pos
    q_row = half + torch.arange(nblocks * block, device=device).view(nblocks, block)  # (nb, block)
    k_row = torch.arange(nblocks, device=device)[:, None] * block + torch.arange(span, device=device)
    dq, dk = doc_rows[q_row][:, :, None], doc_rows[k_row][:, None, :]
    near = (pos_rows[q_row][:, :, None] - pos_rows[k_row][:, None, :]).abs() <= half
    mask = (dq == dk) & (dk >= 0) & near
    # Padding query rows (outputs discarded) attend to themselves so no softmax row is empty (no NaN).
    mask |= (dq < 0) & (q_row[:, :, None] == k_row[:, None, :])
    # Additive float mask, converted once per forward: sdpa's CPU kernel would convert a bool mask in
    # every call (measured ~13% slower per layer).
    additive = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(~mask, float("-inf"))
    return BlockedGroup(block, half, nblocks, ntok, additive.unsqueeze(1),
                        (k_row - half).clamp_(0, ntok - 1).reshape(-1))


# ====================================================================== attention backends (one registry)
def sdpa_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: VarlenBatch, window: int | None,
    dropout: float, scale: float, deterministic: bool = False,
) -> tuple[torch.Tensor, None]:
    """Per-document sdpa over unpadded tokens: no padding and no cross-document scores are computed.

    q, k, v: (N, heads, d), any row stride -> (N, heads, d)."""
    plan = batch.plan(window, q.dtype)
    if plan.blocked is not None:
        return _blocked_attention(q, k, v, plan.blocked, dropout, scale), None
    dense = plan.dense
    heads, d = q.shape[1], q.shape[2]
    if dense.gather is not None:
        q, k, v = (t.index_select(0, dense.gather) for t in (q, k, v))  # (P, heads, d) padded stream
    outs, row = [], 0
    for n, L, mask in dense.buckets:
        qb, kb, vb = (t[row:row + n * L].view(n, L, heads, d).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout, scale=scale)
        outs.append(o.transpose(1, 2).reshape(n * L, heads, d))  # sdpa's output memory is (n, L, h, d)
        row += n * L
    if not outs:
        return q.new_zeros(q.shape), None
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return (out if dense.scatter is None else out.index_select(0, dense.scatter)), None


def _blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: BlockedGroup,
                       dropout: float, scale: float) -> torch.Tensor:
    heads, d, blk = q.shape[1], q.shape[2], g.block
    tail = g.nblocks * blk - g.ntokens
    if tail:  # padding queries (outputs dropped) complete the last block
        q = torch.cat((q, q.new_zeros(tail, heads, d)))
    qb = q.view(g.nblocks, blk, heads, d).transpose(1, 2)  # (nb, heads, blk, d)
    # Overlapping key windows gathered straight from the unpadded stream: no zero-padded copy of k / v
    # (window slots outside the stream re-read a real token and are masked). Backward: one index_add_.
    kb, vb = (t.index_select(0, g.key_rows).view(g.nblocks, -1, heads, d).transpose(1, 2)
              for t in (k, v))  # (nb, heads, span, d)
    o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=g.mask, dropout_p=dropout, scale=scale)
    return o.transpose(1, 2).reshape(-1, heads, d)[: g.ntokens]


def eager_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: VarlenBatch, window: int | None,
    dropout: float, scale: float, deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit softmax(QK^T) per document; also returns the weights re-padded to (B, heads, S, S).

    Materialises an L x L score matrix per document (it exists to expose attention weights)."""
    heads = q.shape[1]
    out = torch.empty_like(q)
    weights = q.new_zeros(batch.batch_size, heads, batch.seq_len, batch.seq_len)
    flat_pos = (batch.indices if batch.indices is not None
                else torch.arange(batch.batch_size * batch.seq_len, device=q.device))
    cu = batch.cu_seqlens.tolist()
    half = None if window is None else window // 2
    for s, e in zip(cu[:-1], cu[1:]):
        if e == s:
            continue
        qd, kd, vd = (t[s:e].transpose(0, 1) for t in (q, k, v))  # (heads, L, d)
        scores = torch.matmul(qd, kd.transpose(-1, -2)) * scale  # (heads, L, L)
        if half is not None:
            i = torch.arange(e - s, device=q.device)
            scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > half, float("-inf"))
        probs = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        probs = F.dropout(probs, p=dropout, training=dropout > 0)
        out[s:e] = torch.matmul(probs, vd).transpose(0, 1)
        cols = flat_pos[s:e] % batch.seq_len
        row = int(flat_pos[s]) // batch.seq_len
        weights[row, :, cols[:, None], cols[None, :]] = probs  # (heads, L, L)
    return out, weights


def flash_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: VarlenBatch, window: int | None,
    dropout: float, scale: float, deterministic: bool = False,
) -> tuple[torch.Tensor, None]:
    """flash-attn 2 ``flash_attn_varlen_func`` on the unpadded stream (CUDA + fp16/bf16 only).

    Not exercised on the CPU-only development machine; written against flash-attn's documented API."""
    try:  # lazy and inside try: transformers' remote-code import check skips optional imports in try blocks
        from flash_attn import flash_attn_varlen_func
    except ImportError as err:
        raise ImportError("attn_implementation='flash_attention_2' needs the flash-attn package and a CUDA "
                          "GPU (pip install 'rexbert[gpu]'); use 'sdpa' on CPU") from err

    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):  # flash-attn kernels exist for half precision only
        q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
    half = -1 if window is None else window // 2  # window_size=(left, right): keys in [i - left, i + right]
    out = flash_attn_varlen_func(
        q, k, v, batch.cu_seqlens, batch.cu_seqlens, batch.max_seqlen, batch.max_seqlen,
        dropout_p=dropout, softmax_scale=scale, causal=False, window_size=(half, half),
        deterministic=deterministic,
    )
    return out.to(dtype), None


AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
ATTENTION_BACKENDS: dict[str, AttentionFn] = {
    "sdpa": sdpa_varlen_attention,
    "eager": eager_varlen_attention,
    "flash_attention_2": flash_varlen_attention,
}


# ====================================================================== rotary embeddings
def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """RoPE tables for (N,) positions: cos, sin of shape (N, 1, 1, head_dim / 2), computed in fp32.

    Only one half is stored: NeoX rotate-half uses the same angle for channel i and i + d/2."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device,
                                             dtype=torch.float32) / head_dim))
    freqs = (position_ids.float()[:, None] * inv_freq[None, :])[:, None, None, :]  # (N, 1, 1, d/2)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def _rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX rotation of (N, 2, heads, d) by the (N, 1, 1, d/2) angle tables into one new buffer.

    Each half is written in place with out= / addcmul_: no torch.cat of two temporaries."""
    out = torch.empty(qk.shape, dtype=qk.dtype, device=qk.device)
    x1, x2 = qk.chunk(2, dim=-1)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)  # x1 cos - x2 sin
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin)  # x2 cos + x1 sin
    return out


class _Rope(torch.autograd.Function):
    """RoPE with a hand-written backward: the rotation is orthogonal, so the input gradient is the
    output gradient rotated by -theta (R(theta)^T = R(-theta)). Autograd through the elementwise form
    would instead save both halves and run ~6 elementwise backward ops plus slice / cat nodes."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(qk, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin), None, None


def apply_rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``qk`` (N, 2, heads, d) NeoX style (pairs i, i + d/2); returns a new (N, 2, heads, d).

    Works on the two halves directly instead of building rotate_half(x): less memory traffic, which
    matters on CPU where this elementwise work rivals the attention matmuls for small models. The
    angle tables are constants (no gradient flows to cos / sin)."""
    if torch.is_grad_enabled() and qk.requires_grad:
        return _Rope.apply(qk, cos.detach(), sin.detach())
    return _rotate(qk, cos, sin)


# ====================================================================== modules (ModernBERT names)
class RexBertEmbeddings(nn.Module):
    def __init__(self, config: RexBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                           padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None):
        x = inputs_embeds if inputs_embeds is not None else self.tok_embeddings(input_ids)
        return self.drop(self.norm(x))


class RexBertMLP(nn.Module):
    """GeGLU: Wo(act(input) * gate) with input, gate = Wi(x).chunk(2)."""

    def __init__(self, config: RexBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_activation]
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(inp) * gate))


class RexBertAttention(nn.Module):
    def __init__(self, config: RexBertConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.window = config.local_attention if config.layer_types[layer_idx] == _LOCAL else None
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout)

    def forward(self, x: torch.Tensor, batch: VarlenBatch, rope: tuple[torch.Tensor, torch.Tensor],
                backend: str, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, H) -> (N, H), or (len(rows), H) for the given token rows only (every token is still a key)."""
        N = x.shape[0]
        qkv = self.Wqkv(x).view(N, 3, self.num_heads, self.head_dim)  # (N, 3, heads, d)
        cos, sin = rope
        qk, v = qkv.split([2, 1], dim=1)  # split (not slicing) keeps the backward a cat, not zero-fills
        q, k = apply_rope(qk, cos, sin).unbind(1)  # (N, heads, d) views, row stride 2*H
        v = v.squeeze(1)
        dropout = self.config.attention_dropout if self.training else 0.0
        out, weights = ATTENTION_BACKENDS[backend](
            q, k, v, batch, self.window, dropout, self.head_dim**-0.5, self.config.deterministic_flash_attn
        )
        out = out.reshape(N, self.num_heads * self.head_dim)
        if rows is not None:
            out = out.index_select(0, rows)
        return self.out_drop(self.Wo(out)), weights


class RexBertEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: RexBertConfig, layer_idx: int):
        super().__init__()
        # Layer 0 sees the embedding LayerNorm output directly (ModernBERT).
        self.attn_norm = (nn.Identity() if layer_idx == 0
                          else nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias))
        self.attn = RexBertAttention(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.mlp = RexBertMLP(config)
        self.attention_type = config.layer_types[layer_idx]

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: VarlenBatch = None,
                backend: str = "sdpa", rows: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, H) -> (N, H); with ``rows`` (M,) only those tokens' outputs, (M, H): every per-token op after
        attention (output projection, residual, MLP) then runs on M rows."""
        attn_out, weights = self.attn(self.attn_norm(hidden), batch, (cos, sin), backend, rows)
        hidden = (hidden if rows is None else hidden.index_select(0, rows)) + attn_out
        hidden = hidden + self.mlp(self.mlp_norm(hidden))
        return hidden, weights


class RexBertPredictionHead(nn.Module):
    def __init__(self, config: RexBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = ACT2FN[config.classifier_activation]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


# ====================================================================== pretrained base
class RexBertPreTrainedModel(PreTrainedModel):
    config_class = RexBertConfig
    config: RexBertConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RexBertEmbeddings", "RexBertEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_flex_attn = False
    _supports_attention_backend = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """ModernBERT init: truncated normal (+-cutoff sigma); 0.02 for embeddings / Wi / Wqkv,
        0.02 / sqrt(2 * layers) for both Wo, head.dense and the decoder, hidden^-0.5 for classifiers."""
        super()._init_weights(module)
        cfg = self.config
        cutoff = cfg.initializer_cutoff_factor or 3.0
        std_in = cfg.initializer_range
        std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)

        def trunc(layer: nn.Module, std: float) -> None:
            init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)
            if getattr(layer, "bias", None) is not None:
                init.zeros_(layer.bias)

        if isinstance(module, RexBertEmbeddings):
            trunc(module.tok_embeddings, std_in)
        elif isinstance(module, RexBertMLP):
            trunc(module.Wi, std_in)
            trunc(module.Wo, std_out)
        elif isinstance(module, RexBertAttention):
            trunc(module.Wqkv, std_in)
            trunc(module.Wo, std_out)
        elif isinstance(module, RexBertPredictionHead):
            trunc(module.dense, std_out)
        elif isinstance(module, RexBertForMaskedLM):
            trunc(module.decoder, std_out)
        elif isinstance(module, (RexBertForSequenceClassification, RexBertForTokenClassification)):
            trunc(module.classifier, cfg.hidden_size**-0.5)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Write ``auto_map`` for every Auto class (transformers only records the saved class)."""
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


AUTO_MAP = {
    "AutoConfig": "configuration_rexbert.RexBertConfig",
    "AutoModel": "modeling_rexbert.RexBertModel",
    "AutoModelForMaskedLM": "modeling_rexbert.RexBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_rexbert.RexBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_rexbert.RexBertForTokenClassification",
}


@dataclass
class _Encoded:
    hidden: torch.Tensor  # (N, H) after final_norm, or (M, H) for ``rows``
    batch: VarlenBatch
    all_hidden: tuple | None
    attentions: tuple | None
    rows: torch.Tensor | None = None  # (M,) token rows of ``hidden`` when encoded for sparse labels


class RexBertModel(RexBertPreTrainedModel):
    """The bare encoder. ``forward`` returns ``last_hidden_state`` of shape (B, S, H), zeros at padding."""

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        config.validate_rexbert()
        self.embeddings = RexBertEmbeddings(config)
        self.layers = nn.ModuleList(RexBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.gradient_checkpointing = False
        self._warned_eager = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.tok_embeddings = value

    def _backend(self, output_attentions: bool) -> str:
        backend = self.config._attn_implementation or "sdpa"
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attn_implementation={backend!r} is not one of {sorted(ATTENTION_BACKENDS)}")
        if output_attentions and backend != "eager":
            if not self._warned_eager:
                warnings.warn(f"output_attentions=True: using the 'eager' backend instead of {backend!r} "
                              "for this call (only eager materialises attention weights)", stacklevel=3)
                self._warned_eager = True
            backend = "eager"
        return backend

    def encode_unpadded(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        sparse_labels: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> _Encoded:
        """Run the encoder on the real tokens only; returns (N, H) states plus the batch layout.

        With ``sparse_labels`` (B, S), the returned states are only the M labelled tokens' (``!=
        ignore_index``, row-major order, ``_Encoded.rows``): the last layer's output projection,
        residual, MLP and the final norm then run on M rows (all tokens still serve as keys), unless
        ``output_hidden_states`` needs every token's last state."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref.ndim != (2 if input_ids is not None else 3):
            raise ValueError(f"input_ids must be (batch, seq_len) / inputs_embeds (batch, seq_len, hidden); "
                             f"got shape {tuple(ref.shape)}")
        B, S = ref.shape[0], ref.shape[1]
        if B == 0 or S == 0:
            raise ValueError(f"empty input of shape {tuple(ref.shape)}: nothing to encode (was the text "
                             "empty or truncated to zero tokens?)")
        if position_ids is not None and position_ids.shape[0] == 1 and B > 1:
            position_ids = position_ids.expand(B, -1)  # HF-style shared (1, S) positions
        for name, t in (("attention_mask", attention_mask), ("document_ids", document_ids),
                        ("position_ids", position_ids)):
            if t is not None and tuple(t.shape) != (B, S):
                raise ValueError(f"{name} must have shape {(B, S)} like the input; got {tuple(t.shape)}")
        if input_ids is not None and input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                bad = hi if hi >= self.config.vocab_size else lo
                raise ValueError(f"input_ids contain id {bad} outside [0, vocab_size="
                                 f"{self.config.vocab_size}): the tokenizer and the model config disagree")
        batch = build_varlen_batch(B, S, ref.device, attention_mask, document_ids, position_ids,
                                   cu_seqlens, max_seqlen)
        longest = int(batch.position_ids.max()) + 1 if batch.num_tokens else 0
        if longest > self.config.max_position_embeddings:
            raise ValueError(f"input has a document of {longest} positions but "
                             f"max_position_embeddings={self.config.max_position_embeddings}; truncate it "
                             "(tokenizer truncation=True, max_length=...) or raise the config limit")

        if input_ids is not None:
            hidden = self.embeddings(input_ids=batch.unpad(input_ids))  # (N, H)
        else:
            hidden = self.embeddings(inputs_embeds=batch.unpad(inputs_embeds))
        backend = self._backend(output_attentions)
        ropes = {t: rope_cos_sin(batch.position_ids, self.config.head_dim, self.config.rope_theta_for(t),
                                 hidden.dtype) for t in set(self.config.layer_types)}
        rows = None
        if sparse_labels is not None:
            rows = (batch.unpad(sparse_labels) != ignore_index).nonzero().squeeze(1)  # (M,)
        all_hidden = [hidden] if output_hidden_states else None
        attentions = [] if output_attentions else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            cos, sin = ropes[layer.attention_type]
            # Rows are per-token after attention, so selecting them before the last layer's Wo / MLP
            # gives the same values as selecting after it.
            only = rows if i == last and all_hidden is None else None
            hidden, weights = layer(hidden, cos, sin, batch=batch, backend=backend, rows=only)
            if all_hidden is not None:
                all_hidden.append(hidden)
            if attentions is not None:
                attentions.append(weights)
        if rows is not None and (all_hidden is not None or not self.layers):
            hidden = hidden.index_select(0, rows)
        hidden = self.final_norm(hidden)
        return _Encoded(hidden, batch, tuple(all_hidden) if all_hidden is not None else None,
                        tuple(attentions) if attentions is not None else None, rows)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        r"""
        Args:
            input_ids: (B, S) token ids, or inputs_embeds: (B, S, H).
            attention_mask: (B, S) 1 = real token, 0 = padding (dropped before any computation).
                A row that is all zeros yields an all-zero hidden-state row (never NaN).
            document_ids: (B, S) packed rows: a contiguous run of equal ids is one document; attention
                never crosses documents and RoPE positions restart at each document.
            position_ids: (B, S) alternatively, positions restarting at 0 at every document start.
            cu_seqlens, max_seqlen: alternatively, (D+1,) int32 cumulative document lengths for
                flattened (1, N) input (flash-attn convention).
        Returns:
            `BaseModelOutput` with last_hidden_state (B, S, H); hidden_states / attentions re-padded when
            requested (attentions: (B, heads, S, S), eager backend).
        """
        output_attentions = bool(output_attentions if output_attentions is not None
                                 else self.config.output_attentions)
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        enc = self.encode_unpadded(input_ids, attention_mask, position_ids, inputs_embeds, document_ids,
                                   cu_seqlens, max_seqlen, output_attentions, output_hidden_states)
        return _base_output(enc, return_dict if return_dict is not None else self.config.return_dict)


def _base_output(enc: _Encoded, return_dict: bool) -> BaseModelOutput | tuple:
    batch = enc.batch
    last = batch.repad(enc.hidden)
    hidden_states = tuple(batch.repad(h) for h in enc.all_hidden) if enc.all_hidden is not None else None
    out = BaseModelOutput(last_hidden_state=last, hidden_states=hidden_states, attentions=enc.attentions)
    return out if return_dict else out.to_tuple()


def _want_dict(return_dict: bool | None, config: RexBertConfig) -> bool:
    return config.return_dict if return_dict is None else return_dict


def _check_labels_on_padding(labels: torch.Tensor, attention_mask: torch.Tensor | None, ignore: int) -> None:
    if attention_mask is not None and bool(((labels != ignore) & (attention_mask == 0)).any()):
        raise ValueError(f"labels has targets (!= {ignore}) at positions where attention_mask == 0; "
                         "padded positions are never encoded, so they cannot be predicted")


class RexBertForMaskedLM(RexBertPreTrainedModel):
    """Encoder + ModernBERT MLM head (dense -> act -> norm) + decoder tied to the token embeddings.

    With ``labels`` and ``config.sparse_prediction`` the head runs only on labelled positions and
    ``logits`` is (N_labelled, V) in row-major order of ``labels != -100``; otherwise (B, S, V) with zeros
    at padded positions.
    """

    _tied_weights_keys = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        self.model = RexBertModel(config)
        self.head = RexBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        ignore = self.config.sparse_pred_ignore_index
        sparse = labels is not None and self.config.sparse_prediction
        if labels is not None:
            _check_labels_on_padding(labels, attention_mask, ignore)
        enc = self.model.encode_unpadded(
            input_ids, attention_mask, position_ids, inputs_embeds, document_ids, cu_seqlens, max_seqlen,
            bool(output_attentions), bool(output_hidden_states),
            sparse_labels=labels if sparse else None, ignore_index=ignore)
        hidden, flat_labels = enc.hidden, None  # hidden: (M labelled, H) when sparse
        if labels is not None:
            flat_labels = enc.batch.unpad(labels)  # (N,)
            if sparse:
                flat_labels = flat_labels.index_select(0, enc.rows)
        logits = self.decoder(self.head(hidden))  # (N or N_labelled, V)
        loss = None
        if flat_labels is not None:
            loss = _cross_entropy(logits, flat_labels, ignore, num_items_in_batch)
        if labels is None or not self.config.sparse_prediction:
            logits = enc.batch.repad(logits)
        hidden_states = (tuple(enc.batch.repad(h) for h in enc.all_hidden)
                         if enc.all_hidden is not None else None)
        out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=enc.attentions)
        return out if _want_dict(return_dict, self.config) else out.to_tuple()


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore: int,
                   num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    """Mean CE over labelled positions; with ``num_items_in_batch`` (Trainer gradient accumulation) the
    sum divided by that count, so accumulated micro-batches weigh every token equally."""
    valid = labels != ignore
    n = int(valid.sum())
    if n == 0:
        return logits.sum() * 0.0  # no target: zero loss that keeps the graph, not NaN
    divisor = n if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(divisor):
        divisor = divisor.to(logits.device)
    if n == labels.numel():  # sparse prediction: every row has a target
        return _FusedCrossEntropy.apply(logits, labels, divisor)
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore, reduction="sum") / divisor


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class _FusedCrossEntropy(torch.autograd.Function):
    """sum(CE) / divisor for (n, V) logits whose n labels are all valid.

    F.cross_entropy keeps an (n, V) log-probability tensor and its backward zero-fills another (n, V)
    tensor before the log-softmax backward. Here the forward runs PyTorch's fused log_softmax kernel
    (one output, no logsumexp temporaries) and keeps only that, and the backward writes
    exp(log p) - onehot straight into one new buffer. For the 50k-vocabulary sparse MLM head this was
    measured ~15% faster than a logsumexp formulation and ~35% faster than F.cross_entropy (decoder
    included) on CPU, same loss to 1e-6.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, divisor):
        log_probs = torch.log_softmax(_at_least_fp32(logits), dim=-1)  # (n, V)
        ctx.save_for_backward(log_probs, labels)
        ctx.divisor, ctx.dtype = divisor, logits.dtype
        return -log_probs.gather(1, labels[:, None]).sum() / divisor

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        log_probs, labels = ctx.saved_tensors
        grad = log_probs.exp()  # softmax, (n, V); a new buffer, so backward can run twice
        grad[torch.arange(labels.numel(), device=grad.device), labels] -= 1.0
        grad.mul_(grad_out / ctx.divisor)
        return grad.to(ctx.dtype), None, None


class RexBertForSequenceClassification(RexBertPreTrainedModel):
    """Pooled (``config.classifier_pooling``: cls | mean) encoder output -> head -> dropout -> classifier.

    Loss by ``config.problem_type`` (inferred like BERT when unset): regression (MSE),
    single-label (CE) or multi-label (BCE-with-logits)."""

    # The loss is a per-batch mean: Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = RexBertModel(config)
        self.head = RexBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=True)
        h = out.last_hidden_state  # (B, S, H), zeros at padding
        if attention_mask is None:
            attention_mask = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
        if self.config.classifier_pooling == "cls":
            first = attention_mask.long().argmax(dim=1)  # first real token (left or right padding)
            pooled = h[torch.arange(h.shape[0], device=h.device), first]
        else:
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # empty rows pool to zeros, not NaN
        logits = self.classifier(self.drop(self.head(pooled)))
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                          attentions=out.attentions)
        return result if _want_dict(return_dict, self.config) else result.to_tuple()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            pred = logits.squeeze(-1) if self.num_labels == 1 else logits
            return F.mse_loss(pred, labels.to(logits.dtype).view_as(pred))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class RexBertForTokenClassification(RexBertPreTrainedModel):
    """Per-token head -> dropout -> classifier on real tokens only; logits (B, S, C), zeros at padding."""

    # The loss is a per-batch mean: Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = RexBertModel(config)
        self.head = RexBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput | tuple:
        enc = self.model.encode_unpadded(input_ids, attention_mask, position_ids, inputs_embeds, document_ids,
                                         output_attentions=bool(output_attentions),
                                         output_hidden_states=bool(output_hidden_states))
        logits = self.classifier(self.drop(self.head(enc.hidden)))  # (N, C)
        loss = None
        if labels is not None:
            flat = enc.batch.unpad(labels)
            loss = _cross_entropy(logits, flat, -100, None)
        hidden_states = (tuple(enc.batch.repad(h) for h in enc.all_hidden)
                         if enc.all_hidden is not None else None)
        result = TokenClassifierOutput(loss=loss, logits=enc.batch.repad(logits), hidden_states=hidden_states,
                                       attentions=enc.attentions)
        return result if _want_dict(return_dict, self.config) else result.to_tuple()


__all__ = [
    "ATTENTION_BACKENDS",
    "RexBertPreTrainedModel",
    "RexBertModel",
    "RexBertForMaskedLM",
    "RexBertForSequenceClassification",
    "RexBertForTokenClassification",
    "VarlenBatch",
    "build_varlen_batch",
]
