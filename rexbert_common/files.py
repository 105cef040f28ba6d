"""Atomic outputs: every artefact appears complete or not at all.

A file is written to a hidden temporary sibling (same folder, so the rename never crosses a filesystem),
flushed to disk, then renamed over its final name; a folder is built under a temporary name and renamed
into place the same way. A process killed at any moment, or a write that fails (disk full, quota), leaves
the previous version of the artefact -- or nothing -- never half a file. A failed write removes its
temporary file and raises :class:`OutputError` naming the file (one line for the CLI).

``fsync`` before the rename makes the new content survive a machine crash too, not only a killed
process (the rename is then ordered after the data on ext4/XFS/NFS); it costs one flush per file, which is
nothing next to writing the file on the cluster filesystems this runs on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rexbert_common.errors import UserError

# errors that mean "the output cannot be written here" (not a bug): reported in one line
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class OutputError(UserError):
    """An output could not be written (disk full, quota, read-only or unwritable folder)."""


RERUN = "rerun the same command; finished work is kept and resumed"


def output_error(error: OSError, path: str | os.PathLike, then: str = RERUN) -> OutputError | OSError:
    """The one-line :class:`OutputError` for a failed write of ``path`` (``then``: how to go on once space
    is freed); other OS errors are returned unchanged (bugs or bad input, reported as they are)."""
    if error.errno in _NO_SPACE:
        return OutputError(
            f"no space left on the device writing {path} ({error.strerror}): free space and {then}"
        )
    if error.errno in _UNWRITABLE:
        return OutputError(f"cannot write {path} ({error.strerror}): choose a writable output folder")
    return error


@contextlib.contextmanager
def writing(path: str | os.PathLike, then: str = RERUN) -> Iterator[None]:
    """A failed write inside the block (disk full, read-only folder) becomes the one-line
    :class:`OutputError` naming ``path``; other errors pass through unchanged."""
    try:
        yield
    except OSError as error:
        converted = output_error(error, path, then)
        if converted is error:
            raise
        raise converted from error


def fsync_folder(folder: str | os.PathLike) -> None:
    """Persist a folder's entries (a rename into it) -- best effort: some filesystems refuse it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], keep_identical: bool = False) -> Path:
    """Call ``write(tmp_path)``, flush it to disk and rename it onto ``path``.

    ``write`` may be any writer that takes a path (``pq.write_table``, ``model.save_model``, ...).
    ``keep_identical``: when ``path`` already holds the same bytes it is left as it is (with its
    modification time: caches keyed on it stay valid).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are shared (reports, datasets, cards)
            write(tmp)
            if keep_identical and path.is_file() and _same_bytes(path, Path(tmp)):
                os.unlink(tmp)
                return path
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    fsync_folder(path.parent)
    return path


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as first, b.open("rb") as second:
        while chunk := first.read(1 << 20):
            if chunk != second.read(1 << 20):
                return False
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """JSON with a trailing newline; ``dumps`` are :func:`json.dumps` options (default: ``indent=1``)."""
    return write_text_atomic(path, json.dumps(obj, **{"indent": 1, **dumps}) + "\n")


def replace_folder(staged: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a completely written folder ``staged`` onto ``final`` (a sibling), replacing an older one.

    POSIX has no atomic swap of two non-empty folders: the old ``final`` is first renamed aside, then the
    new one renamed in, then the old one deleted. A crash between the two renames leaves ``final`` absent
    and both complete copies on disk (``<final>.old`` and ``staged``): never a half-written ``final``.
    """
    staged, final = Path(staged), Path(final)
    old = final.with_name(final.name + ".old")
    with writing(final):
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(staged, final)
    fsync_folder(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final
