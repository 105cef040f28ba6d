"""The package's CPU scheduling of sdpa (length buckets, blocked sliding window) vs dense references."""

from __future__ import annotations

import pytest
import torch

from modeling_rexbert import attention_rexbert
from modeling_rexbert.attention_rexbert import GLOBAL_WINDOW
from modeling_rexbert.sdpa_cpu import BlockedGroup, DenseBuckets, sdpa_attention, sdpa_plan

from .test_attention_rexbert import _flat, per_document

ATOL = 1e-5


def test_the_package_registers_its_cpu_sdpa():
    assert attention_rexbert.ATTENTION_BACKENDS["sdpa"] is sdpa_attention


@pytest.mark.parametrize("half,lengths", [(8, [700]), (4, [5, 130, 9, 64, 257]), (32, [33, 1000])])
def test_blocked_local_attention_equals_dense_masked_reference(half, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    batch = _flat(lengths)
    got, _ = sdpa_attention(*qkv.unbind(1), batch, window=(half, half), dropout=0.0, scale=16**-0.5)
    plan = sdpa_plan(batch, half, torch.float32)
    assert isinstance(plan, BlockedGroup), "long documents must take the blocked path"
    # Memory is linear: the mask holds block * 3 * block entries per block of queries, never S^2.
    assert plan.mask.numel() <= (plan.ntokens + 2 * half) * 3 * half
    torch.testing.assert_close(got, per_document(qkv, lengths, half), atol=ATOL, rtol=0)


@pytest.mark.parametrize("half", [4, 8])
def test_documents_just_past_the_window_equal_the_windowed_reference(half):
    """The longest document half + 2 .. 2 * half + 1 tokens (the first lengths where some pair is out of
    window, all inside one key span), shorter ones beside it, in any order. An off-by-one in the band or
    in when to plan blocks (e.g. ``n > half + 2``, ``< half``) is caught here, for the gradients too."""
    for longest in range(half + 2, 2 * half + 2):
        for order in ([longest, 1, half], [2, half + 1, longest], [longest, longest - 1]):
            qkv = torch.randn(sum(order), 3, 2, 8, dtype=torch.float64, requires_grad=True)
            args = {"window": (half, half), "dropout": 0.0, "scale": 8**-0.5}
            got, _ = sdpa_attention(*qkv.unbind(1), _flat(order), **args)
            ref = per_document(qkv, order, half)
            torch.testing.assert_close(got, ref, atol=1e-10, rtol=0, msg=f"{order}")
            upstream = torch.randn_like(got)
            (g_got,) = torch.autograd.grad(got, qkv, upstream)
            (g_ref,) = torch.autograd.grad(ref, qkv, upstream)
            torch.testing.assert_close(g_got, g_ref, atol=1e-10, rtol=0, msg=f"{order}")


def test_length_buckets_equal_per_document_attention():
    lengths = [300, 7, 250, 251, 40, 33, 1, 120]  # several buckets, some padded, one equal-length pair
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    batch = _flat(lengths)
    got, _ = sdpa_attention(*qkv.unbind(1), batch, window=GLOBAL_WINDOW, dropout=0.0, scale=16**-0.5)
    plan = sdpa_plan(batch, None, torch.float32)
    assert isinstance(plan, DenseBuckets) and 1 < len(plan.buckets) < len(lengths)
    torch.testing.assert_close(got, per_document(qkv, lengths, None), atol=ATOL, rtol=0)


@pytest.mark.parametrize("half,lengths", [(8, [700]), (4, [5, 130, 9, 64, 257])])
def test_blocked_local_attention_gradients_equal_dense_reference(half, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 16, dtype=torch.float64, requires_grad=True)
    batch = _flat(lengths)
    got, _ = sdpa_attention(*qkv.unbind(1), batch, window=(half, half), dropout=0.0, scale=16**-0.5)
    assert isinstance(sdpa_plan(batch, half, torch.float64), BlockedGroup)
    upstream = torch.randn_like(got)
    (g_got,) = torch.autograd.grad(got, qkv, upstream)
    (g_ref,) = torch.autograd.grad(per_document(qkv, lengths, half), qkv, upstream)
    torch.testing.assert_close(g_got, g_ref, atol=1e-8, rtol=0)


@pytest.mark.parametrize("half,lengths", [(None, [40, 7, 33]), (8, [70, 5])])
def test_cpu_bf16_training_runs_the_sdpa_kernel_in_fp32_and_inference_in_bf16(monkeypatch, half, lengths):
    """PyTorch's CPU flash kernel trains 2-3x slower in bf16 than fp32: under bf16 autocast with gradients
    the kernel gets fp32 q/k/v (and returns bf16 like the other ops), without gradients bf16."""
    import torch.nn.functional as F

    seen = []
    kernel = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append(q.dtype)
        return kernel(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    qkv = torch.randn(sum(lengths), 3, 2, 16, requires_grad=True)
    args = {"window": GLOBAL_WINDOW if half is None else (half, half), "dropout": 0.0, "scale": 16**-0.5}
    batch = _flat(lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = (t.to(torch.bfloat16) for t in qkv.unbind(1))  # what autocast's Wqkv hands over
        out, _ = sdpa_attention(q, k, v, batch, **args)
        assert out.dtype == torch.bfloat16 and set(seen) == {torch.float32}
        out.float().sum().backward()
        assert qkv.grad is not None and bool(qkv.grad.abs().sum() > 0)
        seen.clear()
        with torch.no_grad():
            fast, _ = sdpa_attention(q, k, v, batch, **args)
        assert set(seen) == {torch.bfloat16}
    exact = per_document(qkv.detach(), lengths, half)
    torch.testing.assert_close(out.float(), exact, atol=3e-2, rtol=0)  # bf16 q/k/v, fp32 scores
    torch.testing.assert_close(fast.float(), exact, atol=6e-2, rtol=0)
