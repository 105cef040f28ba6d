"""``rexbert export onnx``: a RexBERT (or ModernBERT) encoder folder -> one ONNX graph for ONNX Runtime.

RexBERT's own forward is not traceable into a static graph: it drops padding with ``nonzero`` and plans
its CPU attention from host-side document lengths. Its weights and function are those of transformers'
ModernBERT, though, so the export goes through that twin (same state dict, padded dense attention with
the sliding-window mask), with the TorchScript-based ``torch.onnx`` exporter; ``optimum-onnx`` would do
the same but cannot be installed beside transformers 5. Dynamic batch and sequence axes; the exported
graph is checked against RexBERT in PyTorch before it is moved into place.

    rexbert export onnx MODEL_DIR OUT.onnx
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from rexbert_common import UserError

PARITY_ATOL = 1e-4  # fp32 graph vs fp32 PyTorch: summation-order noise only


def export_onnx(model_dir: str | os.PathLike, out_path: str | os.PathLike, opset: int = 17) -> dict:
    """Export the encoder in ``model_dir`` to ``out_path``; returns the parity check's figures.

    Inputs ``input_ids`` / ``attention_mask`` (batch, sequence) int64, output ``last_hidden_state``
    (batch, sequence, hidden) with zeros at padding, like ``RexBertModel``."""
    import torch
    from transformers import ModernBertModel

    from modeling_rexbert import RexBertModel
    from modeling_rexbert.conversion import rexbert_config_to_modernbert

    model_dir, out_path = Path(model_dir), Path(out_path)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: not a model folder (no config.json)")
    if out_path.suffix != ".onnx":
        raise UserError(f"{out_path}: the output file must end in .onnx")
    ours = RexBertModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    twin = ModernBertModel(rexbert_config_to_modernbert(ours.config)).eval()
    twin.config._attn_implementation = "sdpa"  # traceable dense attention with a window mask
    twin.load_state_dict(ours.state_dict())

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)  # zeros at padding, as RexBERT

    ids, mask = _example_batch(ours.config, lengths=[17, 9, 3])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        with warnings.catch_warnings():
            # The tracer flags Python branches of the HF code that are constant for one model: expected here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(
                Encoder(twin),
                (ids, mask),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    name: {0: "batch", 1: "sequence"}
                    for name in ("input_ids", "attention_mask", "last_hidden_state")
                },
            )
        report = check_onnx_parity(ours, tmp)
        if report["max_abs_diff"] > PARITY_ATOL:
            raise RuntimeError(
                f"ONNX export of {model_dir} differs from PyTorch by {report['max_abs_diff']:.2e} "
                f"(> {PARITY_ATOL}); not written"
            )
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return report


def _example_batch(config, lengths: list[int], seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    S = max(lengths)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    low = min(1000, config.vocab_size // 2)
    ids = torch.randint(low, config.vocab_size, (len(lengths), S), generator=gen) * mask
    return ids, mask


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """ONNX Runtime CPU session with every graph optimisation on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx_parity(model, onnx_path: str | os.PathLike) -> dict:
    """Max |ONNX - PyTorch| over the real tokens of batches other than the export example: a longer
    one (documents past the local window), a single row and a batch of one length."""
    import numpy as np
    import torch

    session = onnx_session(onnx_path)
    window = model.config.local_attention
    worst = 0.0
    for lengths in ([3 * window + 5, 11, 1], [2 * window + 1], [7, 7]):
        ids, mask = _example_batch(model.config, lengths, seed=len(lengths))
        (got,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        real = mask.numpy().astype(bool)
        worst = max(worst, float(np.abs(got[real] - ref[real]).max()))
    return {"max_abs_diff": worst}


def _run(args: argparse.Namespace) -> int:
    report = export_onnx(args.model_dir, args.output, opset=args.opset)
    print(f"wrote {args.output} (max |ONNX - PyTorch| = {report['max_abs_diff']:.1e})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a trained encoder (onnx)")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True
    onnx = formats.add_parser(
        "onnx",
        help="ONNX graph of the encoder for ONNX Runtime (dynamic batch/length)",
        description=__doc__.split("\n")[0],
    )
    onnx.add_argument("model_dir", help="RexBERT or ModernBERT model folder (config.json + safetensors)")
    onnx.add_argument("output", help="output .onnx file")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.set_defaults(func=_run)
