"""Attention backends: sdpa scheduling vs dense references, the varlen / flash wiring, backend selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modeling_rexbert import RexBertForMaskedLM, RexBertModel, attention_rexbert
from modeling_rexbert.attention_rexbert import (
    GLOBAL_WINDOW,
    BlockedGroup,
    DenseBuckets,
    flash_attention,
    sdpa_attention,
    sdpa_plan,
    select_backend,
)
from modeling_rexbert.packing_rexbert import PackedBatch, pack_flat

from .conftest import right_padded, tiny_config

ATOL = 1e-5


def _flat(lengths: list[int]) -> PackedBatch:
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return pack_flat(sum(lengths), cu, max(lengths), None, torch.device("cpu"))


def _window(half: int | None) -> tuple[int, int]:
    return GLOBAL_WINDOW if half is None else (half, half)


def _dense_reference(qkv: torch.Tensor, half: int | None) -> torch.Tensor:
    """One document, explicit S x S band mask: the O(S^2) definition every backend must match."""
    q, k, v = (t.transpose(0, 1)[None] for t in qkv.unbind(1))  # (1, heads, S, d)
    i = torch.arange(qkv.shape[0])
    mask = None if half is None else (i[:, None] - i[None, :]).abs() <= half
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[0].transpose(0, 1)


# ---------------------------------------------------------------- sdpa scheduling
@pytest.mark.parametrize("half,lengths", [(8, [700]), (4, [5, 130, 9, 64, 257]), (32, [33, 1000])])
def test_blocked_local_attention_equals_dense_masked_reference(half, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    batch = _flat(lengths)
    got, _ = sdpa_attention(*qkv.unbind(1), batch, window_size=(half, half), dropout=0.0, scale=16**-0.5)
    plan = sdpa_plan(batch, half, torch.float32)
    assert isinstance(plan, BlockedGroup), "long documents must take the blocked path"
    # Memory is linear: the mask holds block * 3 * block entries per block of queries, never S^2.
    assert plan.mask.numel() <= (plan.ntokens + 2 * half) * 3 * half
    s = 0
    for n in lengths:
        torch.testing.assert_close(got[s : s + n], _dense_reference(qkv[s : s + n], half), atol=ATOL, rtol=0)
        s += n


def test_length_buckets_equal_per_document_attention():
    lengths = [300, 7, 250, 251, 40, 33, 1, 120]  # several buckets, some padded, one equal-length pair
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    batch = _flat(lengths)
    got, _ = sdpa_attention(*qkv.unbind(1), batch, window_size=GLOBAL_WINDOW, dropout=0.0, scale=16**-0.5)
    plan = sdpa_plan(batch, None, torch.float32)
    assert isinstance(plan, DenseBuckets) and 1 < len(plan.buckets) < len(lengths)
    s = 0
    for n in lengths:
        torch.testing.assert_close(got[s : s + n], _dense_reference(qkv[s : s + n], None), atol=ATOL, rtol=0)
        s += n


@pytest.mark.parametrize("half,lengths", [(8, [700]), (4, [5, 130, 9, 64, 257])])
def test_blocked_local_attention_gradients_equal_dense_reference(half, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 16, dtype=torch.float64, requires_grad=True)
    batch = _flat(lengths)
    got, _ = sdpa_attention(*qkv.unbind(1), batch, window_size=(half, half), dropout=0.0, scale=16**-0.5)
    assert isinstance(sdpa_plan(batch, half, torch.float64), BlockedGroup)
    ref = torch.cat([_dense_reference(t, half) for t in qkv.split(lengths)])
    upstream = torch.randn_like(got)
    (g_got,) = torch.autograd.grad(got, qkv, upstream)
    (g_ref,) = torch.autograd.grad(ref, qkv, upstream)
    torch.testing.assert_close(g_got, g_ref, atol=1e-8, rtol=0)


# ---------------------------------------------------------------- varlen wiring (kernel is CUDA-only)
def reference_varlen_attn(calls: list):
    """Stand-in for ``torch.nn.attention.varlen.varlen_attn`` that checks the documented argument
    conventions and computes attention per document from ``cu_seqlens`` with FlashAttention's window
    semantics (query i sees keys i - left .. i + right of its own document). It builds the mask on the
    device from the tensors alone, so it reads nothing back to the host either."""

    def varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
        assert q.ndim == 3 and q.shape == k.shape == v.shape, "(T, heads, head_dim) inputs"
        assert cu_seq_q.dtype == torch.int32 and cu_seq_q.ndim == 1 and cu_seq_k is cu_seq_q
        assert isinstance(max_q, int) and isinstance(max_k, int) and max_q == max_k
        assert isinstance(window_size, tuple) and len(window_size) == 2
        calls.append((max_q, window_size, scale))
        T = q.shape[0]
        pos = torch.arange(T)
        doc = torch.searchsorted(cu_seq_q[1:].long(), pos, right=True)
        rel = pos[None, :] - pos[:, None]  # key - query
        allowed = doc[:, None] == doc[None, :]
        left, right = window_size
        if left >= 0:
            allowed &= rel >= -left
        if right >= 0:
            allowed &= rel <= right
        qh, kh, vh = (t.transpose(0, 1) for t in (q, k, v))  # (heads, T, d)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed, scale=scale)
        return out.transpose(0, 1)

    return varlen_attn


@pytest.fixture
def fake_varlen(monkeypatch):
    calls: list = []
    monkeypatch.setattr(attention_rexbert, "_varlen_attn_fn", lambda: reference_varlen_attn(calls))
    return calls


def test_varlen_backend_wiring_equals_sdpa_on_packed_and_padded_input(fake_varlen):
    cfg = tiny_config(local_attention=8)
    model = RexBertModel(cfg).eval()
    lengths = [30, 3, 12, 1, 25]
    ids = torch.randint(4, 97, (1, sum(lengths)))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    pad_ids, mask = right_padded([30, 12, 5])
    with torch.no_grad():
        ref_packed = model(input_ids=ids, cu_seqlens=cu, max_seqlen=30).last_hidden_state
        ref_padded = model(input_ids=pad_ids, attention_mask=mask).last_hidden_state
        cfg.attention_backend = "varlen"
        got_packed = model(input_ids=ids, cu_seqlens=cu, max_seqlen=30).last_hidden_state
        got_padded = model(input_ids=pad_ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got_packed, ref_packed, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_padded, ref_padded, atol=ATOL, rtol=0)
    # 4 layers x 2 forwards; layer 0 global, layers 1-2 local with |i - j| <= 4, layer 3 global.
    assert [w for _, w, _ in fake_varlen[:4]] == [(-1, -1), (4, 4), (4, 4), (-1, -1)]
    assert {m for m, _, _ in fake_varlen} == {30}
    assert {s for _, _, s in fake_varlen} == {16**-0.5}


def test_varlen_backend_gradients_equal_sdpa(fake_varlen):
    cfg = tiny_config(local_attention=8)
    model = RexBertForMaskedLM(cfg).train()
    ids, mask = right_padded([30, 12, 5])
    labels = ids.masked_fill(mask == 0, -100)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    cfg.attention_backend = "varlen"
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    assert fake_varlen, "the varlen backend must have run"
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-5, msg=n)


def test_varlen_backend_refuses_attention_dropout():
    batch = _flat([4])
    q = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match="dropout"):
        attention_rexbert.varlen_attention(q, q, q, batch, window_size=GLOBAL_WINDOW, dropout=0.1, scale=1.0)


def test_varlen_attn_raises_on_cpu_so_cpu_never_selects_it():
    varlen_attn = attention_rexbert._varlen_attn_fn()
    assert varlen_attn is not None, "torch>=2.10 ships torch.nn.attention.varlen"
    q = torch.randn(4, 2, 8, dtype=torch.bfloat16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises((NotImplementedError, RuntimeError)):
        varlen_attn(q, q, q, cu, cu, 4, 4)


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize(
    "requested,device,dtype,dropout,expected",
    [
        ("auto", "cuda", torch.bfloat16, 0.0, "varlen"),
        ("auto", "cuda", torch.float16, 0.0, "varlen"),
        ("auto", "cuda", torch.float32, 0.0, "sdpa"),  # the kernel has no fp32
        ("auto", "cuda", torch.bfloat16, 0.1, "sdpa"),  # nor attention dropout
        ("auto", "cpu", torch.bfloat16, 0.0, "sdpa"),
        ("sdpa", "cuda", torch.bfloat16, 0.0, "sdpa"),
        ("eager", "cpu", torch.float32, 0.0, "eager"),
    ],
)
def test_select_backend(requested, device, dtype, dropout, expected):
    assert select_backend(requested, torch.device(device), dtype, dropout) == expected


def test_model_backend_follows_attn_implementation_then_attention_backend():
    model = RexBertModel(tiny_config())
    cuda, bf16 = torch.device("cuda"), torch.bfloat16
    assert model.attention_backend(cuda, bf16) == "varlen"
    model.config._attn_implementation = "eager"
    assert model.attention_backend(cuda, bf16) == "eager"
    model.config.attention_backend = "sdpa"  # an explicit backend wins
    assert model.attention_backend(cuda, bf16) == "sdpa"


def test_flash_attention_backend_needs_flash_attn():
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - GPU machines only
        pytest.skip("flash-attn installed: this test covers the CPU-only error path")
    q = torch.randn(4, 2, 16)
    with pytest.raises(ImportError, match="flash-attn"):
        flash_attention(q, q, q, _flat([4]), window_size=GLOBAL_WINDOW, dropout=0.0, scale=0.25)


# ---------------------------------------------------------------- CPU bf16 autocast
@pytest.mark.parametrize("half,lengths", [(None, [40, 7, 33]), (8, [70, 5])])
def test_cpu_bf16_training_runs_the_sdpa_kernel_in_fp32_and_inference_in_bf16(monkeypatch, half, lengths):
    """PyTorch's CPU flash kernel trains 2-3x slower in bf16 than fp32: under bf16 autocast with gradients
    the kernel gets fp32 q/k/v (and returns bf16 like the other ops), without gradients bf16."""
    seen = []
    kernel = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append(q.dtype)
        return kernel(q, k, v, **kwargs)

    monkeypatch.setattr(attention_rexbert.F, "scaled_dot_product_attention", recording)
    qkv = torch.randn(sum(lengths), 3, 2, 16, requires_grad=True)
    batch, window = _flat(lengths), _window(half)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = (t.to(torch.bfloat16) for t in qkv.unbind(1))  # what autocast's Wqkv hands over
        out, _ = sdpa_attention(q, k, v, batch, window_size=window, dropout=0.0, scale=16**-0.5)
        assert out.dtype == torch.bfloat16 and set(seen) == {torch.float32}
        out.float().sum().backward()
        assert qkv.grad is not None and bool(qkv.grad.abs().sum() > 0)
        seen.clear()
        with torch.no_grad():
            fast, _ = sdpa_attention(q, k, v, batch, window_size=window, dropout=0.0, scale=16**-0.5)
        assert set(seen) == {torch.bfloat16}
    exact, _ = sdpa_attention(*qkv.detach().unbind(1), batch, window_size=window, dropout=0.0, scale=16**-0.5)
    torch.testing.assert_close(out.float(), exact, atol=3e-2, rtol=0)  # bf16 q/k/v, fp32 scores
    torch.testing.assert_close(fast.float(), exact, atol=6e-2, rtol=0)
