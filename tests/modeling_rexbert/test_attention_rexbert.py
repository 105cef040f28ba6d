"""The shipped attention backends vs a dense reference, PyTorch's varlen op through the model, the rule
that picks a backend (each missing capability simulated), and transformers' flash functions through the
one switch."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from modeling_rexbert import RexBertForMaskedLM, RexBertModel, attention_rexbert
from modeling_rexbert.attention_rexbert import GLOBAL_WINDOW, eager_attention, sdpa_attention
from modeling_rexbert.packing_rexbert import pack_inputs

from .conftest import cu_seqlens, reference_varlen, right_padded, tiny_config

ATOL = 1e-5
CUDA, BF16 = torch.device("cuda"), torch.bfloat16


def _flat(lengths: list[int], max_seqlen: int | None = None):
    n = sum(lengths)
    return pack_inputs(
        torch.zeros(1, n, dtype=torch.long), cu_seqlens=cu_seqlens(lengths), max_seqlen=max_seqlen
    )


def _window(half: int | None) -> tuple[int, int]:
    return GLOBAL_WINDOW if half is None else (half, half)


def dense_reference(qkv: torch.Tensor, half: int | None) -> torch.Tensor:
    """One document, explicit S x S band mask: the O(S^2) definition every backend must match."""
    q, k, v = (t.transpose(0, 1)[None] for t in qkv.unbind(1))  # (1, heads, S, d)
    i = torch.arange(qkv.shape[0])
    mask = None if half is None else (i[:, None] - i[None, :]).abs() <= half
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[0].transpose(0, 1)


def per_document(qkv: torch.Tensor, lengths: list[int], half: int | None) -> torch.Tensor:
    return torch.cat([dense_reference(t, half) for t in qkv.split(lengths)])


# ---------------------------------------------------------------- shipped sdpa / eager
# Longest document first, last and in the middle (the padded layout is sized by max_seqlen, whatever the
# order); empty documents; for the window of 4, longest documents of half + 1 (no band) and half + 2 (band).
@pytest.mark.parametrize(
    "lengths",
    [[30, 3, 12, 1, 25], [3, 12, 1, 25, 30], [1, 30, 3], [7, 7, 7], [5, 0, 9], [6, 2], [5, 6], [5, 1]],
)
@pytest.mark.parametrize("half", [None, 4])
@pytest.mark.parametrize("backend", [sdpa_attention, eager_attention])
def test_shipped_backends_equal_per_document_reference(backend, half, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 8, dtype=torch.float64)
    out, weights = backend(*qkv.unbind(1), _flat(lengths), window=_window(half), dropout=0.0, scale=8**-0.5)
    torch.testing.assert_close(out, per_document(qkv, lengths, half), atol=1e-10, rtol=0)
    assert weights is None  # only built when asked for


@pytest.mark.parametrize("backend", [sdpa_attention, eager_attention])
def test_shipped_backends_gradients_equal_reference(backend):
    lengths = [3, 20, 9, 1]
    qkv = torch.randn(sum(lengths), 3, 2, 8, dtype=torch.float64, requires_grad=True)
    out, _ = backend(*qkv.unbind(1), _flat(lengths), window=(4, 4), dropout=0.0, scale=8**-0.5)
    upstream = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, qkv, upstream)
    (ref,) = torch.autograd.grad(per_document(qkv, lengths, 4), qkv, upstream)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


def test_shipped_sdpa_reads_nothing_from_the_host():
    lengths = [3, 20, 9]
    batch = _flat(lengths, max_seqlen=20)
    qkv = torch.randn(sum(lengths), 3, 2, 8)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sdpa_attention(*qkv.unbind(1), batch, window=(4, 4), dropout=0.0, scale=8**-0.5)
    assert not {e.name for e in prof.events()} & {"aten::_local_scalar_dense", "aten::nonzero", "aten::item"}


def test_eager_weights_are_repadded_per_row():
    ids, mask = right_padded([9, 4])
    batch = pack_inputs(ids, attention_mask=mask)
    qkv = torch.randn(13, 3, 2, 8)
    _, weights = eager_attention(
        *qkv.unbind(1), batch, window=GLOBAL_WINDOW, dropout=0.0, scale=8**-0.5, need_weights=True
    )
    assert weights.shape == (2, 2, 9, 9)
    torch.testing.assert_close(weights[1, :, :4].sum(-1), torch.ones(2, 4))
    assert weights[1, :, 4:].abs().max() == 0 and weights[1, :, :, 4:].abs().max() == 0


def test_eager_refuses_a_64k_token_pack_instead_of_allocating():
    """(1, heads, N, N) weights for N = 65,536 would be 192 GiB; eight 8k documents' scores 24 GiB."""
    q = torch.empty(65536, 12, 64, device="meta")  # never allocated: the refusal comes first
    args = {"window": GLOBAL_WINDOW, "dropout": 0.0, "scale": 0.125}
    with pytest.raises(ValueError, match=r"attention weights of shape \(1, 12, 65536, 65536\)"):
        eager_attention(q, q, q, _flat([128] * 512), **args, need_weights=True)
    with pytest.raises(ValueError, match=r"scores of shape \(8, 12, 8192, 8192\)"):
        eager_attention(q, q, q, _flat([8192] * 8), **args)
    small = torch.randn(512, 2, 8)  # the same short documents without weights run
    out, _ = eager_attention(small, small, small, _flat([128] * 4), **(args | {"scale": 8**-0.5}))
    torch.testing.assert_close(out, per_document(torch.stack([small] * 3, 1), [128] * 4, None))


# ---------------------------------------------------------------- PyTorch's varlen op (CPU kernel, conftest)
def _varlen_vs_sdpa(lengths: list[int], max_seqlen: int, window=(4, 4)):
    qkv = torch.randn(sum(lengths), 3, 2, 8)
    args = {"window": window, "dropout": 0.0, "scale": 8**-0.5}
    out, _ = attention_rexbert.varlen_attention(*qkv.unbind(1), _flat(lengths, max_seqlen), **args)
    return out, per_document(qkv, lengths, window[0] if window[0] >= 0 else None)


def test_reference_kernel_corrupts_attention_when_max_seqlen_is_too_small(cpu_varlen):
    """As on a GPU: the planted-bug tests for max_seqlen rely on it."""
    got, ref = _varlen_vs_sdpa([5, 30, 9], max_seqlen=30)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    got, ref = _varlen_vs_sdpa([5, 30, 9], max_seqlen=5)
    assert (got - ref).abs().max() > 0.1


def test_varlen_model_equals_sdpa_on_packed_and_padded_input_in_any_row_order(cpu_varlen):
    """max_seqlen must be the longest document whatever the row order: the collator's, the padded form's
    and the position-derived one (planting ``lengths[0]`` in any of them fails here)."""
    from transformers import DataCollatorWithFlattening

    model = RexBertModel(tiny_config(local_attention=8)).eval()
    for lengths in ([30, 3, 12, 1, 25], [3, 12, 1, 25, 30], [12, 30, 3]):
        docs = [torch.randint(4, 97, (n,)) for n in lengths]
        packed = {
            "input_ids": torch.cat(docs)[None],
            "cu_seqlens": cu_seqlens(lengths),
            "max_seqlen": max(lengths),
        }
        features = [{"input_ids": d.tolist()} for d in docs]
        flattened = DataCollatorWithFlattening(return_position_ids=True)(features)
        flash_kwargs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(features)
        ids, mask = right_padded(lengths)
        for i, d in enumerate(docs):
            ids[i, : len(d)] = d
        with torch.no_grad():
            model.config._attn_implementation = "sdpa"
            ref = model(**packed).last_hidden_state[0]
            model.config._attn_implementation = "varlen"
            assert model.attention_implementation(ids.device, torch.float32) == "varlen"
            for got in (
                model(**packed).last_hidden_state[0],
                model(input_ids=packed["input_ids"], cu_seqlens=packed["cu_seqlens"]).last_hidden_state[0],
                model(
                    input_ids=flattened["input_ids"], position_ids=flattened["position_ids"]
                ).last_hidden_state[0],
                model(**{k: v for k, v in flash_kwargs.items() if k != "labels"}).last_hidden_state[0],
                model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()],
            ):
                torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_varlen_gradients_equal_sdpa(cpu_varlen):
    model = RexBertForMaskedLM(tiny_config(local_attention=8)).train()
    ids, mask = right_padded([12, 30, 5])
    labels = ids.masked_fill(mask == 0, -100)
    grads = {}
    for impl in ("sdpa", "varlen"):
        model.zero_grad()
        model.config._attn_implementation = impl
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads["varlen"].items():
        torch.testing.assert_close(g, grads["sdpa"][n], atol=1e-6, rtol=1e-5, msg=n)


def test_varlen_kernel_receives_the_model_windows_and_scale(monkeypatch):
    calls = []

    def recording(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
        assert cu_q is cu_k and cu_q.dtype == torch.int32 and isinstance(max_q, int) and max_q == max_k
        calls.append((window_size, scale, max_q))
        return reference_varlen(q, k, v, cu_q, max_q, scale, window_size)[0]

    monkeypatch.setattr("torch.nn.attention.varlen.varlen_attn", recording)
    monkeypatch.setattr(attention_rexbert, "varlen_unavailable", lambda *a: None)
    model = RexBertModel(tiny_config(local_attention=8)).eval()
    with torch.no_grad():
        model(input_ids=torch.randint(4, 97, (1, 19)), cu_seqlens=cu_seqlens([7, 12]), max_seqlen=12)
    # Layers 0 and 3 global, 1 and 2 local with |i - j| <= 4.
    assert [w for w, _, _ in calls] == [(-1, -1), (4, 4), (4, 4), (-1, -1)]
    assert {(s, m) for _, s, m in calls} == {(16**-0.5, 12)}


def test_torch_varlen_attn_raises_on_cpu_so_cpu_never_selects_it():
    from torch.nn.attention.varlen import varlen_attn

    q = torch.randn(4, 2, 8, dtype=torch.bfloat16)
    with pytest.raises((NotImplementedError, RuntimeError)):
        varlen_attn(q, q, q, cu_seqlens([4]), cu_seqlens([4]), 4, 4)
    assert attention_rexbert.varlen_unavailable(torch.device("cpu"), BF16, 0.0) == "it is CUDA-only"


# ---------------------------------------------------------------- selection: each missing capability
@pytest.fixture
def capable_gpu(monkeypatch):
    """A CUDA device with everything the kernel needs; each test then takes one thing away."""
    monkeypatch.setattr(attention_rexbert, "cuda_capability", lambda device: (9, 0))
    monkeypatch.setattr(
        attention_rexbert, "varlen_parameters", lambda: frozenset({"window_size", "scale", "query"})
    )
    return monkeypatch


@pytest.mark.parametrize(
    "change,dtype,dropout,reason",
    [
        (None, BF16, 0.0, None),
        (None, torch.float16, 0.0, None),
        (None, torch.float32, 0.0, "fp16 / bf16"),
        (None, BF16, 0.1, "attention dropout"),
        (
            ("cuda_capability", lambda device: (7, 5)),
            BF16,
            0.0,
            "compute capability >= 8.0; this GPU has (7, 5)",
        ),
        (("varlen_parameters", lambda: None), BF16, 0.0, "no torch.nn.attention.varlen"),
        (
            ("varlen_parameters", lambda: frozenset({"query", "key"})),
            BF16,
            0.0,
            "without window_size / scale",
        ),
    ],
)
def test_varlen_needs_signature_dtype_capability_and_no_dropout(capable_gpu, change, dtype, dropout, reason):
    if change:
        capable_gpu.setattr(attention_rexbert, *change)
    why = attention_rexbert.varlen_unavailable(CUDA, dtype, dropout)
    assert why == reason if reason is None else reason in why


def test_real_torch_varlen_signature_passes_the_check():
    assert {"window_size", "scale"} <= set(attention_rexbert.varlen_parameters())


def test_fallback_to_sdpa_logs_one_line_on_cuda_only(capable_gpu, caplog):
    from transformers.utils import logging as hf_logging

    capable_gpu.setattr(attention_rexbert, "cuda_capability", lambda device: (7, 0))
    model = RexBertModel(tiny_config())
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            assert model.attention_implementation(torch.device("cpu"), BF16) == "sdpa"
            assert not caplog.records  # CPU runs sdpa by design
            for _ in range(3):
                assert model.attention_implementation(CUDA, BF16) == "sdpa"
    finally:
        hf_logging.disable_propagation()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "falls back from varlen to sdpa" in lines[0] and "(7, 0)" in lines[0]
    model.config._attn_implementation = "eager"  # an explicit choice is never second-guessed
    assert model.attention_implementation(CUDA, BF16) == "eager"
    assert model.attention_implementation(CUDA, BF16, output_attentions=True) == "eager"


def test_backend_selection_compiles_into_the_graph(monkeypatch):
    """Under torch.compile the real probes (signature, compute capability) are constants: choosing the
    backend on a GPU adds no graph break (fullgraph) and no recompile."""
    monkeypatch.setattr(attention_rexbert, "_PROBED", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    model = RexBertModel(tiny_config())

    def step(x):
        return x + (model.attention_implementation(CUDA, BF16) == "varlen")

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    assert compiled(torch.zeros(2)).tolist() == [1.0, 1.0]


def test_training_dropout_falls_back_but_eval_keeps_varlen(capable_gpu):
    model = RexBertModel(tiny_config(attention_dropout=0.1))
    assert model.train().attention_implementation(CUDA, BF16) == "sdpa"
    assert model.eval().attention_implementation(CUDA, BF16) == "varlen"


def test_deterministic_flash_attn_refuses_nondeterministic_varlen_training(capable_gpu):
    """varlen_attn has no deterministic switch: PyTorch's flash backward follows the global flag only."""
    model = RexBertModel(tiny_config(deterministic_flash_attn=True)).train()
    with pytest.raises(RuntimeError, match="use_deterministic_algorithms"):
        model.attention_implementation(CUDA, BF16)
    with torch.no_grad():  # no backward, nothing to make deterministic
        assert model.attention_implementation(CUDA, BF16) == "varlen"
    capable_gpu.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    capable_gpu.setattr(torch, "is_deterministic_algorithms_warn_only_enabled", lambda: False)
    assert model.attention_implementation(CUDA, BF16) == "varlen"


# ---------------------------------------------------------------- one switch: attn_implementation
def test_one_switch_defaults_to_varlen_and_maps_the_retired_attention_backend(tmp_path):
    import json

    assert RexBertModel(tiny_config()).config._attn_implementation == "varlen"
    assert RexBertModel(tiny_config(attn_implementation="sdpa")).config._attn_implementation == "sdpa"
    model = RexBertModel(tiny_config())
    model.set_attn_implementation("eager")  # transformers' runtime switch
    assert model.config._attn_implementation == "eager"
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "attention_backend" not in saved and "validate_inputs" not in saved
    for legacy, expected in (("sdpa", "sdpa"), ("eager", "eager"), ("auto", "varlen"), ("varlen", "varlen")):
        (tmp_path / "config.json").write_text(
            json.dumps(saved | {"attention_backend": legacy, "validate_inputs": True})
        )
        loaded = RexBertModel.from_pretrained(tmp_path)
        assert loaded.config._attn_implementation == expected, legacy
        assert not hasattr(loaded.config, "attention_backend")
    chosen = RexBertModel.from_pretrained(tmp_path, attn_implementation="varlen")  # the caller's choice wins
    assert chosen.config._attn_implementation == "varlen"


@pytest.mark.parametrize("name", ["flex_attention", "paged|eager"])
def test_mask_based_transformers_functions_are_refused(name):
    with pytest.raises(ValueError, match="attn_implementation"):
        RexBertModel(tiny_config(attn_implementation=name))


def test_transformers_flash_attention_through_the_interface_equals_sdpa(monkeypatch):
    """transformers' own flash_attention_2 function (its packed kwargs, its sliding_window -> window_size
    rule) with flash-attn's varlen function replaced by the reference: same hidden states as sdpa."""
    import transformers.modeling_flash_attention_utils as fa_utils

    calls = []

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, window_size=(-1, -1), deterministic=False):  # fmt: skip  # noqa: E501
        assert not causal and cu_seqlens_q is cu_seqlens_k
        calls.append((window_size, deterministic))
        return reference_varlen(q, k, v, cu_seqlens_q, max_seqlen_q, softmax_scale, window_size)[0]

    monkeypatch.setattr(
        fa_utils, "_lazy_imports", lambda *a, **kw: (None, flash_attn_varlen_func, None, None, None)
    )
    monkeypatch.setattr(fa_utils, "_loaded_implementation", None)
    model = RexBertModel(tiny_config(local_attention=8, deterministic_flash_attn=True)).eval()
    ids, mask = right_padded([30, 12, 5])
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        model.config._attn_implementation = "flash_attention_2"  # (flash-attn is not installed here)
        got = model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    assert [w for w, _ in calls] == [(-1, -1), (4, 4), (4, 4), (-1, -1)] and all(d for _, d in calls)
