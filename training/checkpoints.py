"""Which checkpoint a phase resumes from, and which files its Hub folder keeps.

transformers' ``get_last_checkpoint`` returns the newest ``checkpoint-N`` folder whatever its state, and the
Trainer silently starts a fresh optimizer when ``optimizer.pt`` is missing. A multi-week run is killed at
any moment (often while writing a checkpoint), so resuming checks the newest checkpoint's files cheaply --
JSON parses, safetensors header and size agree, torch zip archives have their central directory -- and
falls back to the previous intact one, naming what was wrong.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from rexbert_common.errors import UserError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
# What a Hub model folder holds; anything else the Trainer writes (training_args.bin, rng states) stays out.
HUB_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "README.md",
)


class ResumeError(UserError):
    """The phase cannot resume as asked (the message says which checkpoint and what to do)."""


def checkpoints(phase_dir: Path) -> list[Path]:
    """The phase's ``checkpoint-N`` folders, newest (highest N) first."""
    if not phase_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in phase_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found, reverse=True)]


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is 8 bytes of header length, a JSON header, then the tensors' bytes: a truncated
    file is shorter than the header's largest end offset."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated ({size} bytes)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return f"{path.name} is truncated (header of {length} bytes, file of {size})"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return f"{path.name} has an unreadable header"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end != size:
        return f"{path.name} is truncated ({size} bytes, expected {8 + length + end})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """``torch.save`` writes a zip archive; a truncated one has lost its central directory."""
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError):
        return f"{path.name} is truncated or not a torch archive"


def checkpoint_problem(checkpoint: Path, need_optimizer: bool = True) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None = it can). Cheap: reads headers, not tensors."""
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "trainer_state.json is missing"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is truncated or not JSON"
    weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        if (checkpoint / "model.safetensors.index.json").is_file():  # sharded: trust the index's shards
            return None
        return "model.safetensors is missing"
    problem = _safetensors_problem(weights)
    if problem:
        return problem
    for name in (OPTIMIZER_FILE, SCHEDULER_FILE) if need_optimizer else ():
        if (checkpoint / name).is_file():
            problem = _torch_file_problem(checkpoint / name)
            if problem:
                return problem
    return None


def resume_checkpoint(
    phase_dir: Path, allow_fresh_optimizer: bool, log: Callable[[str], None]
) -> Path | None:
    """The newest intact checkpoint of the phase (None when it has none).

    A damaged checkpoint is reported with its path and skipped. A checkpoint without ``optimizer.pt`` is an
    error unless ``allow_fresh_optimizer``: resuming with fresh moments changes the run.
    """
    found = checkpoints(phase_dir)
    skipped = []
    for checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem:
            log(f"checkpoint {checkpoint} is damaged ({problem}); trying the previous one")
            skipped.append(f"{checkpoint.name}: {problem}")
            continue
        if not (checkpoint / OPTIMIZER_FILE).is_file() and not allow_fresh_optimizer:
            raise ResumeError(
                f"{checkpoint} has no {OPTIMIZER_FILE}: resuming would restart the optimizer's moments; pass "
                "--allow-fresh-optimizer to continue anyway"
            )
        return checkpoint
    if found:
        raise ResumeError(
            f"{phase_dir}: no intact checkpoint to resume from ({'; '.join(skipped)}); "
            "pass --overwrite to start the phase again"
        )
    return None


def refuse_or_clear_previous_run(phase_dir: Path, overwrite: bool, is_main_process: bool) -> None:
    """Without --resume, a phase folder that already holds checkpoints or a final model is not silently
    trained over: refuse, or with ``overwrite`` delete them (the data rows are kept: they are a cache)."""
    previous = [*checkpoints(phase_dir), *([phase_dir / "final"] if (phase_dir / "final").exists() else [])]
    if not previous:
        return
    if not overwrite:
        names = ", ".join(p.name for p in previous[:3]) + (" ..." if len(previous) > 3 else "")
        raise ResumeError(
            f"{phase_dir} already holds a run ({names}): pass --resume to continue it or "
            "--overwrite to start the phase again"
        )
    if is_main_process:
        for path in previous:
            shutil.rmtree(path)


def keep_hub_files(folder: Path) -> None:
    """Delete what does not belong in a Hub model folder (``training_args.bin`` is a pickle the Hub and our
    own pre-push check refuse) -- everything not in :data:`HUB_FILES`, the remote code or the summary."""
    for path in folder.iterdir():
        keep = path.name in HUB_FILES or path.suffix == ".py" or path.name == "phase_summary.json"
        keep = keep or (path.name.startswith("model-") and path.name.endswith(".safetensors"))
        if not keep:
            shutil.rmtree(path) if path.is_dir() else os.remove(path)
