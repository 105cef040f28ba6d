"""RexBertConfig: presets, validation, ModernBERT dict conversion, RoPE scaling."""

from __future__ import annotations

import pytest
import torch

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM, modernbert_to_rexbert_dict

# Paper Table 2 sizes: ~17M / 68M / 150M / 400M parameters (tied decoder counted once). Tolerance 3%.
EXPECTED_PARAMS = {"micro": 17e6, "mini": 68e6, "base": 150e6, "large": 400e6}


@pytest.mark.parametrize("size", ["micro", "mini", "base"])
def test_preset_parameter_counts(size):
    with torch.device("meta"):  # no memory, no init: counting only
        model = RexBertForMaskedLM(RexBertConfig.for_size(size))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - EXPECTED_PARAMS[size]) / EXPECTED_PARAMS[size] < 0.03, n


def test_large_preset_parameter_count():
    cfg = RexBertConfig.for_size("large")
    h, i, L, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    # embeddings + per layer (Wqkv, attn Wo, Wi, mlp Wo, 2 norms; layer 0 has no attn_norm) + final norm
    # + head dense/norm + decoder bias
    n = v * h + h + L * (3 * h * h + h * h + 2 * i * h + i * h + 2 * h) - h + h + h * h + h + v
    with torch.device("meta"):
        model = RexBertForMaskedLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == n
    assert abs(n - EXPECTED_PARAMS["large"]) / EXPECTED_PARAMS["large"] < 0.03


def test_presets_match_table2_and_modernbert_special_ids():
    cfg = RexBertConfig.for_size("base")
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (
        22,
        768,
        1152,
        12,
    )
    assert (cfg.vocab_size, cfg.cls_token_id, cfg.sep_token_id, cfg.pad_token_id, cfg.mask_token_id) == (
        50368,
        50281,
        50282,
        50283,
        50284,
    )
    assert cfg.head_dim == 64 and cfg.tie_word_embeddings is True and cfg.sparse_prediction is True
    assert RexBertConfig.for_size("micro", max_position_embeddings=8192).max_position_embeddings == 8192


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "hidden_size"),
        ({"local_attention": 127}, "local_attention"),
        ({"local_attention": 0}, "local_attention"),
        ({"pad_token_id": 50368}, "pad_token_id"),
        ({"vocab_size": 100}, "pad_token_id"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
        ({"classifier_pooling": "max"}, "classifier_pooling"),
        ({"global_rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "global_rope_scaling"),
        ({"local_rope_scaling": {"factor": 0.5}}, "local_rope_scaling"),
    ],
)
def test_invalid_values_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"RexBertConfig.{field}"):
        RexBertConfig(**overrides)


def test_unknown_size():
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        RexBertConfig.for_size("huge")


def test_layer_types_and_ntk_scaling():
    cfg = RexBertConfig(
        num_hidden_layers=5,
        global_attn_every_n_layers=2,
        hidden_size=128,
        num_attention_heads=2,
        global_rope_scaling={"rope_type": "ntk", "factor": 4.0},
    )
    assert cfg.layer_types == ["full_attention", "sliding_attention"] * 2 + ["full_attention"]
    d = cfg.head_dim
    assert cfg.rope_theta_for("full_attention") == pytest.approx(160_000.0 * 4.0 ** (d / (d - 2)))
    assert cfg.rope_theta_for("sliding_attention") == 10_000.0  # local layers unscaled


def test_json_round_trip(tmp_path):
    cfg = RexBertConfig.for_size(
        "micro", local_rope_scaling={"rope_type": "ntk", "factor": 2.0}, attn_implementation="eager"
    )
    cfg.save_pretrained(tmp_path)
    back = RexBertConfig.from_pretrained(tmp_path)
    assert back.to_dict() == cfg.to_dict()


def test_modernbert_dicts_both_styles_convert():
    v5 = {
        "model_type": "modernbert",
        "num_hidden_layers": 6,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "intermediate_size": 96,
        "layer_types": ["full_attention", "sliding_attention"] * 3,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 80_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 5_000.0},
        },
        "architectures": ["ModernBertForMaskedLM"],
    }
    old = {
        "model_type": "modernbert",
        "num_hidden_layers": 6,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "intermediate_size": 96,
        "global_attn_every_n_layers": 2,
        "global_rope_theta": 80_000.0,
        "local_rope_theta": 5_000.0,
        "reference_compile": None,
    }
    for d in (v5, old):
        cfg = RexBertConfig.from_dict(d)
        got = (cfg.global_attn_every_n_layers, cfg.global_rope_theta, cfg.local_rope_theta)
        assert got == (2, 80_000.0, 5_000.0)
    assert modernbert_to_rexbert_dict(v5)["architectures"] == ["RexBertForMaskedLM"]
    irregular = dict(v5, layer_types=["full_attention", "full_attention", "sliding_attention"] * 2)
    with pytest.raises(ValueError, match="not a 'global every n layers' pattern"):
        RexBertConfig.from_dict(irregular)


def test_config_of_another_architecture_names_its_model_type(tmp_path):
    from transformers import BertConfig

    bert = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    bert.save_pretrained(tmp_path)
    reads = r"\(RexBertConfig reads model_type 'rexbert' or 'modernbert'\)"
    with pytest.raises(ValueError, match=rf"config model_type='bert' is not a RexBERT config {reads}"):
        RexBertConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type='roberta'"):
        RexBertConfig.from_dict({"model_type": "roberta", "vocab_size": 10})
