"""Parity with transformers' ModernBERT in both directions (same weights, float32, max |delta| <= 1e-4)."""

from __future__ import annotations

import pytest
import torch
from transformers import ModernBertConfig, ModernBertForMaskedLM

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
from modeling_rexbert.conversion import export_to_modernbert

from .conftest import right_padded, tiny_config

TOL = 1e-4


def _tokenizer():
    from tests.tiny_models import tiny_bpe_tokenizer

    return tiny_bpe_tokenizer()  # 300 ids: models that export it get vocab_size=320


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
        vocab_size=320,
    )
    ours = RexBertForMaskedLM(cfg).eval()
    export_to_modernbert(ours, tmp_path, tokenizer=_tokenizer())
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


def _published(tmp_path, **overrides):
    """A phase-1-like RexBERT (global θ 10k, sparse_prediction on as training sets it) saved with its
    tokenizer: the folder ``export_to_modernbert`` and ``rewrite_as_modernbert`` start from."""
    from training.tokenizer import save_for_model

    tokenizer = _tokenizer()
    cfg = tiny_config(
        vocab_size=320, local_attention=8, global_rope_theta=10_000.0, sparse_prediction=True, **overrides
    )
    model = RexBertForMaskedLM(cfg).eval()
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    save_for_model(tokenizer, folder, model_max_length=64)
    return RexBertForMaskedLM.from_pretrained(folder).eval(), folder


def _assert_portable(folder, global_theta, every=3, window=8):
    """The keys transformers 4.x reads (it ignores v5's rope_parameters / layer_types), a tokenizer class
    both read, no token_type_ids, and dense MaskedLM logits with labels."""
    import json

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["sparse_prediction"] is False
    assert (
        config["global_rope_theta"]
        == global_theta
        == config["rope_parameters"]["full_attention"]["rope_theta"]
    )
    assert config["local_rope_theta"] == 10_000.0
    assert (config["global_attn_every_n_layers"], config["local_attention"]) == (every, window)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["model_input_names"] == ["input_ids", "attention_mask"]
    assert not {"local_files_only", "is_local", "cache_dir"} & set(tokenizer_config)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["blue cap size 7", "wallet"], padding=True, return_tensors="pt")
    assert "token_type_ids" not in batch
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**batch, labels=batch["input_ids"]).logits
    assert logits.shape == (*batch["input_ids"].shape, model.config.vocab_size)


def test_export_to_modernbert_writes_the_models_tokenizer_and_a_portable_config(tmp_path):
    ours, _ = _published(tmp_path)
    out = export_to_modernbert(ours, tmp_path / "plain")  # the tokenizer saved beside the model
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    _assert_portable(out, 10_000.0)


def test_export_to_modernbert_folds_ntk_scaling_into_the_4x_theta_too(tmp_path):
    ours, _ = _published(tmp_path, global_rope_scaling={"rope_type": "ntk", "factor": 2.0})
    out = export_to_modernbert(ours, tmp_path / "plain")
    _assert_portable(out, ours.config.rope_theta_for("full_attention"))
    assert ours.config.rope_theta_for("full_attention") > 10_000.0


def test_export_to_modernbert_without_a_tokenizer_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="pass tokenizer="):
        export_to_modernbert(RexBertForMaskedLM(tiny_config()), tmp_path / "plain")
    assert not list(tmp_path.iterdir())


def test_export_to_modernbert_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="300 tokens but the model has 97 ids"):
        export_to_modernbert(RexBertForMaskedLM(tiny_config()), tmp_path / "plain", tokenizer=_tokenizer())
    assert not list(tmp_path.iterdir())


def test_rewritten_final_folder_is_portable(tmp_path):
    from modeling_rexbert.conversion import rewrite_as_modernbert

    _, folder = _published(tmp_path, global_attn_every_n_layers=2)
    rewrite_as_modernbert(folder)
    _assert_portable(folder, 10_000.0, every=2)
