"""A full disk at a chosen file, stage by stage through the ``rexbert`` CLI: one line (exit 2), the previous
complete artefacts intact, and -- space freed -- the rerun finishes with what an uninterrupted run gives.

The fault: writing a file whose path ends with the given one gets half its bytes out, then ``write``
fails with ENOSPC -- for Python writes (results, cards, fsspec/datatrove files), ``torch.save`` (optimizer,
scheduler, RNG states) and safetensors (weights), the three ways artefacts reach the disk.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from rexbert_cli.main import main
from tests.training._tiny import args as tiny_args

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _matches(path, target: str) -> bool:
    """``path`` is ``target`` (a path suffix) or an atomic write's temporary file for it."""
    path, target = Path(os.fspath(path)), Path(target)
    named = path.name == target.name or (
        path.name.startswith(f".{target.name}.") and path.name.endswith(".tmp")
    )
    return named and str(path.parent).endswith(str(target.parent).lstrip("."))


class _HalfWritten(io.RawIOBase):
    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(
            bytes(data[: len(data) // 2]) if not isinstance(data, str) else data[: len(data) // 2]
        )
        self.handle.flush()
        raise NO_SPACE

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk("checkpoint-6/optimizer.pt")``: the disk fills while that file is written."""
    import safetensors.torch
    import transformers.modeling_utils

    targets: list[str] = []
    real_open, real_save, real_safe = builtins.open, torch.save, safetensors.torch.save_file

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writing = any(c in mode for c in "wax+")
        if writing and isinstance(file, (str, os.PathLike)) and any(_matches(file, t) for t in targets):
            return _HalfWritten(handle)
        return handle

    def half_then_full(save, obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise NO_SPACE

    def torch_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and any(_matches(f, t) for t in targets):
            half_then_full(real_save, obj, f, *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    def safe_save(tensors, filename, *args, **kwargs):
        if any(_matches(filename, t) for t in targets):
            half_then_full(real_safe, tensors, filename, *args, **kwargs)
        return real_safe(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", safe_save)

    def fill_at(target: str | None) -> None:
        targets[:] = [target] if target else []

    return fill_at


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith(f"rexbert {command}:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def _train(out, *extra):
    return main(["train", *tiny_args(out, "--phase", "1", *extra)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("reference")
    assert _train(out) == 0
    return out


def test_disk_full_while_checkpointing_and_while_exporting(reference, tmp_path, full_disk, capsys):
    from training.checkpoints import checkpoint_problem

    out = tmp_path / "run"
    full_disk("checkpoint-6/optimizer.pt")
    assert _train(out) == 2
    line = _one_error_line(capsys, "train")
    checkpoint = out / "phase1" / "checkpoint-6"
    assert line == (
        f"rexbert train: error: no space left on the device writing {checkpoint} (No space left on device): "
        "free space and resume with --resume (the last complete checkpoint is kept)"
    )
    assert checkpoint_problem(out / "phase1" / "checkpoint-3") is None  # the previous one is intact

    full_disk("final.tmp/model.safetensors")  # space for the checkpoints, not for the final weights
    assert _train(out, "--resume") == 2
    line = _one_error_line(capsys, "train")
    assert line.startswith(
        f"rexbert train: error: no space left on the device writing {out / 'phase1' / 'final.tmp'}"
    )
    assert not (out / "phase1" / "final").exists()  # never half a final folder
    assert checkpoint_problem(out / "phase1" / "checkpoint-9") is None

    full_disk(None)  # space freed
    assert _train(out, "--resume") == 0
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (out / "phase1" / "final" / name).read_bytes() == (
            reference / "phase1" / "final" / name
        ).read_bytes()


def test_disk_full_while_writing_evaluation_results_and_the_card(reference, tmp_path, full_disk, capsys):
    model = tmp_path / "model"
    shutil.copytree(reference / "phase1" / "final", model)
    results = tmp_path / "eval"
    evaluate = ["eval", "mlm", str(model), "--output-dir", str(results), "--block-sizes", "64",
                "--max-texts", "20", "--no-progress"]  # fmt: skip
    card = ["card", str(model), "--repo-id", "local/RexBERT-micro", "--results", str(results / "mlm.json")]

    def values():
        records = json.loads((results / "mlm.json").read_text())["records"]
        return [(r["task"], r["metric"], r["value"], r["n"]) for record in records for r in record["results"]]

    assert main(evaluate) == 0 and main(card) == 0
    first, first_card = values(), (model / "README.md").read_text()
    capsys.readouterr()

    full_disk("eval/mlm.json")
    assert main(evaluate) == 2
    assert _one_error_line(capsys, "eval mlm").startswith(
        f"rexbert eval mlm: error: no space left on the device writing {results / 'mlm.json'}"
    )
    assert values() == first  # the previous results, whole
    assert sorted(p.name for p in results.iterdir()) == [
        "mlm.json",
        "mlm.md",
    ]

    full_disk("model/README.md")
    assert main(card) == 2
    assert _one_error_line(capsys, "card").startswith(
        f"rexbert card: error: no space left on the device writing {model / 'README.md'}"
    )
    assert (model / "README.md").read_text() == first_card

    full_disk(None)
    assert main(evaluate) == 0 and main(card) == 0
    assert values() == first and (model / "README.md").read_text() == first_card


@pytest.mark.slow
def test_disk_full_while_writing_the_curated_dataset(tmp_path, full_disk, capsys):
    """The select stage's second task fills the disk writing its dataset shard. The tasks run in this
    process (``--workers 1``) so the fault reaches them."""
    import pyarrow.parquet as pq

    def curate(out):
        overrides = [
            "sampling.per_domain=12",
            "input.max_chars=6000",
            "classifier.kfold=2",
            "classifier.epochs=5",
            "audit.min_pairs=10",
        ]
        sets = [x for o in overrides for x in ("--set", o)]
        return main(["curate", "--output-dir", str(out), "--tasks", "2", "--workers", "1", *sets])

    reference = tmp_path / "reference"
    assert curate(reference) == 0
    out = tmp_path / "run"
    full_disk("dataset/data/train-00001.parquet")
    capsys.readouterr()
    assert curate(out) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert err[-1].startswith(f"rexbert curate: error: no space left on the device writing {out}")
    assert not (out / "dataset").exists()  # the dataset appears complete or not at all
    full_disk(None)
    assert curate(out) == 0
    files = sorted(p.name for p in (reference / "dataset" / "data").glob("*.parquet"))
    assert files == sorted(p.name for p in (out / "dataset" / "data").glob("*.parquet")) and len(files) == 2
    for name in files:
        assert pq.read_table(out / "dataset" / "data" / name).equals(
            pq.read_table(reference / "dataset" / "data" / name)
        )
