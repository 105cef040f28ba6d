"""A CPU kernel for PyTorch's varlen attention op, so its GPU-only path runs on any machine (package only).

``torch.nn.attention.varlen.varlen_attn`` is a Python API over custom ops (``torch_attn::_varlen_attn`` and
its backward) whose only kernel is CUDA FlashAttention. Inside :func:`varlen_on_cpu` those ops get a CPU
kernel computing what FlashAttention computes, and the model is told the kernel can run, so the real
API, autograd formula and fake kernel (torch.compile) serve the model on a CPU. The tests and
``benchmarks/gpu_check.py --dry-run`` use it; nothing else should.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.attention.varlen as torch_varlen

from . import attention_rexbert


def reference_varlen(q, k, v, cu, max_q, scale, window):
    """What FlashAttention's varlen kernel computes, in fp32 from dense masks built from the tensors alone
    (no host read): query i attends to the keys j of its own document with i - left <= j <= i + right.
    Like the kernel, whose grid covers ``max_q`` query rows per document, it computes nothing for the rows
    of a longer document past ``max_q`` (zeros here): a ``max_seqlen`` below the longest document
    corrupts attention silently. Returns out (T, heads, d), probabilities (heads, T, T) and the rows
    computed (T,)."""
    T = q.shape[0]
    token = torch.arange(T)
    doc = torch.searchsorted(cu[1:].long(), token, right=True)
    rel = token[None, :] - token[:, None]  # key - query
    allowed = doc[:, None] == doc[None, :]
    left, right = window
    if left >= 0:
        allowed &= rel >= -left
    if right >= 0:
        allowed &= rel <= right
    qh, kh, vh = (t.float().transpose(0, 1) for t in (q, k, v))  # (heads, T, d)
    probs = (qh @ kh.transpose(1, 2) * scale).masked_fill(~allowed, float("-inf")).softmax(-1)
    computed = (token - cu.long()[doc]) < max_q
    return (probs @ vh).transpose(0, 1) * computed[:, None, None], probs, computed


def _forward_kernel(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None, window_size=None, *_
):
    assert cu_seq_q.dtype == torch.int32 and cu_seq_k is cu_seq_q, "one int32 boundary tensor, keys = queries"
    assert isinstance(max_q, int) and max_q == max_k, "the host int max_seqlen"
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    out, _, _ = reference_varlen(query, key, value, cu_seq_q, max_q, scale, window_size or (-1, -1))
    lse = torch.zeros(query.shape[1], query.shape[0])  # unused by the backward below
    return out.to(query.dtype).contiguous(), lse, torch.zeros(2, dtype=torch.uint64)


def _backward_kernel(grad_out, query, key, value, out, lse, cu_seq_q, cu_seq_k, max_q, max_k, *rest):
    """Attention's gradients written out (autograd does not run inside a kernel): with P the
    probabilities, dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = scale dS K, dK = scale dS^T Q."""
    _is_causal, _rng_state, scale, window_size = (*rest, None, None)[:4]
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    o, probs, computed = reference_varlen(query, key, value, cu_seq_q, max_q, scale, window_size or (-1, -1))
    q, k, v, do, o = (
        t.float().transpose(0, 1) for t in (query, key, value, grad_out * computed[:, None, None], o)
    )
    dv = probs.transpose(1, 2) @ do
    ds = probs * (do @ v.transpose(1, 2) - (do * o).sum(-1, keepdim=True))
    dq, dk = scale * ds @ k, scale * ds.transpose(1, 2) @ q
    return tuple(g.transpose(0, 1).to(query.dtype).contiguous() for g in (dq, dk, dv))


_VARLEN_OPS = (
    (torch_varlen._varlen_attn, _forward_kernel),
    (torch_varlen._varlen_attn_backward, _backward_kernel),
)
_DISABLED = [op.set_kernel_enabled("cpu", False) for op, _ in _VARLEN_OPS]  # held: exiting re-enables
for (op, kernel), disabled in zip(_VARLEN_OPS, _DISABLED):  # registered once, off until a test turns it on
    op.register_kernel("cpu")(kernel)
    disabled.__enter__()


@contextlib.contextmanager
def assume_varlen_kernel():
    """Tell the model the varlen kernel can run (whatever the device), without giving the op a kernel:
    for FakeTensor / meta dry runs, where the op's registered fake kernel serves."""
    probe = attention_rexbert.varlen_unavailable
    attention_rexbert.varlen_unavailable = lambda device, dtype, dropout: None
    try:
        yield
    finally:
        attention_rexbert.varlen_unavailable = probe


@contextlib.contextmanager
def varlen_on_cpu():
    """PyTorch's own ``varlen_attn`` (its Python API, custom ops, autograd formula and fake kernel for
    torch.compile) with the reference above as its CPU kernel, and the model told the kernel can run."""
    with contextlib.ExitStack() as stack:
        for op, _ in _VARLEN_OPS:
            stack.enter_context(op.set_kernel_enabled("cpu", True))
        stack.enter_context(assume_varlen_kernel())
        yield
