"""Conversion between RexBERT and transformers' ModernBERT checkpoint folders.

``import modeling_rexbert`` registers :func:`modernbert_to_rexbert_dict` with ``RexBertConfig``, so
``RexBertForMaskedLM.from_pretrained(path)`` converts a ``model_type: modernbert`` config on the fly
(state-dict names are identical). The conversion lives here, not in the configuration file copied into Hub
folders, because only this package loads ModernBERT folders as RexBERT: a Hub folder carries its own
RexBERT config. This module also goes the other direction, and writes what we publish so that it loads the
same way in transformers 5 *and* 4.48-4.57 (the 4.x line is still what optimum-onnx and many production
stacks pin):

* ``config.json`` carries v5's ``layer_types`` / ``rope_parameters`` *and* the 4.x keys
  ``global_rope_theta`` / ``local_rope_theta`` / ``global_attn_every_n_layers`` (4.x ignores the v5 keys
  and would otherwise fall back to its defaults, e.g. θ 160k for a phase-1 model trained at θ 10k; v5 reads
  both without a warning), and ``sparse_prediction: false`` (transformers' default: with labels, the
  MaskedLM logits keep their ``(batch, sequence, vocab)`` shape; training turns it on in memory).
* ``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` (v5 writes ``TokenizersBackend``, a class
  4.x does not have; v5 reads both names into the same class) and ``model_input_names`` without
  ``token_type_ids``, which ModernBERT does not take.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .configuration_rexbert import CONFIG_CONVERTERS, RexBertConfig
from .modeling_rexbert import RexBertPreTrainedModel

# ModernBERT-5 layer type names <-> the integer "global every n layers" pattern of 4.48 and RexBERT configs.
_GLOBAL, _LOCAL = "full_attention", "sliding_attention"

# Loading options transformers records in a tokenizer's ``init_kwargs`` and writes back on save: not
# properties of the tokenizer, and ``local_files_only: true`` in a published folder is wrong for everyone
# who downloads it.
_TOKENIZER_LOAD_OPTIONS = ("is_local", "local_files_only", "cache_dir", "token", "revision", "_commit_hash")
# transformers-5's generic class for a tokenizer.json-backed tokenizer -> the name 4.x and 5.x both read.
_PORTABLE_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


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
                    f"supported by RexBERT (only 'default'; use {prefix}_rope_scaling for NTK)"
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


def register() -> None:
    """Let ``RexBertConfig`` read ModernBERT configs (Hub copies of the config file read RexBERT's only)."""
    CONFIG_CONVERTERS["modernbert"] = modernbert_to_rexbert_dict


def rexbert_config_to_modernbert(config: RexBertConfig):
    """A ``transformers.ModernBertConfig`` (transformers-5 fields) computing the same function as ``config``.

    NTK scaling is folded into the exported ``rope_theta`` (static NTK-aware scaling is exactly a larger
    base), so the exported model computes the same function.
    """
    from transformers import ModernBertConfig

    d = config.to_dict()
    for key in (
        "global_rope_theta",
        "local_rope_theta",
        "global_rope_scaling",
        "local_rope_scaling",
        "global_attn_every_n_layers",
        "auto_map",
        "architectures",
        "mask_token_id",
        "model_type",
        "transformers_version",
    ):
        d.pop(key, None)
    d["architectures"] = ["ModernBertForMaskedLM"]
    d["layer_types"] = config.layer_types
    d["rope_parameters"] = {
        t: {"rope_type": "default", "rope_theta": config.rope_theta_for(t)} for t in (_GLOBAL, _LOCAL)
    }
    return ModernBertConfig(**d)


def modernbert_config_dict(config: RexBertConfig, architecture: str = "ModernBertForMaskedLM") -> dict:
    """The ``config.json`` of a published (plain ModernBERT) folder: read identically by transformers 5
    and 4.48-4.57, with ``sparse_prediction`` off (see the module docstring)."""
    d = rexbert_config_to_modernbert(config).to_dict()
    d["architectures"] = [architecture]
    d["sparse_prediction"] = False
    d["global_rope_theta"] = config.rope_theta_for("full_attention")  # NTK scaling folded in, as in v5's
    d["local_rope_theta"] = config.rope_theta_for("sliding_attention")
    d["global_attn_every_n_layers"] = config.global_attn_every_n_layers
    d["local_attention"] = config.local_attention
    return d


def _write_json(path: Path, document: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)


def save_portable_tokenizer(
    tokenizer, directory: str | os.PathLike, model_max_length: int | None = None
) -> None:
    """``tokenizer.save_pretrained(directory)`` in a form transformers 4.x and 5.x both load (see the module
    docstring), without load-time options; ``model_max_length`` (the model's context) when given."""
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(str(directory))
    config_path = Path(directory) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in _TOKENIZER_LOAD_OPTIONS:
        config.pop(key, None)
    tokenizer_class = config.get("tokenizer_class")
    config["tokenizer_class"] = _PORTABLE_TOKENIZER_CLASSES.get(tokenizer_class, tokenizer_class)
    config["model_input_names"] = [name for name in tokenizer.model_input_names if name != "token_type_ids"]
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    _write_json(config_path, config)


def _resolve_tokenizer(model: RexBertPreTrainedModel, tokenizer):
    """The tokenizer object to export: ``tokenizer`` itself, loaded from it when a path / Hub id, else the
    one saved beside the model (``model.name_or_path``)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    source = tokenizer if tokenizer is not None else getattr(model, "name_or_path", "")
    if not source:
        raise ValueError(
            "export_to_modernbert: the model was not loaded from a folder or Hub id, so it has no tokenizer "
            "to export: pass tokenizer= (a tokenizer, or a folder / Hub id holding one)"
        )
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"export_to_modernbert: cannot load a tokenizer from {str(source)!r} "
            f"({' '.join(str(error).split())}): pass tokenizer="
        ) from None


def _check_tokenizer_fits(model: RexBertPreTrainedModel, tokenizer) -> None:
    """A tokenizer with ids past the embedding table fails only at the first such token (IndexError)."""
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"export_to_modernbert: the tokenizer has {len(tokenizer)} tokens but the model has "
            f"{model.config.vocab_size} ids (vocab_size): it is not this model's tokenizer"
        )


def to_modernbert_model(model: RexBertPreTrainedModel):
    """The transformers ModernBERT model with ``model``'s weights and function (MaskedLM ->
    ``ModernBertForMaskedLM``, sequence / token classification -> the matching class, bare encoder ->
    ``ModernBertModel``), with ``sparse_prediction`` off."""
    import transformers

    name = type(model).__name__.replace("RexBert", "ModernBert")
    config = rexbert_config_to_modernbert(model.config)
    config.architectures = [name]
    config.sparse_prediction = False
    target = getattr(transformers, name)(config)
    missing, unexpected = target.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if k != "decoder.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"{name}: state-dict mismatch, missing={missing}, unexpected={unexpected}")
    return target.to(model.dtype)


def export_to_modernbert(model: RexBertPreTrainedModel, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """Write ``model`` as a plain ModernBERT folder: config.json + model.safetensors + tokenizer.

    ``tokenizer`` is a tokenizer, or a folder / Hub id to load one from; by default the one saved with the
    model (``model.name_or_path``), and none found is an error: a folder without a tokenizer cannot be used
    by ``pipeline("fill-mask", out_dir)``. The head class follows the model (:func:`to_modernbert_model`).
    The folder loads the same way in transformers 5 and 4.48-4.57 (see the module docstring). It is written
    to a temporary sibling and moved into place, so a failure never leaves
    a half-written export.
    """
    tokenizer = _resolve_tokenizer(model, tokenizer)
    _check_tokenizer_fits(model, tokenizer)
    target = to_modernbert_model(model)
    name = type(target).__name__
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        target.save_pretrained(tmp, safe_serialization=True)
        _write_json(tmp / "config.json", modernbert_config_dict(model.config, name))
        save_portable_tokenizer(tokenizer, tmp, model_max_length=model.config.max_position_embeddings)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def rewrite_as_modernbert(folder: str | os.PathLike) -> Path:
    """Turn a saved ``RexBertForMaskedLM`` folder into a plain ModernBERT one, in place: ``config.json``
    becomes ``ModernBertForMaskedLM``'s (:func:`modernbert_config_dict`; the state-dict names are the same,
    so the weights stay as they are) and the remote-code files go. transformers then loads it without code
    or prompt (``AutoTokenizer`` reads ``config.json`` first and would ask to run RexBERT's config code), and
    RexBERT's classes load it too (the config converts back)."""
    folder = Path(folder)
    config = RexBertConfig.from_pretrained(folder)
    if config.architectures not in (None, [], ["RexBertForMaskedLM"]):
        raise ValueError(f"{folder}: only masked-LM folders are rewritten, not {config.architectures}")
    _write_json(folder / "config.json", modernbert_config_dict(config))
    for code in folder.glob("*.py"):
        code.unlink()
    return folder


__all__ = [
    "export_to_modernbert",
    "modernbert_config_dict",
    "modernbert_to_rexbert_dict",
    "register",
    "rewrite_as_modernbert",
    "rexbert_config_to_modernbert",
    "save_portable_tokenizer",
    "to_modernbert_model",
]
