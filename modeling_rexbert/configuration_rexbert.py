"""RexBERT configuration: copied into Hub folders as remote code, so it imports only transformers and the
standard library. Field names follow transformers' ModernBERT as of 4.48 (the format of the published
RexBERT / Ettin checkpoints); the ``modeling_rexbert`` package registers the conversion of ModernBERT
configs in :data:`CONFIG_CONVERTERS`, so a Hub copy of this file reads RexBERT configs only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import PretrainedConfig

# Table 2 of the paper (identical to the Ettin encoders); head_dim is 64 for every size.
_PRESET_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
SIZE_PRESETS: dict[str, dict[str, int]] = {
    name: dict(zip(_PRESET_KEYS, values))
    for name, values in {
        "micro": (7, 256, 384, 4),  # ~17M parameters
        "mini": (19, 512, 768, 8),  # ~68M
        "base": (22, 768, 1152, 12),  # ~150M
        "large": (28, 1024, 2624, 16),  # ~400M
    }.items()
}

_SIZE_FIELDS = ("vocab_size", *_PRESET_KEYS, "max_position_embeddings", "global_attn_every_n_layers")
_TOKEN_ID_FIELDS = tuple(f"{name}_token_id" for name in ("pad", "bos", "eos", "cls", "sep", "mask"))
_POSITIVE_FIELDS = ("global_rope_theta", "local_rope_theta", "norm_eps", "initializer_range")
_DROPOUT_FIELDS = ("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout")

_GLOBAL, _LOCAL = "full_attention", "sliding_attention"


class RexBertConfig(PretrainedConfig):
    r"""Configuration of a RexBERT (ModernBERT-architecture) encoder: the fields below, each validated on
    construction and load (:meth:`validate_rexbert`), with ModernBERT's names and defaults except where noted.

    ``attn_implementation`` (transformers' keyword, stored as ``config._attn_implementation``) is the one
    attention switch: ``"varlen"`` (default; PyTorch's FlashAttention varlen kernel where it can run, else
    ``"sdpa"``), ``"sdpa"``, ``"eager"`` (attention weights) or a flash function of transformers'
    ``AttentionInterface`` (``"flash_attention_2"``, ...); see ``attention_rexbert.py``. Configs saved with
    the retired ``attention_backend`` key are read as that key. Example: ``RexBertConfig.for_size("micro")``.
    """

    model_type = "rexbert"

    vocab_size: int = 50368  # ModernBERT's OLMo BPE padded to a multiple of 64
    hidden_size: int = 768  # the residual stream; head_dim = hidden_size / num_attention_heads, even (RoPE)
    intermediate_size: int = 1152  # GeGLU width: the MLP's input projection Wi has 2x this many outputs
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"  # of the GeGLU MLP, any key of transformers.activations.ACT2FN
    # Longest document (RoPE position) trained for: phase 1 trains at 1024, phase 2 extends to 8192 (a config
    # change only: RoPE has no table). Longer documents still run, with a one-time warning.
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02  # std of the init of embeddings and input projections
    initializer_cutoff_factor: float = 2.0  # the init normal is truncated at +-cutoff * std
    norm_eps: float = 1e-5  # LayerNorm
    norm_bias: bool = False
    # Special token ids of ModernBERT's tokenizer; each must be < vocab_size (or None).
    pad_token_id: int | None = 50283
    bos_token_id: int | None = 50281
    eos_token_id: int | None = 50282
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    mask_token_id: int | None = 50284
    global_rope_theta: float = 160_000.0  # RoPE base of the global (full-attention) layers
    local_rope_theta: float = 10_000.0  # and of the local (sliding-window) layers
    # NTK-aware RoPE scaling per layer type, e.g. {"rope_type": "ntk", "factor": 4.0}: the base is multiplied
    # by factor ** (head_dim / (head_dim - 2)), so the lowest frequency stretches by factor, the highest not.
    global_rope_scaling: dict | None = None
    local_rope_scaling: dict | None = None
    attention_bias: bool = False  # in Wqkv and the attention's Wo
    attention_dropout: float = 0.0  # on attention probabilities and on the attention output
    local_attention: int = 128  # total window of local layers (even): i attends to j iff |i - j| <= 64
    global_attn_every_n_layers: int = 3  # layer i is global iff i % n == 0 (layer 0 always is)
    embedding_dropout: float = 0.0  # after the embedding LayerNorm
    mlp_bias: bool = False
    mlp_dropout: float = 0.0  # after the gated activation
    decoder_bias: bool = True  # of the MLM decoder (its weight is tied to the token embeddings)
    # Sequence-classification pooling, "cls" (first token) or "mean" (masked mean). Mean, unlike ModernBERT's
    # "cls", because local layers let [CLS] see only part of a long input.
    classifier_pooling: str = "mean"
    classifier_dropout: float = 0.0  # before the classifier
    classifier_bias: bool = False  # of the prediction head's dense layer (head.dense)
    classifier_activation: str = "gelu"  # of the prediction head
    # Deterministic attention backward (slower): flash-attn's switch. The varlen kernel has none and refuses
    # to train unless torch.use_deterministic_algorithms(True) is on.
    deterministic_flash_attn: bool = False
    # With labels, run the MLM head and decoder on labelled positions only (logits (N_labelled, vocab_size)):
    # halves a micro training step. ModernBERT's default is False.
    sparse_prediction: bool = True
    sparse_pred_ignore_index: int = -100  # label value of positions without a target
    # Declared explicitly: transformers 5 unties silently when a custom config lacks the field.
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        # Retired keys of saved configs: attention_backend was a second attention switch ("auto" = default).
        legacy = kwargs.pop("attention_backend", "auto")
        if kwargs.get("attn_implementation") is None and legacy != "auto":
            kwargs["attn_implementation"] = legacy
        kwargs.pop("validate_inputs", None)  # host checks now live in modeling_rexbert.validation
        super().__post_init__(**kwargs)
        self.validate_rexbert()

    def validate_rexbert(self) -> None:
        """Raise ``ValueError`` naming the field and value for the first inconsistent setting."""
        heads, vocab = self.num_attention_heads, self.vocab_size
        rules = [  # (fields, valid(value), why), in order: the sizes are checked before they are used
            (_SIZE_FIELDS, _positive_int, "must be a positive integer"),
            (("hidden_size",), lambda v: v % heads == 0, f"must be divisible by num_attention_heads={heads}"),
            (("hidden_size",), lambda v: v // heads % 2 == 0, "head_dim must be even for rotary embeddings"),
            (("local_attention",), lambda v: _positive_int(v) and v % 2 == 0,
             "must be a positive even integer (the total window)"),
            (_TOKEN_ID_FIELDS, lambda v: v is None or 0 <= v < vocab, f"must be in [0, vocab_size={vocab})"),
            (_DROPOUT_FIELDS, lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
            (_POSITIVE_FIELDS, lambda v: v > 0, "must be > 0"),
            (("classifier_pooling",), lambda v: v in ("cls", "mean"), "must be 'cls' or 'mean'"),
            (("global_rope_scaling", "local_rope_scaling"), _is_ntk_scaling,
             "must be None or a dict like {'rope_type': 'ntk', 'factor': 4.0} with factor >= 1"),
        ]  # fmt: skip
        for fields, valid, why in rules:
            for field in fields:
                if not valid(value := getattr(self, field)):
                    raise ValueError(f"RexBertConfig.{field}={value!r}: {why}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def sliding_window(self) -> int:
        """Half window: local layers attend to |i - j| <= sliding_window."""
        return self.local_attention // 2

    @property
    def layer_types(self) -> list[str]:
        """Per-layer attention type in ModernBERT-5 naming (`full_attention` / `sliding_attention`)."""
        n = self.global_attn_every_n_layers
        return [_GLOBAL if i % n == 0 else _LOCAL for i in range(self.num_hidden_layers)]

    def rope_theta_for(self, layer_type: str) -> float:
        """Effective RoPE base of a layer type after NTK-aware scaling."""
        is_global = layer_type == _GLOBAL
        theta = self.global_rope_theta if is_global else self.local_rope_theta
        scaling = self.global_rope_scaling if is_global else self.local_rope_scaling
        d = self.head_dim
        return theta * float(scaling["factor"]) ** (d / (d - 2)) if scaling else theta

    @classmethod
    def for_size(cls, name: str, **overrides: Any) -> RexBertConfig:
        """Config of one of the paper's sizes (Table 2): ``micro``, ``mini``, ``base`` or ``large``."""
        if name not in SIZE_PRESETS:
            raise ValueError(f"RexBertConfig: unknown size {name!r}; choose from {sorted(SIZE_PRESETS)}")
        return cls(**{**SIZE_PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        return super().from_dict(as_rexbert_dict(config_dict), **kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path: Any, **kwargs: Any):
        """Convert here, before transformers warns about a model_type mismatch."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return as_rexbert_dict(config_dict, pretrained_model_name_or_path), kwargs


# model_type -> function turning that architecture's config dict into RexBERT fields. The package registers
# ModernBERT's (modeling_rexbert/conversion.py); a Hub copy of this file reads RexBERT configs only.
CONFIG_CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def as_rexbert_dict(config_dict: dict[str, Any], source: Any = None) -> dict[str, Any]:
    """``config_dict`` in RexBERT fields; another architecture's (BERT, RoBERTa...) is named as such before
    any field check fails, unless a converter reads it."""
    model_type, readable = config_dict.get("model_type"), (RexBertConfig.model_type, *CONFIG_CONVERTERS)
    if model_type is not None and model_type not in readable:
        raise ValueError(
            f"{f'{source}: ' if source is not None else ''}config model_type={model_type!r} is not a RexBERT "
            f"config (RexBertConfig reads model_type {' or '.join(map(repr, readable))})"
        )
    return CONFIG_CONVERTERS[model_type](config_dict) if model_type in CONFIG_CONVERTERS else config_dict


def _positive_int(value: Any) -> bool:
    return type(value) is int and value > 0  # bool is an int subclass: True is not a size


def _is_ntk_scaling(value: Any) -> bool:
    """None, or NTK-aware scaling by a factor >= 1 (see ``global_rope_scaling``)."""
    if not isinstance(value, dict):
        return value is None
    factor = value.get("factor")
    return value.get("rope_type", "ntk") == "ntk" and isinstance(factor, (int, float)) and factor >= 1.0
