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

from .conftest import cu_seqlens, right_padded, tiny_config

ATOL = 1e-5


def _encoder(**overrides) -> RexBertModel:
    return RexBertModel(tiny_config(**overrides)).eval()


# ---------------------------------------------------------------- packing contract
def _packed(doc_lengths: list[int], labelled: float = 0.0):
    """Packed (1, N) batch as the collator builds it on the host, plus the documents."""
    docs = [torch.randint(4, 97, (n,)) for n in doc_lengths]
    cu = torch.tensor([0, *torch.tensor(doc_lengths).cumsum(0).tolist()], dtype=torch.int32)
    ids = torch.cat(docs)[None]
    labels = torch.where(torch.rand(ids.shape) < labelled, ids, torch.full_like(ids, -100))
    batch = {
        "input_ids": ids,
        "position_ids": torch.cat([torch.arange(n) for n in doc_lengths])[None],
        "cu_seqlens": cu,
        "max_seqlen": max(doc_lengths),
    }
    if labelled:
        batch |= {"labels": labels, "label_positions": (labels[0] != -100).nonzero().squeeze(1)}
    return batch, docs


@pytest.mark.parametrize("with_positions", [True, False])
def test_packed_documents_equal_running_each_alone(with_positions):
    model = _encoder(local_attention=8)  # documents longer and shorter than the window
    batch, docs = _packed([30, 3, 12, 1, 25, 40])
    if not with_positions:  # derived from cu_seqlens on the device
        del batch["position_ids"]
    with torch.no_grad():
        out = model(**batch).last_hidden_state[0]
        s = 0
        for doc in docs:
            torch.testing.assert_close(
                out[s : s + len(doc)], model(input_ids=doc[None]).last_hidden_state[0], atol=ATOL, rtol=0
            )
            s += len(doc)


def test_packed_mlm_equals_padded_mlm_loss_logits_and_gradients():
    torch.manual_seed(0)
    model = RexBertForMaskedLM(tiny_config(local_attention=8)).train()
    batch, docs = _packed([30, 3, 12, 25], labelled=0.3)
    lengths = [len(d) for d in docs]
    ids, mask = right_padded(lengths)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = d
    labels = torch.full_like(ids, -100)
    labels[mask.bool()] = batch["labels"][0]
    packed = model(**batch)
    packed.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    padded = model(input_ids=ids, attention_mask=mask, labels=labels)
    padded.loss.backward()
    torch.testing.assert_close(packed.logits, padded.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed.loss, padded.loss, atol=ATOL, rtol=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_packed_input_rejects_padding_mask_batched_rows_and_unknown_arguments():
    model = _encoder()
    batch, _ = _packed([5, 6])
    with pytest.raises(ValueError, match="cu_seqlens is for packed input"):
        model(**batch, attention_mask=torch.ones_like(batch["input_ids"]))
    with pytest.raises(ValueError, match="cu_seqlens is for packed input"):
        model(**{**batch, "input_ids": batch["input_ids"].expand(2, -1), "position_ids": None})
    with pytest.raises(TypeError, match="document_ids"):  # never silently ignored
        model(input_ids=batch["input_ids"], document_ids=torch.zeros_like(batch["input_ids"]))
    mlm = RexBertForMaskedLM(tiny_config())
    ones = torch.ones_like(batch["input_ids"])
    with pytest.raises(ValueError, match="label_positions"):
        mlm(input_ids=batch["input_ids"], attention_mask=ones, label_positions=torch.tensor([0]))
    for head in (
        mlm,
        RexBertForSequenceClassification(tiny_config()),
        RexBertForTokenClassification(tiny_config()),
    ):
        with pytest.raises(TypeError, match="segment_ids"):
            head(input_ids=batch["input_ids"], segment_ids=torch.zeros_like(batch["input_ids"]))


def test_left_padding_equals_right_padding():
    model = _encoder(local_attention=8)
    ids, mask = right_padded([20, 9])
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for i, n in enumerate([20, 9]):
        left_ids[i, 20 - n :], left_mask[i, 20 - n :] = ids[i, :n], 1
    with torch.no_grad():
        right = model(input_ids=ids, attention_mask=mask).last_hidden_state
        left = model(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
    torch.testing.assert_close(left[1, 11:], right[1, :9], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- backends through the model
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


def test_output_attentions_uses_eager_whatever_the_backend():
    model = _encoder()
    ids, mask = right_padded([10, 4])
    assert model.attention_implementation(ids.device, torch.float32, output_attentions=True) == "eager"
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert out.attentions[0].shape == (2, 2, 10, 10)
    torch.testing.assert_close(out.attentions[0].sum(-1)[1, :, :4], torch.ones(2, 4))


@pytest.mark.parametrize("layout", ["left_padded", "packed"])
def test_attention_weights_sit_at_each_documents_input_positions(layout):
    """Every document's weights equal those of the document run alone, at its own (row, column) positions
    of the (B, heads, S, S) output; everything else is 0. Left padding and packing move the documents
    away from slot 0 of the per-document layout the eager backend computes in."""
    model = _encoder(local_attention=8)  # output_attentions runs eager
    lengths = [30, 3, 12, 25]
    if layout == "packed":
        batch, docs = _packed(lengths)
        spans = [(0, s, s + n) for s, n in zip(cu_seqlens(lengths)[:-1].tolist(), lengths)]
    else:
        ids, mask = right_padded(lengths)
        S = ids.shape[1]
        ids, mask = ids.flip(1), mask.flip(1)  # left padding; row order is the documents' order
        batch, docs = (
            {"input_ids": ids, "attention_mask": mask},
            [ids[b, S - n :] for b, n in enumerate(lengths)],
        )
        spans = [(b, S - n, S) for b, n in enumerate(lengths)]
    with torch.no_grad():
        got = model(**batch, output_attentions=True).attentions
        alone = [model(input_ids=doc[None], output_attentions=True).attentions for doc in docs]
    for layer, weights in enumerate(got):
        expected = torch.zeros_like(weights)
        for (b, start, end), doc_weights in zip(spans, alone):
            expected[b, :, start:end, start:end] = doc_weights[layer][0]
        torch.testing.assert_close(weights, expected, atol=ATOL, rtol=0)


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


def test_fresh_weights_follow_modernbert_init_as_transformers_draws_it():
    """Every weight of a fresh model has transformers' ModernBERT init: truncated at ±2σ, σ = 0.02 for inputs,
    0.02 / sqrt(2 · layers) for output projections and the MLM head. (transformers 5 skipped our
    ``_init_weights`` for remote code and left every weight at N(0, 0.02): 3× too large outputs.)"""
    cfg = tiny_config(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=4)
    torch.manual_seed(0)
    ours = dict(RexBertForMaskedLM(cfg).named_parameters())
    torch.manual_seed(0)
    ref = dict(ModernBertForMaskedLM(rexbert_config_to_modernbert(cfg)).named_parameters())
    assert ours.keys() == ref.keys()
    std_out = 0.02 / (2 * cfg.num_hidden_layers) ** 0.5
    for name, weight in ours.items():
        if weight.dim() < 2:
            torch.testing.assert_close(weight, ref[name], msg=name)  # norms 1, biases 0
            continue
        bound = 2 * (std_out if name.endswith("Wo.weight") or name == "head.dense.weight" else 0.02)
        assert weight.abs().max() <= bound + 1e-7, name
        assert weight.abs().max() > 0.95 * bound, name  # drawn at that scale, not smaller
        assert abs(weight.std() / ref[name].std() - 1) < 0.05, name


def test_loading_does_not_reinitialise_saved_weights(tmp_path):
    model = RexBertForMaskedLM(tiny_config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # far from any init distribution
    model.save_pretrained(tmp_path)
    loaded = RexBertForMaskedLM.from_pretrained(tmp_path)
    for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
        torch.testing.assert_close(p, q, msg=name)


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


def test_too_long_document_warns_once_and_runs(caplog):
    from transformers.utils import logging as hf_logging

    model = _encoder(max_position_embeddings=16)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            out = model(input_ids=torch.randint(4, 97, (1, 17))).last_hidden_state
    finally:
        hf_logging.disable_propagation()
    assert torch.isfinite(out).all()
    assert "17 tokens exceeds max_position_embeddings=16" in caplog.text
    caplog.clear()
    batch, _ = _packed([10, 10])  # packed documents are judged by their own length, not the row's
    with caplog.at_level("WARNING"):
        model(**batch)
    assert "exceeds" not in caplog.text


def test_mismatched_shapes_raise():
    model = RexBertForMaskedLM(tiny_config())
    ids, mask = right_padded([6, 3])
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(input_ids=ids, attention_mask=mask[:, :4])


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
    """The files copied into Hub folders must not need this repository (or any other package)."""
    import ast
    import sys
    from pathlib import Path

    import modeling_rexbert

    root = Path(modeling_rexbert.__file__).parent
    siblings = {"configuration_rexbert", "packing_rexbert", "attention_rexbert"}
    for name in ("modeling_rexbert.py", *(f"{m}.py" for m in siblings)):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only the sibling files shipped with the remote code
                    assert node.module in siblings, (name, node.module)
                    continue
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in {"torch", "transformers", "flash_attn"} or top in sys.stdlib_module_names, (
                    name,
                    module,
                )


@pytest.mark.parametrize("all_valid", [False, True])
@pytest.mark.parametrize("divisor", [None, 17, torch.tensor(17)])
def test_masked_lm_loss_matches_torch_loss_and_gradient(divisor, all_valid):
    from modeling_rexbert.modeling_rexbert import masked_lm_loss

    logits = torch.randn(9, 50, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (9,))
    if not all_valid:
        labels[[2, 5]] = -100
    ours = masked_lm_loss(logits, labels, -100, divisor, all_valid=all_valid)
    (g_ours,) = torch.autograd.grad(ours, logits)
    count = 9 if all_valid else 7
    ref = F.cross_entropy(logits, labels, reduction="sum") / (count if divisor is None else 17)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours.double(), ref)
    torch.testing.assert_close(g_ours.double(), g_ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_sparse_cross_entropy_over_several_row_chunks_matches_torch(dtype):
    """On a CPU rows go a few at a time through one reused fp32 buffer (2^20 values: 5 rows of 200,000
    here, so chunks of 5 and 2): the loss and gradient of F.cross_entropy on the fp32 logits."""
    from modeling_rexbert import cross_entropy_cpu
    from modeling_rexbert.modeling_rexbert import _SparseCrossEntropy

    assert _SparseCrossEntropy.log_sum_exp is cross_entropy_cpu.log_sum_exp  # the package's CPU version
    assert _SparseCrossEntropy.softmax_minus_onehot is cross_entropy_cpu.softmax_minus_onehot
    torch.manual_seed(0)
    logits = (torch.randn(7, 200_000, dtype=torch.float64) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, 200_000, (7,))
    ours = _SparseCrossEntropy.apply(logits, targets) / 5
    (g_ours,) = torch.autograd.grad(ours, logits)
    wide = logits.detach().to(torch.promote_types(dtype, torch.float32)).requires_grad_()
    ref = F.cross_entropy(wide, targets, reduction="sum") / 5
    (g_ref,) = torch.autograd.grad(ref, wide)
    torch.testing.assert_close(ours, ref)
    assert g_ours.dtype == dtype
    torch.testing.assert_close(g_ours, g_ref.to(dtype))


@pytest.mark.parametrize("all_valid", [False, True])
def test_masked_lm_loss_without_targets_is_zero_with_a_graph(all_valid):
    from modeling_rexbert.modeling_rexbert import masked_lm_loss

    logits = torch.randn(0, 5, requires_grad=True)
    loss = masked_lm_loss(logits, torch.zeros(0, dtype=torch.long), -100, all_valid=all_valid)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == (0, 5)


def test_sparse_cross_entropy_passes_gradcheck_and_backward_twice():
    from modeling_rexbert.modeling_rexbert import _SparseCrossEntropy

    logits = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 6, 3, 3])
    assert torch.autograd.gradcheck(lambda x: _SparseCrossEntropy.apply(x, labels) / 3, (logits,))
    loss = _SparseCrossEntropy.apply(logits, labels) / 4
    (g1,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, logits)  # the saved logits are not consumed in place
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
    cos, sin = (t.double() for t in rope_cos_sin(pos, 8, 160.0))
    ours = apply_rope(qk, cos, sin)
    ref = _rope_reference(qkv[:, :2], cos, sin)
    torch.testing.assert_close(ours, ref)
    upstream = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad(ours, qkv, upstream)
    (g_ref,) = torch.autograd.grad(ref, qkv, upstream)
    torch.testing.assert_close(g_ours, g_ref)
    assert bool((g_ours[:, 2] == 0).all()), "v receives no gradient from RoPE"


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


# ---------------------------------------------------------------- no host reads in the packed training step
SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::item"}


def _profiled_ops(model, batch) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = model(**batch, num_items_in_batch=torch.tensor(17))
        out.loss.backward()
    return {e.name for e in prof.events()}


HOST_READS = ("tolist", "item", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")


@pytest.mark.parametrize("backend", ["sdpa", "varlen"])
def test_packed_forward_backward_reads_nothing_from_the_device(backend, monkeypatch):
    """The training step on a collator batch with the GPU backends (varlen, or the shipped sdpa it falls
    back to): no op that would make a GPU wait for the host -- no nonzero / item in the profile, and no
    Tensor.tolist / .item / .cpu / int() / bool() call at all. (training/dry_run.py's FakeTensor run of the
    base model is the GPU-side proof.)"""
    from modeling_rexbert import attention_rexbert

    from .conftest import varlen_on_cpu

    model = RexBertForMaskedLM(tiny_config(local_attention=8, attn_implementation=backend)).train()
    batch, _ = _packed([30, 3, 12, 25, 1], labelled=0.3)
    monkeypatch.setitem(attention_rexbert.ATTENTION_BACKENDS, "sdpa", attention_rexbert.sdpa_attention)
    with varlen_on_cpu(), monkeypatch.context() as guard:
        for name in HOST_READS:

            def refuse(*args, name=name, **kwargs):
                raise AssertionError(f"host read on the packed training path: Tensor.{name}")

            guard.setattr(torch.Tensor, name, refuse)
        names = _profiled_ops(model, batch)
    assert "aten::mm" in names  # the profiler saw the step
    assert not names & SYNC_OPS, names & SYNC_OPS
    # The padded form may read the mask (inference); the check above is not vacuous:
    ids, mask = right_padded([30, 12])
    padded = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    assert _profiled_ops(model, padded) & SYNC_OPS


# ---------------------------------------------------------------- numerics vs transformers
def test_rope_in_bf16_is_the_fp32_rotation_cast_once():
    from modeling_rexbert.modeling_rexbert import apply_rope, rope_cos_sin

    cos, sin = rope_cos_sin(torch.arange(64), 32, 10_000.0)
    qk = torch.randn(64, 2, 2, 32).bfloat16()
    torch.testing.assert_close(
        apply_rope(qk, cos, sin), apply_rope(qk.float(), cos, sin).bfloat16(), atol=0, rtol=0
    )


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_bf16_autocast_logits_within_bf16_tolerance_of_modernbert(layout):
    cfg = tiny_config(local_attention=8, sparse_prediction=False)
    ours = RexBertForMaskedLM(cfg).eval()
    ref = ModernBertForMaskedLM(rexbert_config_to_modernbert(cfg)).eval()
    ref.config._attn_implementation = "sdpa"
    ref.load_state_dict(ours.state_dict())
    ids, mask = right_padded([40, 17, 29])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = ref(input_ids=ids, attention_mask=mask).logits.float()[mask.bool()]  # (N, V)
        if layout == "padded":
            got = ours(input_ids=ids, attention_mask=mask).logits.float()[mask.bool()]
        else:
            cu = torch.tensor([0, 40, 57, 86], dtype=torch.int32)
            got = ours(input_ids=ids[mask.bool()][None], cu_seqlens=cu, max_seqlen=40).logits.float()[0]
    with torch.no_grad():
        exact = ref(input_ids=ids, attention_mask=mask).logits[mask.bool()]  # fp32
    scale = exact.abs().max()
    # Both runs round to bf16 at every layer: each must be as close to the fp32 logits as the other.
    ours_err, ref_err = (got - exact).abs().max() / scale, (expected - exact).abs().max() / scale
    assert ours_err < 2 * ref_err + 1e-3, (ours_err, ref_err)
    assert (got - expected).abs().max() / scale < 0.05


def test_capability_flags_match_what_the_model_accepts():
    from modeling_rexbert import RexBertPreTrainedModel

    assert RexBertPreTrainedModel._supports_flash_attn and not RexBertPreTrainedModel._supports_flex_attn
    assert RexBertModel._can_set_attn_implementation()  # transformers' runtime switch is available


# ---------------------------------------------------------------- every head on transformers' packed input
def _flattened(docs: list[torch.Tensor], convention: str) -> dict:
    """A packed batch in one of the conventions, from transformers' own DataCollatorWithFlattening."""
    from transformers import DataCollatorWithFlattening

    features = [{"input_ids": d.tolist()} for d in docs]
    if convention == "cu_seqlens":
        lengths = [len(d) for d in docs]
        return {
            "input_ids": torch.cat(docs)[None],
            "cu_seqlens": cu_seqlens(lengths),
            "max_seqlen": max(lengths),
        }
    kwargs = {
        "flash_kwargs": {"return_flash_attn_kwargs": True},
        "flash_kwargs_only": {"return_flash_attn_kwargs": True, "return_position_ids": False},
        "position_ids": {},
    }[convention]
    batch = DataCollatorWithFlattening(**kwargs)(features)
    batch.pop("labels")  # its labels are shifted for causal LM
    return batch


CONVENTIONS = ["cu_seqlens", "flash_kwargs", "flash_kwargs_only", "position_ids"]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_every_head_on_packed_input_equals_per_document_forwards(convention):
    torch.manual_seed(0)
    lengths = [9, 30, 3, 12]  # longest not first; documents shorter and longer than the window
    docs = [torch.randint(4, 97, (n,)) for n in lengths]
    packed = _flattened(docs, convention)
    cfg = dict(local_attention=8, num_labels=3)
    for pooling in ("mean", "cls"):
        model = RexBertForSequenceClassification(tiny_config(classifier_pooling=pooling, **cfg)).eval()
        labels = torch.tensor([0, 2, 1, 1])
        with torch.no_grad():
            out = model(**packed, labels=labels)
            states = [model.model(input_ids=d[None]).last_hidden_state[0] for d in docs]  # (n, H) each
            pooled = torch.stack([h[0] if pooling == "cls" else h.mean(0) for h in states])
            alone = model.classify(pooled)
        torch.testing.assert_close(out.logits, alone, atol=ATOL, rtol=0)  # (D, num_labels)
        torch.testing.assert_close(out.loss, F.cross_entropy(alone, labels), atol=ATOL, rtol=0)
    token_labels = [torch.randint(0, 3, (n,)).masked_fill_(torch.rand(n) < 0.3, -100) for n in lengths]
    token_labels[0][:] = -100  # a document without labels
    targets = torch.cat(token_labels)
    tok = RexBertForTokenClassification(tiny_config(**cfg)).eval()
    mlm = RexBertForMaskedLM(tiny_config(local_attention=8, sparse_prediction=False)).eval()
    with torch.no_grad():
        out = tok(**packed, labels=targets[None])
        alone = torch.cat([tok(input_ids=d[None]).logits[0] for d in docs])
        mlm_out = mlm(**packed).logits[0]
        mlm_alone = torch.cat([mlm(input_ids=d[None]).logits[0] for d in docs])
    torch.testing.assert_close(out.logits[0], alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, F.cross_entropy(alone, targets), atol=ATOL, rtol=0)
    torch.testing.assert_close(mlm_out, mlm_alone, atol=ATOL, rtol=0)


def test_token_classification_loss_is_transformers_token_classification_loss():
    """Not the MLM loss: the same value as transformers' ModernBertForTokenClassification on the same weights,
    ignoring -100 (and padding), averaged over the labelled tokens."""
    from transformers import ModernBertForTokenClassification

    cfg = tiny_config(local_attention=8, num_labels=5)
    ours = RexBertForTokenClassification(cfg).eval()
    ref = ModernBertForTokenClassification(rexbert_config_to_modernbert(cfg)).eval()
    ref.config._attn_implementation = "sdpa"
    ref.load_state_dict(ours.state_dict())
    ids, mask = right_padded([14, 6, 9])
    labels = torch.randint(0, 5, ids.shape).masked_fill(mask == 0, -100)
    labels[0, :5] = -100
    with torch.no_grad():
        got, expected = (
            ours(input_ids=ids, attention_mask=mask, labels=labels),
            ref(input_ids=ids, attention_mask=mask, labels=labels),
        )
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.logits[mask.bool()], expected.logits[mask.bool()], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- torch.compile: one graph, no recompiles
def _compile_batches(count: int) -> list[dict]:
    """Packed MLM batches that differ in every dimension: tokens N, documents D, labels M, max_seqlen."""
    shapes = [[30, 3, 12], [7, 25], [40, 2, 2, 9], [5, 5, 5, 5, 17]][:count]
    return [_packed(lengths, labelled=0.3)[0] for lengths in shapes]


def _count_graphs(backend: str, batches: list[dict]) -> dict:
    import torch._dynamo
    from torch._dynamo.utils import counters

    from .conftest import varlen_on_cpu

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = RexBertForMaskedLM(tiny_config(local_attention=8, num_hidden_layers=2)).train()
    compiled = torch.compile(model, backend=backend, dynamic=True)
    with varlen_on_cpu(), torch._dynamo.config.patch(error_on_recompile=True):  # a recompile raises
        for batch in batches:
            compiled(**batch).loss.backward()
    return dict(counters["stats"])


def test_compiled_varlen_step_is_one_graph_across_batch_shapes():
    """``torch.compile(model, dynamic=True)``: max_seqlen, N, D and M are symbolic from the first trace,
    so batches of other shapes reuse the graph (PyTorch's real varlen op, CPU kernel from conftest)."""
    assert _count_graphs("eager", _compile_batches(3))["unique_graphs"] == 1


@pytest.mark.slow
def test_compiled_forward_and_backward_are_one_graph_with_aot_autograd():
    """The same through AOT autograd (what inductor compiles): the backward traces with a symbolic
    max_seqlen through varlen's registered backward."""
    assert _count_graphs("aot_eager", _compile_batches(4))["unique_graphs"] == 1
