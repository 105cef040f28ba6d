"""The fake-tensor dry run of the packed training step: no host syncs at every paper size, a planted sync
of each kind caught, and its peak memory against a real CPU step's."""

import gc

import numpy as np
import pytest
import torch
from torch.nn.attention.varlen import varlen_attn  # also defines the torch_attn ops
from torch.profiler import ProfilerActivity, profile

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM, attention_rexbert
from training.dry_run import (
    GIB,
    HostSyncError,
    StepShape,
    _PeakMemory,
    create_optimizer_state,
    dry_run,
    fake_model,
    gpu_training_config,
    synthetic_micro_batch,
    train_step,
    use_gpu_attention,
)
from training.masking import MaskingConfig
from training.optim import StableAdamW, param_groups

PHASE1 = MaskingConfig(mlm_probability=0.30, span_lambda=3.0)


def _config(size: str, **overrides) -> RexBertConfig:
    return RexBertConfig.for_size(size, max_position_embeddings=8192, **overrides)


def _small_config(**overrides) -> RexBertConfig:
    """A micro-size encoder with a small vocabulary (its special ids below it)."""
    special = {"pad_token_id": 0, "cls_token_id": 1, "sep_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}
    return gpu_training_config(_config("micro", **{**special, "mask_token_id": 3, **overrides}))


@pytest.mark.parametrize(
    "size", ["base", *(pytest.param(s, marks=pytest.mark.slow) for s in ("micro", "mini", "large"))]
)
def test_the_packed_step_runs_on_the_gpu_kernel_without_a_host_sync(size):
    """Forward, sparse loss, backward and StableAdamW's step on fake tensors: any host read would raise.
    The varlen FlashAttention op ran in every layer, forward and backward, in both micro-batches."""
    config = _config(size)
    result = dry_run(config, StepShape(rows=2, row_tokens=512, masking=PHASE1, micro_batches=2))
    assert result.attention_calls == 2 * 2 * config.num_hidden_layers
    assert result.tokens == 1024 and result.labelled == round(0.3 * 1024)
    assert result.at_peak["gradients"] == result.at_peak["parameters"]  # the second micro-batch holds grads
    assert result.at_peak["optimizer state"] == 2 * result.at_peak["parameters"]  # fp32 exp_avg, exp_avg_sq
    n_params = sum(p.numel() for p in _meta_model(config).parameters())
    assert result.at_peak["parameters"] == 4 * n_params  # fp32 master weights, tied decoder counted once


def _meta_model(config):
    with torch.device("meta"):
        return RexBertForMaskedLM(config)


# One planted host read per kind, on the packed path of the GPU attention backend.
_PLANTS = {
    "item": lambda q, batch: batch.cu_seqlens[-1].item(),
    "tolist": lambda q, batch: batch.cu_seqlens.tolist(),
    "cpu": lambda q, batch: batch.cu_seqlens.cpu(),
    "int": lambda q, batch: int(batch.cu_seqlens[-1]),
    "nonzero": lambda q, batch: torch.nonzero(batch.cu_seqlens),
    "boolean_index": lambda q, batch: q[q[:, 0, 0] > 0],
}


@pytest.mark.parametrize("kind", sorted(_PLANTS))
def test_a_planted_host_read_fails_the_dry_run(kind, monkeypatch):
    varlen = attention_rexbert.ATTENTION_BACKENDS["varlen"]

    def planted(q, k, v, batch, **kwargs):
        _PLANTS[kind](q, batch)
        return varlen(q, k, v, batch, **kwargs)

    monkeypatch.setitem(attention_rexbert.ATTENTION_BACKENDS, "varlen", planted)
    with pytest.raises(
        HostSyncError, match=r"reads a device value on the host: .* at tests/training/test_dry_run"
    ):
        dry_run(_config("base"), StepShape(rows=2, row_tokens=512, masking=PHASE1))


def test_a_host_read_outside_the_attention_kernel_fails_the_dry_run(monkeypatch):
    """The whole step is checked, not only the kernel call: RoPE tables sized from the longest position
    read back on the host fail too."""
    from modeling_rexbert import modeling_rexbert

    rope_cos_sin = modeling_rexbert.rope_cos_sin

    def rope_reading_positions(position_ids, head_dim, theta):
        longest = int(position_ids.max())  # noqa: F841 -- the planted host read
        return rope_cos_sin(position_ids, head_dim, theta)

    monkeypatch.setattr(modeling_rexbert, "rope_cos_sin", rope_reading_positions)
    with pytest.raises(HostSyncError, match="int\\(tensor\\) .* in rope_reading_positions"):
        dry_run(_config("micro"), StepShape(rows=2, row_tokens=256, masking=PHASE1))


def test_a_tensor_built_from_host_data_in_the_optimizer_step_fails_the_dry_run(monkeypatch):
    """The optimizer step is part of the checked step: a tensor made from a host list there (on a GPU a
    blocking host-to-device copy that waits for every queued kernel) fails, as StableAdamW's per-tensor
    element counts once did."""
    from training import optim

    foreach_div = torch._foreach_div_

    def numels_as_a_device_tensor(tensors, scalars):
        device_numels = torch.tensor(scalars, device=tensors[0].device)  # the planted copy
        return foreach_div(tensors, list(device_numels.unbind()))

    monkeypatch.setattr(optim.torch, "_foreach_div_", numels_as_a_device_tensor)
    with pytest.raises(HostSyncError, match=r"torch.tensor\(host data\) is a blocking host-to-device copy"):
        dry_run(_config("micro"), StepShape(rows=2, row_tokens=256, masking=PHASE1))


def test_activation_checkpointing_recomputes_the_layers_and_lowers_the_peak():
    """trainer.activation_checkpointing as the Trainer enables it: every layer's attention runs again in the
    backward (3 varlen calls per layer and micro-batch), still without a host read, in less memory."""
    config = _config("micro")
    shape = StepShape(rows=4, row_tokens=2048, masking=PHASE1, micro_batches=2)
    plain, recomputed = dry_run(config, shape), dry_run(config, shape, activation_checkpointing=True)
    assert recomputed.attention_calls == 3 * 2 * config.num_hidden_layers
    assert recomputed.at_peak["activations"] < 0.8 * plain.at_peak["activations"]


# -- memory --------------------------------------------------------------------------------------------


def test_the_peak_tracker_agrees_with_torchs_mem_tracker():
    """_PeakMemory is MemTracker's total without its per-module bookkeeping: same peak on the same step."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    config = _small_config(num_hidden_layers=2, vocab_size=4096)
    shape = StepShape(rows=4, row_tokens=256, masking=PHASE1)
    batch = synthetic_micro_batch(config, shape, seed=0)
    peaks = []
    for tracker in (_PeakMemory, MemTracker):
        mode = FakeTensorMode()
        model = fake_model(config, mode)
        use_gpu_attention(model)
        with mode:
            optimizer = StableAdamW(param_groups(model, 1e-5), lr=1e-3)
            create_optimizer_state(model, optimizer)
            inputs = {k: mode.from_tensor(v) if torch.is_tensor(v) else v for k, v in batch.items()}
            memory = tracker()
            if isinstance(memory, MemTracker):
                memory.track_external(model, optimizer, *[v for v in inputs.values() if torch.is_tensor(v)])
            else:
                for t in [
                    *model.parameters(),
                    *[v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)],
                    *[v for v in inputs.values() if torch.is_tensor(v)],
                ]:
                    memory.track(t, "before")
            with memory:
                train_step(model, optimizer, [inputs])
            if isinstance(memory, MemTracker):
                peaks.append(sum(d["Total"] for d in memory.get_tracker_snapshot("peak").values()))
            else:
                peaks.append(memory.peak)
    assert peaks[0] == pytest.approx(peaks[1], rel=0.01), peaks


class _ReferenceVarlenKernels:
    """CPU kernels for PyTorch's varlen FlashAttention op (a GPU-only op), registered for the duration of a
    test: the model then runs its GPU attention path on real CPU tensors, with the op's own autograd
    (it saves q, k, v, out and the log-sum-exp, as on a GPU). Per-document attention in fp32."""

    def __enter__(self):
        self.lib = torch.library.Library("torch_attn", "IMPL")
        self.lib.impl("_varlen_attn", self.forward, "CPU")
        self.lib.impl("_varlen_attn_backward", self.backward, "CPU")
        return self

    def __exit__(self, *exc):
        del self.lib  # the registrations go with the library object
        gc.collect()

    @staticmethod
    def _documents(cu, window, *tensors):
        """Per document: (start, end, fp32 (H, n, d) views of ``tensors``, masked scores of the first two)."""
        bounds = cu.tolist()
        for a, b in zip(bounds[:-1], bounds[1:]):
            views = [t[a:b].float().transpose(0, 1) for t in tensors]
            scores = views[0] @ views[1].transpose(1, 2) * window[2]
            if window[0] >= 0:
                i = torch.arange(b - a)
                scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > window[0], float("-inf"))
            yield a, b, views, scores

    @classmethod
    def forward(cls, q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, scale=None, window_size=None, *_):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[1], q.shape[0], dtype=torch.float32)
        for a, b, (_, _, vd), scores in cls._documents(cu_q, [*(window_size or [-1, -1]), scale], q, k, v):
            lse[:, a:b] = torch.logsumexp(scores, -1)
            out[a:b] = (torch.softmax(scores, -1) @ vd).transpose(0, 1).to(q.dtype)
        return out, lse, torch.zeros(2, dtype=torch.uint64)

    @classmethod
    def backward(
        cls, grad, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, causal, rng, scale=None, window_size=None
    ):
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        window = [*(window_size or [-1, -1]), scale]
        for a, b, (qd, kd, vd, od, gd), scores in cls._documents(cu_q, window, q, k, v, out, grad):
            p = torch.exp(scores - lse[:, a:b, None])
            dv[a:b] = (p.transpose(1, 2) @ gd).transpose(0, 1).to(v.dtype)
            ds = p * (gd @ vd.transpose(1, 2) - (gd * od).sum(-1, keepdim=True)) * scale
            dq[a:b] = (ds @ kd).transpose(0, 1).to(q.dtype)
            dk[a:b] = (ds.transpose(1, 2) @ qd).transpose(0, 1).to(k.dtype)
        return dq, dk, dv


def test_the_reference_kernels_match_per_document_attention():
    """The test's CPU kernels are right (else the memory comparison below would compare another step)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(10, 2, 8, requires_grad=True) for _ in range(3))
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    with _ReferenceVarlenKernels():
        out = varlen_attn(q, k, v, cu, cu, 6, 6, scale=0.3, window_size=(2, 2))
        out.square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    pieces = []
    for a, b in ((0, 4), (4, 10)):
        i = torch.arange(b - a)
        mask = (i[:, None] - i[None, :]).abs() <= 2
        pieces.append(
            torch.nn.functional.scaled_dot_product_attention(
                *(t[a:b].transpose(0, 1) for t in (q, k, v)), attn_mask=mask, scale=0.3
            ).transpose(0, 1)
        )
    expected = torch.cat(pieces)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    for got, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad)


def _real_cpu_peak(config, shape: StepShape) -> int:
    """Peak bytes of tensors alive during the same step on real CPU tensors: the c10 CPU allocator's
    running total as the profiler records it at every allocation and free (tracemalloc does not see
    torch's allocations; the process's RSS also counts the allocator's and the libraries' caches), plus
    what was allocated before the profiler started (weights, the batch)."""
    from torch._C._profiler import _EventType

    gc.collect()  # nothing of an earlier test is freed inside the window
    torch.manual_seed(0)
    model = RexBertForMaskedLM(config)
    use_gpu_attention(model)
    model.train()
    optimizer = StableAdamW(param_groups(model, 1e-5), lr=1e-3)
    batch = synthetic_micro_batch(config, shape, seed=0)
    before = sum(p.untyped_storage().nbytes() for p in {id(p): p for p in model.parameters()}.values())
    before += sum(v.untyped_storage().nbytes() for v in batch.values() if torch.is_tensor(v))
    with _ReferenceVarlenKernels(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        create_optimizer_state(model, optimizer)
        train_step(model, optimizer, [batch] * shape.micro_batches)

    def events(nodes):
        for node in nodes:
            yield node
            yield from events(node.children)

    # the allocator's running total is process-wide (a free it did not see would offset it): sum the
    # allocations and frees of this window instead
    changes = sorted(
        (e.start_time_ns, e.extra_fields.alloc_size)
        for e in events(prof.profiler.kineto_results.experimental_event_tree())
        if e.tag == _EventType.Allocation
    )
    live = np.cumsum([size for _, size in changes])
    return before + int(live.max())


def test_the_dry_runs_peak_matches_a_real_cpu_steps():
    """A 4-layer, 256-wide encoder, 2 micro-batches of 8 x 512 tokens in bf16 autocast, the same step on
    real CPU tensors (the GPU attention op on the reference kernels). The issue asks for 20%; the two
    agreed to 0.01% here, so 5% is asserted: leaving out the optimizer state (11% of this peak) or the
    held gradients (5%) fails it."""
    config = _small_config(num_hidden_layers=4, vocab_size=8192)
    shape = StepShape(rows=8, row_tokens=512, masking=PHASE1, micro_batches=2)
    fake = dry_run(config, shape)
    real = _real_cpu_peak(config, shape)
    assert fake.at_peak["activations"] > 0.5 * fake.peak_bytes
    assert abs(fake.peak_bytes - real) <= 0.05 * real, (fake.peak_bytes / GIB, real / GIB)
