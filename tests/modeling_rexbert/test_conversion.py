"""Parity with transformers' ModernBERT in both directions (same weights, float32, max |delta| <= 1e-4)."""

from __future__ import annotations

import pytest
import torch
from transformers import ModernBertConfig, ModernBertForMaskedLM

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
from modeling_rexbert.conversion import export_to_modernbert

from .conftest import right_padded, tiny_config

TOL = 1e-4

# (local_attention, global_attn_every_n_layers, lengths): windows far shorter than the sequences so the
# dense-band and blocked local paths are both exercised, plus one window wider than every sequence.
CASES = [
    (16, 3, [70, 9, 33, 1, 64, 41]),
    (8, 2, [50, 50, 13, 27]),
    (32, 3, [200, 120, 17]),
    (128, 3, [60, 25, 3]),
]


def _modernbert(window: int, every: int, layers: int = 4, legacy: bool = False) -> ModernBertForMaskedLM:
    kw = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=2,
        local_attention=window,
        global_attn_every_n_layers=every,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
    )
    model = ModernBertForMaskedLM(ModernBertConfig(**kw, attn_implementation="sdpa")).eval()
    # Non-trivial norms / bias so a mis-mapped weight cannot hide behind init constants.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("window,every,lengths", CASES)
def test_modernbert_checkpoint_loads_into_rexbert_with_identical_logits(tmp_path, window, every, lengths):
    ref = _modernbert(window, every)
    ref.save_pretrained(tmp_path)
    ours = RexBertForMaskedLM.from_pretrained(tmp_path).eval()
    assert isinstance(ours.config, RexBertConfig)
    assert ours.config.local_attention == window and ours.config.global_attn_every_n_layers == every
    ids, mask = right_padded(lengths)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits
        for backend in ("sdpa", "eager"):
            ours.config._attn_implementation = backend
            got = ours(input_ids=ids, attention_mask=mask).logits
            delta = (got - expected)[mask.bool()].abs().max().item()
            assert delta <= TOL, (backend, delta)


def test_legacy_448_modernbert_config_converts(tmp_path):
    """Checkpoints saved by transformers 4.48 carry global_rope_theta / global_attn_every_n_layers."""
    import json

    ref = _modernbert(16, 2)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("layer_types")
    cfg.pop("rope_parameters")
    cfg.update(
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
        global_attn_every_n_layers=2,
        reference_compile=None,
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ours = RexBertForMaskedLM.from_pretrained(tmp_path).eval()
    assert ours.config.global_attn_every_n_layers == 2 and ours.config.global_rope_theta == 160_000.0
    ids, mask = right_padded([40, 12])
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask).logits
        delta = got - ref(input_ids=ids, attention_mask=mask).logits
    assert delta[mask.bool()].abs().max().item() <= TOL


@pytest.mark.parametrize("window,every", [(16, 3), (8, 2)])
def test_export_to_modernbert_matches(tmp_path, window, every):
    cfg = tiny_config(
        local_attention=window,
        global_attn_every_n_layers=every,
        num_hidden_layers=5,
        global_rope_scaling={"rope_type": "ntk", "factor": 2.0},
    )
    ours = RexBertForMaskedLM(cfg).eval()
    export_to_modernbert(ours, tmp_path)
    ref = ModernBertForMaskedLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert ref.decoder.weight.data_ptr() == ref.model.embeddings.tok_embeddings.weight.data_ptr()
    ids, mask = right_padded([90, 31, 5])
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask).logits
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert (got - expected)[mask.bool()].abs().max().item() <= TOL


def test_rewrite_as_modernbert_makes_a_saved_folder_plain_transformers(tmp_path):
    from transformers import AutoModelForMaskedLM

    from modeling_rexbert.conversion import rewrite_as_modernbert

    cfg = tiny_config(local_attention=8, global_rope_theta=160_000.0)
    ours = RexBertForMaskedLM(cfg).eval()
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_rexbert.py").exists()
    rewrite_as_modernbert(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    plain = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()  # no trust_remote_code
    back = RexBertForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(plain) is ModernBertForMaskedLM and back.config.global_rope_theta == 160_000.0
    ids, mask = right_padded([30, 12])
    with torch.no_grad():
        expected = ours(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        for model in (plain, back):
            got = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
            torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)
