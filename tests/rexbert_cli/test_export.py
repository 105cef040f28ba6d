"""`rexbert export onnx`: a model folder whose graph computes RexBERT's function for any batch and length,
with the config and tokenizer ONNX Runtime users, optimum and sentence-transformers load beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM, RexBertModel
from rexbert_cli import export
from rexbert_cli.main import main
from rexbert_common import UserError
from tests.modeling_rexbert.conftest import right_padded, tiny_config
from tests.tiny_models import tiny_bpe_tokenizer
from training.tokenizer import special_token_ids

VOCAB = 320


def _config(tokenizer) -> RexBertConfig:
    # a phase-1 model (global θ 10k): a loader that falls back to θ 160k would differ
    return tiny_config(
        **special_token_ids(tokenizer),
        vocab_size=VOCAB,
        num_hidden_layers=3,
        local_attention=8,
        global_rope_theta=1e4,
    )


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module")
def saved_mlm(tmp_path_factory, tokenizer):
    """A RexBERT masked-LM folder (remote-code format) with its tokenizer."""
    folder = tmp_path_factory.mktemp("mlm")
    torch.manual_seed(0)
    RexBertForMaskedLM(_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(saved_mlm, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", "onnx", str(saved_mlm), "--output-dir", str(out)]) == 0
    return out


def test_cli_writes_a_model_folder_equal_to_pytorch_for_new_shapes(saved_mlm, exported, tokenizer):
    from transformers import AutoConfig, AutoTokenizer

    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = AutoConfig.from_pretrained(exported)  # plain ModernBERT: no remote code
    assert config.model_type == "modernbert" and config.architectures == ["ModernBertModel"]
    assert AutoTokenizer.from_pretrained(exported)("blue cap").input_ids == tokenizer("blue cap").input_ids
    session = export.onnx_session(exported)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]  # optimum's names
    model = RexBertModel.from_pretrained(saved_mlm).eval()
    for lengths in ([40, 3, 25], [1], [64, 64]):  # longer than the export example, past the window of 8
        ids, mask = right_padded(lengths, vocab=VOCAB, low=5)
        (got,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        real = mask.numpy().astype(bool)
        np.testing.assert_allclose(got[real], ref[real], atol=1e-4, rtol=0)


def test_layout_is_what_sentence_transformers_onnx_backend_loads_without_exporting(exported):
    """sentence-transformers' own rule for "load this ONNX file, don't export" (its backend needs optimum,
    which cannot be installed beside transformers 5; the slow transformers-4.57 test loads it for real)."""
    from pathlib import Path

    from sentence_transformers.backend.utils import backend_should_export

    should_export, kwargs = backend_should_export(Path(exported), True, {}, "model.onnx", "*.onnx", "ONNX")
    assert should_export is False and kwargs.get("subfolder") is None


def test_sentence_transformers_modules_are_kept(tmp_path, saved_mlm):
    """An exported sentence-transformers model keeps its pooling (modules.json and the module folders)."""
    import shutil

    st_dir = tmp_path / "st"
    shutil.copytree(saved_mlm, st_dir)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append(
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    )
    (st_dir / "modules.json").write_text(json.dumps(modules))
    (st_dir / "1_Pooling").mkdir()
    (st_dir / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 32, "pooling_mode_cls_token": true}'
    )
    out = tmp_path / "onnx"
    export.export_onnx(st_dir, out)
    assert json.loads((out / "modules.json").read_text()) == modules
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True


@pytest.mark.slow
def test_fill_mask_export_returns_the_mlm_logits(saved_mlm, tmp_path):
    out = tmp_path / "mlm"
    assert (
        main(["export", "onnx", str(saved_mlm), str(out), "--task", "fill-mask"]) == 0
    )  # optimum-cli's form
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ModernBertForMaskedLM"]
    session = export.onnx_session(out)
    ids, mask = right_padded([30, 12], vocab=VOCAB, low=5)
    (logits,) = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        ref = RexBertForMaskedLM.from_pretrained(saved_mlm).eval()(input_ids=ids, attention_mask=mask).logits
    real = mask.numpy().astype(bool)
    assert logits.shape == (2, 30, VOCAB)
    np.testing.assert_allclose(logits[real], ref.numpy()[real], atol=1e-4, rtol=0)


def test_fill_mask_from_an_encoder_without_head_is_refused(tmp_path, tokenizer):
    encoder = tmp_path / "encoder"
    RexBertModel(_config(tokenizer)).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    with pytest.raises(UserError, match="has no weights for .*head"):
        export.export_onnx(encoder, tmp_path / "out", task="fill-mask")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]


@pytest.mark.slow
def test_parity_check_catches_a_wrong_window(saved_mlm, exported):
    """The check compares windowed layers on documents past the window: a model that attends globally
    in one local layer must disagree with the (correct) graph."""
    model = RexBertModel.from_pretrained(saved_mlm).eval()
    model.layers[1].attn.window = (-1, -1)  # GLOBAL_WINDOW
    assert export.check_onnx_parity(model, exported)["max_abs_diff"] > 1e-3


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda d, t: [str(t / "missing"), str(t / "x")], "no such folder"),
        (lambda d, t: [str(t), str(t / "x")], "no config.json"),
        (lambda d, t: [str(d), str(d)], "is the model folder"),
        (lambda d, t: [str(d), str(t / "file.txt" / "x")], "file.txt is a file"),
        (lambda d, t: [str(d), str(t)], "not empty and holds no earlier export"),
    ],
)
def test_bad_input_is_a_one_line_user_error_and_writes_nothing(saved_mlm, tmp_path, make_args, message):
    (tmp_path / "file.txt").write_text("x")
    before = sorted(p.name for p in saved_mlm.iterdir())
    with pytest.raises(UserError, match=message):
        export.export_onnx(*make_args(saved_mlm, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert sorted(p.name for p in saved_mlm.iterdir()) == before


@pytest.mark.parametrize("where", [[], ["OUT", "--output-dir", "OUT2"]])
def test_the_output_folder_is_given_exactly_once(saved_mlm, tmp_path, capsys, where):
    argv = [w if not w.startswith("OUT") else str(tmp_path / w) for w in where]
    assert main(["export", "onnx", str(saved_mlm), *argv]) == 2
    assert "give the output folder once" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_model_without_tokenizer_is_refused(tmp_path, tokenizer):
    folder = tmp_path / "no-tokenizer"
    RexBertModel(_config(tokenizer)).save_pretrained(folder)
    with pytest.raises(UserError, match="no tokenizer to export"):
        export.export_onnx(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_graph_failing_the_parity_gate_is_not_written(saved_mlm, exported, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in exported.iterdir()}
    monkeypatch.setattr(export, "check_onnx_parity", lambda model, path, output: {"max_abs_diff": 0.5})
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export.export_onnx(saved_mlm, exported)  # an earlier export stays as it was
    assert {p.name: p.stat().st_mtime_ns for p in exported.iterdir()} == before
    assert sorted(p.name for p in exported.parent.iterdir()) == ["onnx"]


def test_export_prints_one_line(saved_mlm, tmp_path, capsys):
    from tests.console import console_lines

    assert main(["export", "onnx", str(saved_mlm), "--output-dir", str(tmp_path / "onnx")]) == 0
    captured = capsys.readouterr()
    out = console_lines(captured.out)
    assert len(out) == 1 and out[0].startswith(f"wrote {tmp_path / 'onnx'} (feature-extraction; max |ONNX")
    assert console_lines(captured.err) == []
