"""Which checkpoint a phase resumes from, and which files its Hub folder keeps.

transformers' ``get_last_checkpoint`` returns the newest ``checkpoint-N`` folder whatever its state, and the
Trainer silently starts a fresh optimizer when ``optimizer.pt`` is missing and fresh random streams when an
``rng_state`` file is. A multi-week run is killed at any moment (often while writing a checkpoint) and
disks corrupt files, so every checkpoint carries a manifest (:data:`MANIFEST`: each file's size and
sha256), written last, once every process has saved. Resuming verifies the newest checkpoint against it
-- every byte of every file: weights, optimizer, scheduler, each process's RNG state, trainer state -- and
falls back to the previous intact one, naming what was wrong.

Cost: the checksums are computed once per save, on the main process, in a background thread while
training goes on (``RexBertTrainer``), and once per resume for the checkpoint resumed from: sha256 reads
~0.5-1.5 GB/s per core, seconds for a ModernBERT-large checkpoint (weights + moments, ~4.5 GB), next to
minutes between saves. A save killed before its manifest exists counts as unfinished: the previous
checkpoint is used, and ``save_total_limit`` never deletes it for an unfinished newer one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from rexbert_common.errors import UserError
from rexbert_common.files import write_json_atomic

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last by the main process once every process has saved: each file's size and sha256.
MANIFEST = "checksums.json"
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(checkpoint: Path) -> Path:
    """Record every file of a finished checkpoint (size + sha256) in :data:`MANIFEST`, written last: its
    presence means every process finished writing."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {
        p.relative_to(checkpoint).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files
    }
    return write_json_atomic(checkpoint / MANIFEST, {"format": 1, "files": entries})


def checkpoint_problem(checkpoint: Path, verify_checksums: bool = True) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None = it can): no manifest (the save did not finish), a
    listed file missing or of another size, or -- reading every byte -- a file that no longer matches its
    checksum. ``verify_checksums=False`` stops after the sizes (cheap). A missing ``optimizer.pt`` is not
    damage here: :func:`resume_checkpoint` asks for ``--allow-fresh-optimizer``."""
    try:
        listed = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return f"no {MANIFEST}: the save did not finish"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for required in ("trainer_state.json", "model.safetensors"):
        if required not in listed and not (
            required == "model.safetensors" and "model.safetensors.index.json" in listed
        ):
            return f"{MANIFEST} lists no {required}"
    if not (checkpoint / OPTIMIZER_FILE).exists():  # deleted on purpose: see --allow-fresh-optimizer
        listed = {name: entry for name, entry in listed.items() if name != OPTIMIZER_FILE}
    for name, entry in listed.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{name} has {size} bytes, {entry['bytes']} were written (truncated or overwritten)"
    for name, entry in listed.items() if verify_checksums else ():
        if _sha256(checkpoint / name) != entry["sha256"]:
            return f"{name} does not match its checksum: its bytes changed after it was saved"
    return None


def resume_checkpoint(
    phase_dir: Path, allow_fresh_optimizer: bool, log: Callable[[str], None]
) -> Path | None:
    """The newest intact checkpoint of the phase (None when it has none, or only unfinished saves: the
    phase starts again).

    Run it on the main process only (it reads every byte of the checkpoint it returns). A damaged
    checkpoint is reported with its path and skipped; damaged checkpoints newer than the one returned are
    cleared so the resumed run writes its own: an unfinished save is deleted, a corrupted one (a file that
    changed after its checksum was taken) is renamed ``checkpoint-N.damaged`` for inspection. A checkpoint
    without ``optimizer.pt`` is an error unless ``allow_fresh_optimizer``: resuming with fresh moments
    changes the run.
    """
    found = checkpoints(phase_dir)
    skipped: list[tuple[Path, str]] = []
    for checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem:
            log(f"checkpoint {checkpoint} is damaged ({problem}); trying the previous one")
            skipped.append((checkpoint, problem))
            continue
        if not (checkpoint / OPTIMIZER_FILE).is_file() and not allow_fresh_optimizer:
            raise ResumeError(
                f"{checkpoint} has no {OPTIMIZER_FILE}: resuming would restart the optimizer's moments; pass "
                "--allow-fresh-optimizer to continue anyway"
            )
        for damaged, problem in skipped:
            _clear_damaged(damaged, problem, log)
        return checkpoint
    if all(_unfinished(problem) for _, problem in skipped):  # killed while saving its first checkpoint
        for damaged, problem in skipped:
            _clear_damaged(damaged, problem, log)
        return None
    if found:
        raise ResumeError(
            f"{phase_dir}: no intact checkpoint to resume from "
            f"({'; '.join(f'{c.name}: {p}' for c, p in skipped)}); pass --overwrite to start the phase again"
        )
    return None


def _unfinished(problem: str) -> bool:
    return problem.startswith(f"no {MANIFEST}")


def _clear_damaged(checkpoint: Path, problem: str, log: Callable[[str], None]) -> None:
    if _unfinished(problem):
        shutil.rmtree(checkpoint)
        log(f"deleted the unfinished {checkpoint}")
        return
    aside = checkpoint.with_name(checkpoint.name + ".damaged")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(checkpoint, aside)
    log(f"moved {checkpoint} to {aside} (delete it once inspected)")


def rotate_checkpoints(phase_dir: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints, and anything older than the oldest kept
    (an unfinished save is never counted as one of the ``keep``). Returns what was deleted."""
    if not keep:
        return []
    found = checkpoints(phase_dir)
    complete = [c for c in found if (c / MANIFEST).is_file()]
    if len(complete) <= keep:
        return []
    oldest_kept = int(_CHECKPOINT.match(complete[keep - 1].name).group(1))
    deleted = [c for c in found if int(_CHECKPOINT.match(c.name).group(1)) < oldest_kept]
    for checkpoint in deleted:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return deleted


class ChecksumWriter:
    """Writes a saved checkpoint's manifest, then rotates old checkpoints, in a background thread, one
    checkpoint at a time: training goes on while the main process hashes (sha256 releases the GIL).

    :meth:`finish` waits for the current one and raises what it failed with; the trainer calls it before
    the next save and when training ends. The thread is not a daemon: an interpreter that exits normally
    (or on an exception) completes the manifest first.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, checkpoint: Path, keep: int | None) -> None:
        self.finish()

        def work() -> None:
            try:
                write_manifest(checkpoint)
                rotate_checkpoints(checkpoint.parent, keep)
            except BaseException as error:  # reported by finish(), in the training thread
                self._error = error

        self._thread = threading.Thread(target=work, name=f"checksums-{checkpoint.name}")
        self._thread.start()

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


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
