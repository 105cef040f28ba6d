"""`rexbert export onnx`: the ONNX graph computes RexBERT's function for any batch and length."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_rexbert import RexBertModel
from rexbert_cli import export
from rexbert_cli.main import main
from rexbert_common import UserError
from tests.modeling_rexbert.conftest import right_padded, tiny_config


@pytest.fixture(scope="module")
def saved_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    RexBertModel(tiny_config(local_attention=8, num_hidden_layers=3)).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_cli_exports_a_graph_equal_to_pytorch_for_new_shapes(saved_encoder, tmp_path, capsys):
    out = tmp_path / "encoder.onnx"
    assert main(["export", "onnx", str(saved_encoder), str(out)]) == 0
    assert "max |ONNX - PyTorch|" in capsys.readouterr().out
    session = export.onnx_session(out)
    model = RexBertModel.from_pretrained(saved_encoder).eval()
    for lengths in ([40, 3, 25], [1], [64, 64]):  # longer than the export example, past the window of 8
        ids, mask = right_padded(lengths)
        (got,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)  # padding rows are zeros on both sides


@pytest.mark.slow
def test_parity_check_catches_a_wrong_window(saved_encoder, tmp_path):
    """The check compares windowed layers on documents past the window: a model that attends globally
    in one local layer must disagree with the (correct) graph."""
    export.export_onnx(saved_encoder, tmp_path / "good.onnx")
    model = RexBertModel.from_pretrained(saved_encoder).eval()
    model.layers[1].attn.window = (-1, -1)  # attend globally in a local layer
    assert export.check_onnx_parity(model, tmp_path / "good.onnx")["max_abs_diff"] > 1e-3


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda d, t: [str(t / "missing"), str(t / "x.onnx")], "no config.json"),
        (lambda d, t: [str(d), str(t / "x.bin")], "must end in .onnx"),
    ],
)
def test_bad_input_is_a_one_line_user_error_and_writes_nothing(saved_encoder, tmp_path, make_args, message):
    args = make_args(saved_encoder, tmp_path)
    with pytest.raises(UserError, match=message):
        export.export_onnx(*args)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.slow
def test_a_graph_failing_the_parity_gate_is_not_written(saved_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "check_onnx_parity", lambda model, path: {"max_abs_diff": 0.5})
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export.export_onnx(saved_encoder, tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())
