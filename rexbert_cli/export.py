"""``rexbert export onnx``: a RexBERT (or ModernBERT) model -> an ONNX model folder for ONNX Runtime.

The folder has optimum's layout (what ``optimum-cli export onnx`` writes and what sentence-transformers'
``backend="onnx"`` and optimum's ``ORTModelFor*`` classes load): ``model.onnx`` with optimum's input and
output names and dynamic axes, the plain-ModernBERT ``config.json`` and the tokenizer files (both readable
by transformers 4.x and 5.x, see :mod:`modeling_rexbert.conversion`), and the sentence-transformers module
files when the source is a sentence-transformers model (its pooling is kept).

RexBERT's own forward is not traceable into a static graph: it drops padding with ``nonzero`` and plans
its CPU attention from host-side document lengths. Its weights and function are those of transformers'
ModernBERT, though, so the export traces that twin (same state dict, padded dense attention with the
sliding-window mask) with the TorchScript-based ``torch.onnx`` exporter: ``optimum-onnx`` does the same
but pins transformers < 4.58, so it cannot be installed beside transformers 5. Before the folder is moved
into place, the graph is run in ONNX Runtime on batches of other shapes and must match RexBERT in PyTorch.
At padding positions the graph returns what ModernBERT's padded attention computes there (as
``ModernBertModel`` and optimum's export do), not RexBERT's zeros: pool with the attention mask.

    rexbert export onnx MODEL --output-dir DIR [--task feature-extraction|fill-mask]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from rexbert_common import UserError

PARITY_ATOL = 1e-4  # fp32 graph vs fp32 PyTorch: summation-order noise only
# optimum's task names -> (RexBERT class, graph output name)
TASKS = {
    "feature-extraction": ("RexBertModel", "last_hidden_state"),
    "fill-mask": ("RexBertForMaskedLM", "logits"),
}
ONNX_FILE = "model.onnx"
# sentence-transformers' model-level files (module folders are listed in modules.json)
_SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def _check_inputs(model: str | os.PathLike, out_dir: str | os.PathLike, task: str) -> tuple[str, Path]:
    """Every input mistake, before the model is loaded."""
    from evaluation.models import model_source
    from rexbert_common.outputs import check_output_dir

    if task not in TASKS:
        raise UserError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    source, out_dir = Path(model_source(str(model))), Path(out_dir)  # a model folder or a Hub id
    if source.exists() and out_dir.resolve() == source.resolve():
        raise UserError(f"OUT_DIR {out_dir} is the model folder: choose a new folder")
    check_output_dir(out_dir, flag="OUT_DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / ONNX_FILE).is_file():
        raise UserError(f"OUT_DIR {out_dir} is not empty and holds no earlier export: choose a new folder")
    return str(model), out_dir


def export_onnx(
    model: str | os.PathLike, out_dir: str | os.PathLike, task: str = "feature-extraction", opset: int = 17
) -> dict:
    """Export ``model`` (folder or Hub id) into the folder ``out_dir``; returns the parity check's figures.

    ``model.onnx`` takes ``input_ids`` / ``attention_mask`` (batch_size, sequence_length) int64 and returns
    ``last_hidden_state`` (batch_size, sequence_length, hidden) for ``feature-extraction`` or ``logits``
    (batch_size, sequence_length, vocab) for ``fill-mask``. An earlier export in ``out_dir`` is replaced only
    once the new one has passed the parity check."""
    model, out_dir = _check_inputs(model, out_dir, task)
    import torch
    import transformers

    import modeling_rexbert
    from modeling_rexbert.conversion import (
        modernbert_config_dict,
        save_portable_tokenizer,
        to_modernbert_model,
    )

    ours_name, output = TASKS[task]
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise UserError(
            f"{model}: no tokenizer to export with the model ({' '.join(str(error).split())})"
        ) from None
    ours, loading = getattr(modeling_rexbert, ours_name).from_pretrained(
        model, dtype=torch.float32, output_loading_info=True
    )
    if loading["missing_keys"]:  # e.g. fill-mask from an encoder-only folder: a random head
        missing = ", ".join(sorted(loading["missing_keys"]))
        raise UserError(f"{model} has no weights for {missing}: --task {task} needs a model that has them")
    ours.eval()
    twin = to_modernbert_model(ours).eval()
    twin.config._attn_implementation = "sdpa"  # traceable dense attention with a window mask

    class Graph(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), output)

    ids, mask = _example_batch(ours.config, lengths=[17, 9, 3])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with warnings.catch_warnings():
            # The tracer flags Python branches of the HF code that are constant for one model: expected here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(
                Graph(twin),
                (ids, mask),
                str(tmp / ONNX_FILE),
                dynamo=False,
                opset_version=opset,
                input_names=["input_ids", "attention_mask"],
                output_names=[output],
                dynamic_axes={
                    name: {0: "batch_size", 1: "sequence_length"}
                    for name in ("input_ids", "attention_mask", output)
                },
            )
        report = check_onnx_parity(ours, tmp / ONNX_FILE, output)
        if report["max_abs_diff"] > PARITY_ATOL:
            raise RuntimeError(
                f"ONNX export of {model} differs from PyTorch by {report['max_abs_diff']:.2e} "
                f"(> {PARITY_ATOL}); not written"
            )
        config = modernbert_config_dict(ours.config, type(twin).__name__)
        (tmp / "config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        save_portable_tokenizer(tokenizer, tmp)
        _copy_sentence_transformers_files(model, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _copy_sentence_transformers_files(model: str, folder: Path) -> None:
    """Keep a sentence-transformers model's pooling / normalisation: its model-level files and the module
    folders ``modules.json`` names (the Transformer module is the folder itself)."""
    source = Path(model)
    if not (source / "modules.json").is_file():
        return
    for name in _SENTENCE_TRANSFORMERS_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    for module in json.loads((source / "modules.json").read_text(encoding="utf-8")):
        path = module.get("path") or ""
        if path and (source / path).is_dir():
            shutil.copytree(source / path, folder / path)


def _example_batch(config, lengths: list[int], seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    S = max(lengths)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    low = min(1000, config.vocab_size // 2)
    ids = torch.randint(low, config.vocab_size, (len(lengths), S), generator=gen) * mask
    return ids, mask


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """ONNX Runtime CPU session with every graph optimisation on; ``path`` is a ``.onnx`` file or an
    exported folder."""
    import onnxruntime as ort

    path = Path(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    file = path / ONNX_FILE if path.is_dir() else path
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def check_onnx_parity(model, onnx_path: str | os.PathLike, output: str = "last_hidden_state") -> dict:
    """Max |ONNX - PyTorch| of ``output`` over the real tokens of batches other than the export example: a
    longer one (documents past the local window), a single row and a batch of one length."""
    import numpy as np
    import torch

    session = onnx_session(onnx_path)
    window = model.config.local_attention
    worst = 0.0
    for lengths in ([3 * window + 5, 11, 1], [2 * window + 1], [7, 7]):
        ids, mask = _example_batch(model.config, lengths, seed=len(lengths))
        (got,) = session.run([output], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            ref = getattr(model(input_ids=ids, attention_mask=mask), output).numpy()
        real = mask.numpy().astype(bool)
        worst = max(worst, float(np.abs(got[real] - ref[real]).max()))
    return {"max_abs_diff": worst}


def _run(args: argparse.Namespace) -> int:
    if (args.output_dir is None) == (args.out_dir is None):
        raise UserError("give the output folder once: --output-dir DIR (or as the second argument)")
    out_dir = args.output_dir or args.out_dir
    report = export_onnx(args.model, out_dir, task=args.task, opset=args.opset)
    print(f"wrote {out_dir} ({args.task}; max |ONNX - PyTorch| = {report['max_abs_diff']:.1e})")
    return 0


def register(subparsers) -> None:
    from rexbert_common.outputs import add_output_dir_argument

    parser = subparsers.add_parser("export", help="export a trained encoder (onnx)")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True
    onnx = formats.add_parser(
        "onnx",
        help="ONNX model folder for ONNX Runtime, optimum and sentence-transformers (backend='onnx')",
        description=__doc__.split("\n")[0],
    )
    onnx.add_argument(
        "model", help="RexBERT or ModernBERT model folder (config.json + safetensors) or Hub id"
    )
    # `rexbert export onnx MODEL OUT_DIR` (optimum-cli's form) works too; --output-dir is the documented one
    onnx.add_argument("out_dir", nargs="?", default=None, help=argparse.SUPPRESS)
    add_output_dir_argument(onnx, "folder to write: model.onnx, config.json, tokenizer files")
    onnx.add_argument(
        "--task",
        choices=list(TASKS),
        default="feature-extraction",
        help="graph output: last_hidden_state (feature-extraction, default) or MLM logits (fill-mask)",
    )
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.set_defaults(func=_run)
