"""Conversion between RexBERT and transformers' ModernBERT checkpoint folders.

Loading a ModernBERT folder needs nothing from here: ``RexBertForMaskedLM.from_pretrained(path)``
converts a ``model_type: modernbert`` config on the fly (state-dict names are identical). This module
adds the other direction.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .configuration_rexbert import RexBertConfig, modernbert_to_rexbert_dict
from .modeling_rexbert import RexBertPreTrainedModel


def rexbert_config_to_modernbert(config: RexBertConfig):
    """A ``transformers.ModernBertConfig`` computing the same function as ``config``."""
    from transformers import ModernBertConfig

    d = config.to_modernbert_dict()
    for key in ("model_type", "transformers_version"):
        d.pop(key, None)
    return ModernBertConfig(**d)


def export_to_modernbert(model: RexBertPreTrainedModel, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """Write ``model`` as a plain ModernBERT folder (config.json + model.safetensors [+ tokenizer]).

    The head class follows the model: MaskedLM -> ``ModernBertForMaskedLM``, sequence / token
    classification -> the matching ModernBERT class, bare encoder -> ``ModernBertModel``. The folder is
    written to a temporary sibling and moved into place, so a failure never leaves a half-written export.
    """
    import transformers

    name = type(model).__name__.replace("RexBert", "ModernBert")
    target_cls = getattr(transformers, name)
    mb_config = rexbert_config_to_modernbert(model.config)
    mb_config.architectures = [name]
    target = target_cls(mb_config)
    missing, unexpected = target.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if k != "decoder.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(
            f"export_to_modernbert: state-dict mismatch, missing={missing}, unexpected={unexpected}"
        )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        target.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def rewrite_as_modernbert(folder: str | os.PathLike) -> Path:
    """Turn a saved ``RexBertForMaskedLM`` folder into a plain ModernBERT one, in place: ``config.json``
    becomes ``ModernBertForMaskedLM``'s (the state-dict names are the same, so the weights stay as they
    are) and the remote-code files go. transformers then loads it without code or prompt (``AutoTokenizer``
    reads ``config.json`` first and would ask to run RexBERT's config code), and RexBERT's classes load it
    too (the config converts back)."""
    import json

    folder = Path(folder)
    config = RexBertConfig.from_pretrained(folder)
    if config.architectures not in (None, [], ["RexBertForMaskedLM"]):
        raise ValueError(f"{folder}: only masked-LM folders are rewritten, not {config.architectures}")
    modernbert = rexbert_config_to_modernbert(config).to_dict()
    modernbert["architectures"] = ["ModernBertForMaskedLM"]
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(modernbert, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "config.json")
    for code in folder.glob("*.py"):
        code.unlink()
    return folder


__all__ = [
    "export_to_modernbert",
    "modernbert_to_rexbert_dict",
    "rewrite_as_modernbert",
    "rexbert_config_to_modernbert",
]
