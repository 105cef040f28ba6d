"""RexBERT encoder behaviour: unpadding, packing, backends, blocked local attention, heads, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import ModernBertForMaskedLM

from modeling_rexbert import (
    RexBertForMaskedLM,
    RexBertForSequenceClassification,
    RexBertForTokenClassification,
    RexBertModel,
)
from modeling_rexbert.conversion import rexbert_config_to_modernbert
from modeling_rexbert.modeling_rexbert import BlockedGroup, build_varlen_batch, sdpa_varlen_attention

from .conftest import right_padded, tiny_config

ATOL = 1e-5


def _encoder(**overrides) -> RexBertModel:
    return RexBertModel(tiny_config(**overrides)).eval()


# ---------------------------------------------------------------- packing
def _packed_case(model: RexBertModel, doc_lengths: list[list[int]]):
    """Rows packing several documents + right padding; returns inputs and per-document references."""
    S = max(sum(row) for row in doc_lengths) + 3
    ids = torch.zeros(len(doc_lengths), S, dtype=torch.long)
    mask = torch.zeros_like(ids)
    doc_ids = torch.zeros_like(ids)
    pos = torch.zeros_like(ids)
    refs = []
    for r, row in enumerate(doc_lengths):
        o = 0
        for j, n in enumerate(row):
            doc = torch.randint(4, 97, (n,))
            ids[r, o:o + n], mask[r, o:o + n], doc_ids[r, o:o + n] = doc, 1, j + 1
            pos[r, o:o + n] = torch.arange(n)
            with torch.no_grad():
                refs.append((r, o, n, model(input_ids=doc[None]).last_hidden_state[0]))
            o += n
    return ids, mask, doc_ids, pos, refs


@pytest.mark.parametrize("signal", ["document_ids", "position_ids"])
def test_packed_documents_equal_running_each_alone(signal):
    model = _encoder(local_attention=8)  # documents longer and shorter than the window
    ids, mask, doc_ids, pos, refs = _packed_case(model, [[30, 3, 12], [1, 25], [40]])
    kwargs = {"document_ids": doc_ids} if signal == "document_ids" else {"position_ids": pos}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    for r, o, n, ref in refs:
        torch.testing.assert_close(out[r, o:o + n], ref, atol=ATOL, rtol=0)
    assert out[mask == 0].abs().max() == 0  # padding rows are zeros


def test_cu_seqlens_flattened_input_equals_documents_alone():
    model = _encoder(local_attention=8)
    docs = [torch.randint(4, 97, (n,)) for n in (17, 2, 33)]
    flat = torch.cat(docs)[None]
    cu = torch.tensor([0, 17, 19, 52], dtype=torch.int32)
    with torch.no_grad():
        out = model(input_ids=flat, cu_seqlens=cu, max_seqlen=33).last_hidden_state[0]
        for doc, s in zip(docs, (0, 17, 19)):
            ref = model(input_ids=doc[None]).last_hidden_state[0]
            torch.testing.assert_close(out[s:s + len(doc)], ref, atol=ATOL, rtol=0)


def test_document_ids_must_be_contiguous():
    model = _encoder()
    ids = torch.randint(4, 97, (1, 6))
    with pytest.raises(ValueError, match="contiguous"):
        model(input_ids=ids, document_ids=torch.tensor([[1, 1, 2, 2, 1, 1]]))


@pytest.mark.parametrize("shape", [(1, 0), (0, 5)])
def test_zero_length_input_is_named(shape):
    message = rf"empty input of shape \({shape[0]}, {shape[1]}\): nothing to encode"
    with pytest.raises(ValueError, match=message):
        _encoder()(input_ids=torch.zeros(shape, dtype=torch.long))


def test_left_padding_equals_right_padding():
    model = _encoder(local_attention=8)
    ids, mask = right_padded([20, 9])
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for i, n in enumerate([20, 9]):
        left_ids[i, 20 - n:], left_mask[i, 20 - n:] = ids[i, :n], 1
    with torch.no_grad():
        right = model(input_ids=ids, attention_mask=mask).last_hidden_state
        left = model(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
    torch.testing.assert_close(left[1, 11:], right[1, :9], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- backends
def _dense_reference(qkv: torch.Tensor, half: int | None) -> torch.Tensor:
    """One document, explicit S x S band mask: the O(S^2) definition the blocked kernel must match."""
    q, k, v = (t.transpose(0, 1)[None] for t in qkv.unbind(1))  # (1, heads, S, d)
    i = torch.arange(qkv.shape[0])
    mask = None if half is None else (i[:, None] - i[None, :]).abs() <= half
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[0].transpose(0, 1)


@pytest.mark.parametrize("window,lengths", [(16, [700]), (8, [5, 130, 9, 64, 257]), (64, [33, 1000])])
def test_blocked_local_attention_equals_dense_masked_reference(window, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    batch = build_varlen_batch(1, sum(lengths), qkv.device, cu_seqlens=cu)
    got, _ = sdpa_varlen_attention(*qkv.unbind(1), batch, window, 0.0, 16**-0.5)
    plan = batch.plan(window)
    blocked = [plan.blocked]
    assert isinstance(plan.blocked, BlockedGroup), "long documents must take the blocked path"
    # Memory is linear: the mask holds block * 3 * block entries per block of queries, never S^2.
    assert blocked[0].mask.numel() <= (blocked[0].ntokens + window) * 3 * (window // 2)
    s = 0
    for n in lengths:
        ref = _dense_reference(qkv[s:s + n], window // 2)
        torch.testing.assert_close(got[s:s + n], ref, atol=ATOL, rtol=0)
        s += n


def test_length_buckets_equal_per_document_attention():
    lengths = [300, 7, 250, 251, 40, 33, 1, 120]  # several buckets, some padded, one equal-length pair
    qkv = torch.randn(sum(lengths), 3, 2, 16)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    batch = build_varlen_batch(1, sum(lengths), qkv.device, cu_seqlens=cu)
    got, _ = sdpa_varlen_attention(*qkv.unbind(1), batch, None, 0.0, 16**-0.5)
    plan = batch.plan(None)
    assert 1 < len(plan.dense.buckets) < len(lengths)
    s = 0
    for n in lengths:
        torch.testing.assert_close(got[s:s + n], _dense_reference(qkv[s:s + n], None), atol=ATOL, rtol=0)
        s += n


def test_eager_equals_sdpa_and_returns_attention_weights():
    model = _encoder(local_attention=8)
    ids, mask = right_padded([30, 12, 5])
    with torch.no_grad():
        sdpa = model(input_ids=ids, attention_mask=mask).last_hidden_state
        model.config._attn_implementation = "eager"
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, sdpa, atol=ATOL, rtol=0)
    assert len(out.attentions) == 4 and out.attentions[0].shape == (3, 2, 30, 30)
    assert len(out.hidden_states) == 5 and out.hidden_states[0].shape == (3, 30, 32)
    rows = out.attentions[1][0, :, :30].sum(-1)  # every real query row is a distribution
    torch.testing.assert_close(rows, torch.ones_like(rows))
    local = out.attentions[1][0, 0]  # layer 1 is local: nothing beyond |i - j| > 4
    i = torch.arange(30)
    assert local[(i[:, None] - i[None, :]).abs() > 4].abs().max() == 0
    assert out.attentions[0][1, :, 12:].abs().max() == 0  # padding neither attends nor is attended


def test_output_attentions_with_sdpa_falls_back_to_eager_with_warning():
    model = _encoder()
    ids, mask = right_padded([10, 4])
    with pytest.warns(UserWarning, match="eager"):
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert out.attentions[0].shape == (2, 2, 10, 10)


def test_flash_attention_backend_needs_flash_attn():
    pytest.importorskip("transformers")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - GPU machines only
        pytest.skip("flash-attn installed: this test covers the CPU-only error path")
    from modeling_rexbert.modeling_rexbert import flash_varlen_attention

    batch = build_varlen_batch(1, 4, torch.device("cpu"))
    with pytest.raises(ImportError, match="flash-attn"):
        flash_varlen_attention(*torch.randn(4, 3, 2, 16).unbind(1), batch, None, 0.0, 0.25)


def test_8192_tokens_run_without_quadratic_memory():
    model = _encoder(num_hidden_layers=2, hidden_size=32, max_position_embeddings=8192)  # global + local
    ids = torch.randint(4, 97, (1, 8192))
    with torch.no_grad(), torch.profiler.profile(profile_memory=True) as prof:
        out = model(input_ids=ids).last_hidden_state
    assert torch.isfinite(out).all()
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest < 8192 * 8192 * 4 // 16, largest  # far below one S x S fp32 score matrix (256 MiB)


# ---------------------------------------------------------------- gradients vs transformers
def test_mlm_gradients_match_modernbert():
    cfg = tiny_config(local_attention=8, sparse_prediction=False)
    ours = RexBertForMaskedLM(cfg).train()
    ref = ModernBertForMaskedLM(rexbert_config_to_modernbert(cfg)).train()
    ref.config._attn_implementation = "sdpa"
    ref.load_state_dict(ours.state_dict())
    ids, mask = right_padded([40, 17, 29])
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))
    labels[mask == 0] = -100
    ours(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    ref(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


# ---------------------------------------------------------------- heads
def test_sparse_prediction_logits_order_and_loss_match_dense():
    cfg = tiny_config(local_attention=8)
    model = RexBertForMaskedLM(cfg).eval()
    ids, mask = right_padded([25, 11])
    labels = torch.full_like(ids, -100)
    labels[0, [3, 20]], labels[1, [0, 7]] = ids[0, [3, 20]], ids[1, [0, 7]]
    with torch.no_grad():
        sparse = model(input_ids=ids, attention_mask=mask, labels=labels)
        cfg.sparse_prediction = False
        dense = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert sparse.logits.shape == (4, 97) and dense.logits.shape == (2, 25, 97)
    torch.testing.assert_close(sparse.logits, dense.logits[labels != -100])
    torch.testing.assert_close(sparse.loss, dense.loss)
    expected = F.cross_entropy(dense.logits[labels != -100], labels[labels != -100])
    torch.testing.assert_close(sparse.loss, expected)


def test_decoder_is_tied_with_bias():
    model = RexBertForMaskedLM(tiny_config())
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    assert model.decoder.bias is not None


def test_classification_heads_shapes_losses_and_padding_invariance():
    ids, mask = right_padded([14, 6])
    seq = RexBertForSequenceClassification(tiny_config(num_labels=3)).eval()
    out = seq(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0
    with torch.no_grad():  # pooling ignores padding: the short row alone gives the same logits
        alone = seq(input_ids=ids[1:, :6], attention_mask=mask[1:, :6]).logits
    torch.testing.assert_close(out.logits[1:].detach(), alone, atol=ATOL, rtol=0)
    tok = RexBertForTokenClassification(tiny_config(num_labels=5)).eval()
    labels = torch.randint(0, 5, ids.shape).masked_fill(mask == 0, -100)
    out = tok(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 14, 5) and torch.isfinite(out.loss)
    reg = RexBertForSequenceClassification(tiny_config(num_labels=1))
    assert reg(input_ids=ids, attention_mask=mask, labels=torch.tensor([0.5, 1.0])).loss.ndim == 0


def test_gradient_checkpointing_gives_same_gradients():
    model = RexBertForMaskedLM(tiny_config(local_attention=8)).train()
    ids, mask = right_padded([30, 10])
    labels = ids.masked_fill(mask == 0, -100)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], atol=1e-6, rtol=1e-5, msg=n)


# ---------------------------------------------------------------- bad input
def test_all_zero_attention_mask_row_gives_zero_states_not_nan():
    model = RexBertForSequenceClassification(tiny_config(num_labels=2, classifier_pooling="mean")).eval()
    ids, mask = right_padded([8, 5])
    mask[1] = 0
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model(input_ids=ids, attention_mask=mask).logits
        alone = model.model(input_ids=ids[:1], attention_mask=mask[:1]).last_hidden_state
    assert torch.isfinite(logits).all() and hidden[1].abs().max() == 0
    torch.testing.assert_close(hidden[:1], alone)
    all_empty = model.model(input_ids=ids, attention_mask=torch.zeros_like(mask)).last_hidden_state
    assert all_empty.abs().max() == 0


def test_too_long_input_raises():
    model = _encoder(max_position_embeddings=16)
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model(input_ids=torch.randint(4, 97, (1, 17)))
    # Packed documents are judged by their own length, not the row's.
    model(input_ids=torch.randint(4, 97, (1, 20)), document_ids=torch.tensor([[0] * 10 + [1] * 10]))


def test_out_of_vocab_ids_raise():
    model = _encoder()
    with pytest.raises(ValueError, match="vocab_size=97"):
        model(input_ids=torch.tensor([[5, 97]]))
    with pytest.raises(ValueError, match="outside"):
        model(input_ids=torch.tensor([[5, -1]]))


def test_mismatched_shapes_and_labels_on_padding_raise():
    model = RexBertForMaskedLM(tiny_config())
    ids, mask = right_padded([6, 3])
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(input_ids=ids, attention_mask=mask[:, :4])
    labels = ids.clone()
    with pytest.raises(ValueError, match="attention_mask == 0"):
        model(input_ids=ids, attention_mask=mask, labels=labels)


# ---------------------------------------------------------------- misc API
def test_num_items_in_batch_gives_summed_loss_over_given_count():
    model = RexBertForMaskedLM(tiny_config()).eval()
    ids, mask = right_padded([12, 7])
    labels = ids.masked_fill((mask == 0) | (torch.rand(ids.shape) < 0.5), -100)
    with torch.no_grad():
        mean = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        summed = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=40).loss
    n = int((labels != -100).sum())
    torch.testing.assert_close(summed, mean * n / 40)
    assert not RexBertForSequenceClassification.accepts_loss_kwargs  # Trainer scales mean losses itself


def test_inputs_embeds_equal_input_ids():
    model = _encoder()
    ids, mask = right_padded([9, 4])
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask).last_hidden_state
        b = model(inputs_embeds=model.embeddings.tok_embeddings(ids), attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=ids, inputs_embeds=model.embeddings.tok_embeddings(ids))


def test_training_with_dropout_everywhere_is_finite_and_stochastic():
    cfg = tiny_config(local_attention=8, attention_dropout=0.1, embedding_dropout=0.1, mlp_dropout=0.1)
    model = RexBertForMaskedLM(cfg).train()
    ids, mask = right_padded([40, 9])
    labels = ids.masked_fill(mask == 0, -100)
    a = model(input_ids=ids, attention_mask=mask, labels=labels)
    a.loss.backward()
    b = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.isfinite(a.loss) and a.loss.item() != b.loss.item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_remote_code_files_import_only_torch_transformers_and_stdlib():
    """The two files copied into Hub folders must not need this repository (or any other package)."""
    import ast
    import sys
    from pathlib import Path

    import modeling_rexbert

    root = Path(modeling_rexbert.__file__).parent
    for name in ("modeling_rexbert.py", "configuration_rexbert.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only the sibling configuration file
                    assert node.module == "configuration_rexbert", (name, node.module)
                    continue
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in {"torch", "transformers", "flash_attn"} or top in sys.stdlib_module_names, (
                    name, module)


@pytest.mark.parametrize("divisor", [None, 17])
def test_fused_cross_entropy_matches_torch_loss_and_gradient(divisor):
    from modeling_rexbert.modeling_rexbert import _cross_entropy

    logits = torch.randn(9, 50, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (9,))
    ours = _cross_entropy(logits, labels, -100, divisor)
    (g_ours,) = torch.autograd.grad(ours, logits)
    ref = F.cross_entropy(logits, labels, reduction="sum") / (divisor or 9)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_fused_cross_entropy_passes_gradcheck_and_backward_twice():
    from modeling_rexbert.modeling_rexbert import _FusedCrossEntropy

    logits = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 6, 3, 3])
    assert torch.autograd.gradcheck(lambda x: _FusedCrossEntropy.apply(x, labels, 3), (logits,))
    loss = _FusedCrossEntropy.apply(logits, labels, 4)
    (g1,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, logits)  # the saved log-probabilities are not consumed in place
    torch.testing.assert_close(g1, g2)


# ---------------------------------------------------------------- RoPE custom autograd
def _rope_reference(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' ModernBERT formulation on the same angles: full-width tables and rotate_half."""
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

    cos_full, sin_full = (torch.cat((t, t), dim=-1)[:, 0, 0][None] for t in (cos, sin))  # (1, N, d)
    q, k = (t.transpose(0, 1)[None] for t in qk.unbind(1))  # (1, heads, N, d)
    q, k = apply_rotary_pos_emb(q, k, cos_full, sin_full)
    return torch.stack((q[0].transpose(0, 1), k[0].transpose(0, 1)), dim=1)  # (N, 2, heads, d)


def test_rope_function_matches_transformers_forward_and_gradient():
    from modeling_rexbert.modeling_rexbert import apply_rope, rope_cos_sin

    pos = torch.tensor([0, 1, 2, 3, 0, 1, 7])
    qkv = torch.randn(7, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    qk = qkv.split([2, 1], dim=1)[0]  # strided view of the fused projection, as in RexBertAttention
    cos, sin = rope_cos_sin(pos, 8, 160.0, torch.float64)
    ours = apply_rope(qk, cos, sin)
    ref = _rope_reference(qkv[:, :2], cos, sin)
    torch.testing.assert_close(ours, ref)
    upstream = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad(ours, qkv, upstream)
    (g_ref,) = torch.autograd.grad(ref, qkv, upstream)
    torch.testing.assert_close(g_ours, g_ref)
    assert bool((g_ours[:, 2] == 0).all()), "v receives no gradient from RoPE"


def test_rope_function_passes_gradcheck_and_inference_path_is_identical():
    from modeling_rexbert.modeling_rexbert import _Rope, apply_rope, rope_cos_sin

    pos = torch.tensor([0, 1, 5, 2])
    cos, sin = rope_cos_sin(pos, 6, 10_000.0, torch.float64)
    qk = torch.randn(4, 2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: _Rope.apply(x, cos, sin), (qk,))
    with torch.no_grad():
        plain = apply_rope(qk, cos, sin)
    torch.testing.assert_close(apply_rope(qk, cos, sin), plain, atol=0, rtol=0)


@pytest.mark.parametrize("window,lengths", [(16, [700]), (8, [5, 130, 9, 64, 257])])
def test_blocked_local_attention_gradients_equal_dense_reference(window, lengths):
    qkv = torch.randn(sum(lengths), 3, 2, 16, dtype=torch.float64, requires_grad=True)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    batch = build_varlen_batch(1, sum(lengths), qkv.device, cu_seqlens=cu)
    assert batch.plan(window, torch.float64).blocked is not None
    got, _ = sdpa_varlen_attention(*qkv.unbind(1), batch, window, 0.0, 16**-0.5)
    ref = torch.cat([_dense_reference(t, window // 2) for t in qkv.split(lengths)])
    upstream = torch.randn_like(got)
    (g_got,) = torch.autograd.grad(got, qkv, upstream)
    (g_ref,) = torch.autograd.grad(ref, qkv, upstream)
    torch.testing.assert_close(g_got, g_ref, atol=1e-8, rtol=0)


# ---------------------------------------------------------------- sparse MLM: last layer on labelled rows
def test_sparse_mlm_loss_and_gradients_match_modernbert_sparse():
    """The last layer's Wo / MLP and the final norm run on labelled rows only; values must not change."""
    cfg = tiny_config(local_attention=8, sparse_prediction=True)
    ours = RexBertForMaskedLM(cfg).train()
    ref = ModernBertForMaskedLM(rexbert_config_to_modernbert(cfg)).train()
    ref.config._attn_implementation = "sdpa"
    ref.load_state_dict(ours.state_dict())
    ids, mask = right_padded([40, 17, 29])
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))
    labels[mask == 0] = -100
    out = ours(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    expected = ref(input_ids=ids, attention_mask=mask, labels=labels)
    expected.loss.backward()
    torch.testing.assert_close(out.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, expected.loss, atol=ATOL, rtol=0)
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sparse_mlm_same_with_hidden_states_and_checkpointing():
    model = RexBertForMaskedLM(tiny_config(local_attention=8, sparse_prediction=True)).train()
    ids, mask = right_padded([30, 10])
    labels = torch.full_like(ids, -100)
    labels[0, [2, 29]], labels[1, 4] = ids[0, [2, 29]], ids[1, 4]
    runs = []
    for hidden_states, checkpointing in ((False, False), (True, False), (False, True)):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=hidden_states)
        out.loss.backward()
        assert out.logits.shape == (3, model.config.vocab_size)
        if hidden_states:
            assert out.hidden_states[-1].shape == (2, 30, model.config.hidden_size)
        runs.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    for logits, grads in runs[1:]:
        torch.testing.assert_close(logits, runs[0][0], atol=1e-6, rtol=0)
        for n, g in grads.items():
            torch.testing.assert_close(g, runs[0][1][n], atol=1e-6, rtol=1e-5, msg=n)
