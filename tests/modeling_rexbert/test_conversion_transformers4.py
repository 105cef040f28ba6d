"""What we publish loads the same in transformers 4.57 as in transformers 5 (slow: a separate environment).

Folders: a phase's ``final/`` (RexBERT saved by training, then rewritten as plain ModernBERT), an
``export_to_modernbert`` folder, and the two ``rexbert export onnx`` folders. In transformers 4.57 (with
optimum-onnx and sentence-transformers, as a production stack pins them) every one must load with the
Auto classes / ``SentenceTransformer(backend="onnx")`` / ``ORTModelForMaskedLM`` and give the logits and
embeddings transformers 5 gives here. The model is a phase-1 one (global RoPE θ 10k, not ModernBERT's
default 160k) with sharpened attention, so a loader that misses a RoPE or window key cannot agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modeling_rexbert import RexBertForMaskedLM
from modeling_rexbert.conversion import export_to_modernbert, rewrite_as_modernbert
from rexbert_cli.export import export_onnx
from tests import transformers4_env
from tests.modeling_rexbert.conftest import tiny_config
from tests.tiny_models import tiny_bpe_tokenizer
from training.tokenizer import save_for_model, special_token_ids

pytestmark = pytest.mark.slow

TEXTS = [
    "stainless steel water bottle blue cap litres model 12 size 7 wireless earbuds cotton shirt size 3",
    "leather wallet model 3",
]
MASKED = "stainless steel [MASK] bottle blue cap"

SCRIPT = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, pipeline
from sentence_transformers import SentenceTransformer
from optimum.onnxruntime import ORTModelForMaskedLM

folders, texts, masked, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {}
for name in ("final", "exported"):
    tokenizer = AutoTokenizer.from_pretrained(folders[name])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    mlm = AutoModelForMaskedLM.from_pretrained(folders[name]).eval()
    with torch.no_grad():
        res[name + ".input_ids"] = batch["input_ids"].numpy()
        res[name + ".logits"] = mlm(**batch, labels=batch["input_ids"]).logits.numpy()
        encoder = AutoModel.from_pretrained(folders[name]).eval()
        res[name + ".hidden"] = encoder(**batch).last_hidden_state.numpy()
    res[name + ".fill"] = np.array([pipeline("fill-mask", model=folders[name])(masked)[0]["token"]])
res["st.torch"] = SentenceTransformer(folders["final"], device="cpu").encode(texts)
res["st.onnx"] = SentenceTransformer(folders["onnx"], backend="onnx", device="cpu").encode(texts)
tokenizer = AutoTokenizer.from_pretrained(folders["onnx_mlm"])
ort_mlm = ORTModelForMaskedLM.from_pretrained(folders["onnx_mlm"])
res["ort.logits"] = ort_mlm(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
res["ort.fill"] = np.array([pipeline("fill-mask", model=ort_mlm, tokenizer=tokenizer)(masked)[0]["token"]])
np.savez(out, **res)
"""


def _phase1_model(tokenizer) -> RexBertForMaskedLM:
    config = tiny_config(
        **special_token_ids(tokenizer),
        vocab_size=320,
        hidden_size=64,
        intermediate_size=96,
        local_attention=8,
        global_rope_theta=10_000.0,
        sparse_prediction=True,  # as training sets it in memory
    )
    torch.manual_seed(0)
    model = RexBertForMaskedLM(config).eval()
    with torch.no_grad():  # peaked attention: positions (RoPE) and windows change the output visibly
        for layer in model.model.layers:
            layer.attn.Wqkv.weight.mul_(6.0)
    return model


def _reference(folder, tokenizer):
    """What transformers 5 computes on ``folder``."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoModelForMaskedLM, pipeline

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    mlm = AutoModelForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = mlm(**batch, labels=batch["input_ids"]).logits.numpy()
        hidden = AutoModel.from_pretrained(folder).eval()(**batch).last_hidden_state.numpy()
    return {
        "input_ids": batch["input_ids"].numpy(),
        "mask": batch["attention_mask"].numpy().astype(bool),
        "logits": logits,
        "hidden": hidden,
        "fill": pipeline("fill-mask", model=str(folder))(MASKED)[0]["token"],
        "st": SentenceTransformer(str(folder), device="cpu").encode(TEXTS),
    }


def test_published_folders_load_identically_in_transformers_457(tmp_path):
    tokenizer = tiny_bpe_tokenizer()
    model = _phase1_model(tokenizer)
    final = tmp_path / "final"  # as training/curriculum.py's _save_final writes it
    model.save_pretrained(final)
    save_for_model(tokenizer, final, model_max_length=256)
    rewrite_as_modernbert(final)
    export_to_modernbert(model, tmp_path / "exported", tokenizer=tokenizer)
    export_onnx(final, tmp_path / "onnx")
    export_onnx(final, tmp_path / "onnx_mlm", task="fill-mask")
    ref = _reference(final, tokenizer)
    assert ref["logits"].shape == (*ref["input_ids"].shape, 320)  # sparse_prediction is off in the folder

    folders = {name: str(tmp_path / name) for name in ("final", "exported", "onnx", "onnx_mlm")}
    out = tmp_path / "transformers4.npz"
    result = transformers4_env.run(
        SCRIPT, json.dumps(folders), json.dumps(TEXTS), MASKED, str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out)
    real = ref["mask"]
    for name in ("final", "exported"):
        np.testing.assert_array_equal(got[f"{name}.input_ids"], ref["input_ids"])
        assert got[f"{name}.logits"].shape == ref["logits"].shape  # dense logits with labels, as in v5
        np.testing.assert_allclose(got[f"{name}.logits"][real], ref["logits"][real], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got[f"{name}.hidden"][real], ref["hidden"][real], atol=1e-5, rtol=0)
        assert got[f"{name}.fill"][0] == ref["fill"]
    np.testing.assert_allclose(got["st.torch"], ref["st"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["st.onnx"], ref["st"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["ort.logits"][real], ref["logits"][real], atol=1e-4, rtol=0)
    assert got["ort.fill"][0] == ref["fill"]
