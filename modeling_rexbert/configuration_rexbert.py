"""RexBERT configuration.

Self-contained (imports only transformers and the standard library) because this file is copied
verbatim into Hub repositories next to ``modeling_rexbert.py`` and loaded as remote code.

The field names follow transformers' ModernBERT as released with transformers 4.48 (the format of the
published RexBERT / Ettin checkpoints), so a ModernBERT ``config.json`` maps onto this class 1:1;
:meth:`RexBertConfig.from_dict` also accepts ``model_type: modernbert`` dictionaries in both the 4.48
style (``global_rope_theta`` / ``global_attn_every_n_layers``) and the transformers-5 style
(``layer_types`` / ``rope_parameters``).
"""

from __future__ import annotations

import copy
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

_ROPE_SCALING_TYPES = ("ntk",)

# ModernBERT-5 layer type names <-> the integer pattern used by 4.48 checkpoints and by this config.
_GLOBAL, _LOCAL = "full_attention", "sliding_attention"


class RexBertConfig(PretrainedConfig):
    r"""Configuration of a RexBERT (ModernBERT-architecture) encoder.

    Args:
        vocab_size (`int`, defaults to 50368):
            Number of token ids (ModernBERT's OLMo BPE padded to a multiple of 64).
        hidden_size (`int`, defaults to 768):
            Width of the residual stream. Must be divisible by `num_attention_heads`.
        intermediate_size (`int`, defaults to 1152):
            Width of the GeGLU MLP (its input projection `Wi` has `2 * intermediate_size` outputs).
        num_hidden_layers (`int`, defaults to 22):
            Number of encoder layers.
        num_attention_heads (`int`, defaults to 12):
            Attention heads per layer (head_dim = hidden_size / num_attention_heads).
        hidden_activation (`str`, defaults to `"gelu"`):
            Activation of the GeGLU MLP (any key of `transformers.activations.ACT2FN`).
        max_position_embeddings (`int`, defaults to 8192):
            Longest document (RoPE position) the model was trained for; longer documents still run
            (RoPE has no table) with a one-time warning, as transformers' ModernBERT.
            Phase 1 trains at 1024, phase 2 extends to 8192 (a config change only: RoPE has no table).
        initializer_range (`float`, defaults to 0.02):
            Std of the truncated-normal init of embeddings and input projections.
        initializer_cutoff_factor (`float`, defaults to 2.0):
            Truncation of the init normal at +-cutoff * std (ModernBERT: 2 sigma).
        norm_eps (`float`, defaults to 1e-5):
            LayerNorm epsilon.
        norm_bias (`bool`, defaults to `False`):
            Whether LayerNorms have a bias (ModernBERT: no).
        pad_token_id / bos_token_id / eos_token_id / cls_token_id / sep_token_id / mask_token_id (`int`):
            Special token ids (ModernBERT tokenizer: cls 50281, sep 50282, pad 50283, mask 50284).
            Each must be `< vocab_size` (or `None`).
        global_rope_theta (`float`, defaults to 160000.0):
            RoPE base of the global (full-attention) layers.
        local_rope_theta (`float`, defaults to 10000.0):
            RoPE base of the local (sliding-window) layers.
        global_rope_scaling / local_rope_scaling (`dict`, *optional*):
            NTK-aware RoPE scaling per layer type, e.g. `{"rope_type": "ntk", "factor": 4.0}`: the base is
            multiplied by `factor ** (head_dim / (head_dim - 2))` so that the lowest frequency stretches by
            `factor` while the highest is unchanged. `None` = no scaling.
        attention_bias (`bool`, defaults to `False`):
            Bias in `Wqkv` / attention `Wo`.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on attention probabilities and on the attention output.
        local_attention (`int`, defaults to 128):
            Total sliding window of local layers: token i attends to j iff |i - j| <= local_attention / 2.
            Must be positive and even.
        global_attn_every_n_layers (`int`, defaults to 3):
            Layer i is global iff `i % global_attn_every_n_layers == 0` (so layer 0 is always global).
        embedding_dropout (`float`, defaults to 0.0):
            Dropout after the embedding LayerNorm.
        mlp_bias (`bool`, defaults to `False`):
            Bias in the MLP projections.
        mlp_dropout (`float`, defaults to 0.0):
            Dropout inside the MLP (after the gated activation).
        decoder_bias (`bool`, defaults to `True`):
            Bias of the (tied) MLM decoder.
        classifier_pooling (`str`, defaults to `"mean"`):
            `"cls"` (first token) or `"mean"` (masked mean) pooling of the sequence-classification head.
            Mean is the default because local layers let [CLS] see only part of a long input.
        classifier_dropout (`float`, defaults to 0.0):
            Dropout before the classifier.
        classifier_bias (`bool`, defaults to `False`):
            Bias of the prediction-head dense layer (`head.dense`).
        classifier_activation (`str`, defaults to `"gelu"`):
            Activation of the prediction head.
        deterministic_flash_attn (`bool`, defaults to `False`):
            Deterministic attention backward (slower): flash-attn's switch; the varlen kernel has none and
            refuses to train unless `torch.use_deterministic_algorithms(True)` is on.
        sparse_prediction (`bool`, defaults to `True`):
            With labels, run the MLM head and decoder only on labelled positions (logits become
            `(N_labelled, vocab_size)`); halves a micro training step.
        sparse_pred_ignore_index (`int`, defaults to -100):
            Label value marking positions without a target.
        tie_word_embeddings (`bool`, defaults to `True`):
            Tie the MLM decoder weight to the token embeddings. Declared explicitly: transformers 5
            unties silently when a custom config lacks the field.
        attn_implementation (`str`, defaults to `"varlen"`):
            The one attention switch (transformers'; stored as `config._attn_implementation`, see
            `attention_rexbert.py`): `"varlen"` (PyTorch's FlashAttention varlen kernel where it can run,
            else `"sdpa"`), `"sdpa"`, `"eager"` (attention weights) or a flash function of transformers'
            `AttentionInterface` (`"flash_attention_2"`, ...). Configs saved with the retired
            `attention_backend` key are read as that key.

    Example:
        >>> cfg = RexBertConfig.for_size("micro", max_position_embeddings=1024)
        >>> cfg.layer_types[:3]
        ['full_attention', 'sliding_attention', 'sliding_attention']
    """

    model_type = "rexbert"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int | None = 50283
    bos_token_id: int | None = 50281
    eos_token_id: int | None = 50282
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    mask_token_id: int | None = 50284
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    global_rope_scaling: dict | None = None
    local_rope_scaling: dict | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    local_attention: int = 128
    global_attn_every_n_layers: int = 3
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "mean"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    deterministic_flash_attn: bool = False
    sparse_prediction: bool = True
    sparse_pred_ignore_index: int = -100
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        # Retired keys of saved configs: attention_backend was a second attention switch ("auto" = default).
        legacy = kwargs.pop("attention_backend", "auto")
        if kwargs.get("attn_implementation") is None and legacy != "auto":
            kwargs["attn_implementation"] = legacy
        kwargs.pop("validate_inputs", None)  # host checks now live in modeling_rexbert.validation
        super().__post_init__(**kwargs)
        self.validate_rexbert()

    # ------------------------------------------------------------------ validation
    def validate_rexbert(self) -> None:
        """Raise ``ValueError`` naming the field and value for every inconsistent setting."""

        def bad(field: str, value: Any, why: str) -> ValueError:
            return ValueError(f"RexBertConfig.{field}={value!r}: {why}")

        for field in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "global_attn_every_n_layers",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(field, value, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            raise bad(
                "hidden_size",
                self.hidden_size,
                f"must be divisible by num_attention_heads={self.num_attention_heads}",
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise bad("hidden_size", self.hidden_size, "head_dim must be even for rotary embeddings")
        if not isinstance(self.local_attention, int) or self.local_attention <= 0 or self.local_attention % 2:
            raise bad(
                "local_attention", self.local_attention, "must be a positive even integer (the total window)"
            )
        for field in (
            "pad_token_id",
            "bos_token_id",
            "eos_token_id",
            "cls_token_id",
            "sep_token_id",
            "mask_token_id",
        ):
            value = getattr(self, field, None)
            if value is not None and not 0 <= value < self.vocab_size:
                raise bad(field, value, f"must be in [0, vocab_size={self.vocab_size})")
        for field in ("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise bad(field, value, "must be in [0, 1)")
        for field in ("global_rope_theta", "local_rope_theta", "norm_eps", "initializer_range"):
            if getattr(self, field) <= 0:
                raise bad(field, getattr(self, field), "must be > 0")
        if self.classifier_pooling not in ("cls", "mean"):
            raise bad("classifier_pooling", self.classifier_pooling, "must be 'cls' or 'mean'")
        for field in ("global_rope_scaling", "local_rope_scaling"):
            _check_rope_scaling(field, getattr(self, field))

    # ------------------------------------------------------------------ derived views
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
        if scaling:
            d = self.head_dim
            theta = theta * float(scaling["factor"]) ** (d / (d - 2))
        return theta

    # ------------------------------------------------------------------ presets
    @classmethod
    def for_size(cls, name: str, **overrides: Any) -> RexBertConfig:
        """Config of one of the paper's sizes (Table 2): ``micro``, ``mini``, ``base`` or ``large``.

        Example:
            >>> RexBertConfig.for_size("mini", vocab_size=30522, pad_token_id=0).num_hidden_layers
            19
        """
        if name not in SIZE_PRESETS:
            raise ValueError(
                f"RexBertConfig.for_size: unknown size {name!r}; choose from {sorted(SIZE_PRESETS)}"
            )
        return cls(**{**SIZE_PRESETS[name], **overrides})

    # ------------------------------------------------------------------ ModernBERT interop
    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """Also accepts a ModernBERT ``config.json`` dict (see :func:`modernbert_to_rexbert_dict`)."""
        _check_model_type(config_dict)
        if config_dict.get("model_type") == "modernbert":
            config_dict = modernbert_to_rexbert_dict(config_dict)
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path: Any, **kwargs: Any):
        """Convert ModernBERT folders here, before transformers warns about a model_type mismatch."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        _check_model_type(config_dict, pretrained_model_name_or_path)
        if config_dict.get("model_type") == "modernbert":
            config_dict = modernbert_to_rexbert_dict(config_dict)
        return config_dict, kwargs

    def to_modernbert_dict(self) -> dict[str, Any]:
        """ModernBERT (transformers-5) ``config.json`` dictionary with identical semantics.

        NTK scaling is folded into the exported ``rope_theta`` (static NTK-aware scaling is exactly a
        larger base), so the exported model computes the same function.
        """
        d = self.to_dict()
        for key in (
            "global_rope_theta",
            "local_rope_theta",
            "global_rope_scaling",
            "local_rope_scaling",
            "global_attn_every_n_layers",
            "auto_map",
            "architectures",
            "mask_token_id",
        ):
            d.pop(key, None)
        d["model_type"] = "modernbert"
        d["architectures"] = ["ModernBertForMaskedLM"]
        d["layer_types"] = self.layer_types
        d["rope_parameters"] = {
            t: {"rope_type": "default", "rope_theta": self.rope_theta_for(t)} for t in (_GLOBAL, _LOCAL)
        }
        return d


def _check_model_type(config_dict: dict[str, Any], source: Any = None) -> None:
    """A config of another architecture (BERT, RoBERTa...) is named as such, before any field check fails."""
    model_type = config_dict.get("model_type")
    if model_type not in (None, RexBertConfig.model_type, "modernbert"):
        where = f"{source}: " if source is not None else ""
        raise ValueError(
            f"{where}config model_type={model_type!r} is not a RexBERT or ModernBERT config "
            "(RexBertConfig reads model_type 'rexbert' or 'modernbert')"
        )


def _check_rope_scaling(field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(
            f"RexBertConfig.{field}={value!r}: must be None or a dict like "
            "{'rope_type': 'ntk', 'factor': 4.0}"
        )
    rope_type = value.get("rope_type", "ntk")
    if rope_type not in _ROPE_SCALING_TYPES:
        raise ValueError(f"RexBertConfig.{field}={value!r}: rope_type must be one of {_ROPE_SCALING_TYPES}")
    factor = value.get("factor")
    if not isinstance(factor, (int, float)) or factor < 1.0:
        raise ValueError(f"RexBertConfig.{field}={value!r}: 'factor' must be a number >= 1")


def _layer_types_to_every_n(layer_types: list[str]) -> int:
    """Recover the integer global-every-n pattern from an explicit ModernBERT-5 ``layer_types`` list."""
    for n in range(1, len(layer_types) + 1):
        if [(_GLOBAL if i % n == 0 else _LOCAL) for i in range(len(layer_types))] == list(layer_types):
            return n
    raise ValueError(
        f"ModernBERT layer_types={layer_types!r} is not a 'global every n layers' pattern; "
        "RexBERT cannot represent it"
    )


def modernbert_to_rexbert_dict(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Convert a ModernBERT ``config.json`` dict (4.48 or transformers-5 style) to RexBERT fields."""
    d = copy.deepcopy(config_dict)
    d["model_type"] = RexBertConfig.model_type
    layer_types = d.pop("layer_types", None)
    if layer_types is not None:
        d["global_attn_every_n_layers"] = _layer_types_to_every_n(layer_types)
    rope = d.pop("rope_parameters", None)
    if rope:
        for layer_type, prefix in ((_GLOBAL, "global"), (_LOCAL, "local")):
            params = rope.get(layer_type) or {}
            rope_type = params.get("rope_type", "default")
            if rope_type != "default":
                raise ValueError(
                    f"ModernBERT rope_parameters[{layer_type!r}] rope_type={rope_type!r} is not "
                    "supported by RexBERT (only 'default'; use {prefix}_rope_scaling for NTK)"
                )
            if "rope_theta" in params:
                d[f"{prefix}_rope_theta"] = params["rope_theta"]
    if d.pop("rope_scaling", None):
        raise ValueError(
            "ModernBERT config with rope_scaling is not supported; "
            "use global_rope_scaling / local_rope_scaling"
        )
    for key in ("reference_compile", "repad_logits_with_grad", "auto_map", "_attn_implementation_autoset"):
        d.pop(key, None)
    d.setdefault("mask_token_id", 50284 if d.get("vocab_size", 50368) > 50284 else None)
    # ModernBERT's historical default is CLS pooling; keep a converted checkpoint's behaviour unchanged.
    d.setdefault("classifier_pooling", "cls")
    d.setdefault("sparse_prediction", False)
    archs = d.get("architectures") or []
    d["architectures"] = [a.replace("ModernBert", "RexBert") for a in archs]
    return d
