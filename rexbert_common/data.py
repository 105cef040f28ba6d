"""Where the local data lives: ``--data-dir``, else ``$REXBERT_DATA_DIR``, else the embedded sample.

The embedded sample (``sample_data/`` at the repository root, a few MB with every file's provenance and
licence) has the same folder and file names as the full local data, so every stage, recipe
(``${REXBERT_DATA_DIR}/...``) and test reads either one. Stages read the environment variable, so setting
it once here switches all of them, including the subprocesses they start.
"""

from __future__ import annotations

import os
from pathlib import Path

from rexbert_common.errors import UserError

DATA_ENV = "REXBERT_DATA_DIR"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


def data_dir() -> Path:
    """The data folder in use: ``$REXBERT_DATA_DIR`` when set (non-empty), else the embedded sample."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value) if value else SAMPLE_DIR


def is_sample(path: str | os.PathLike) -> bool:
    return Path(path).resolve() == SAMPLE_DIR.resolve()


def use_data_dir(path: str | os.PathLike | None = None) -> Path:
    """Point ``$REXBERT_DATA_DIR`` at ``path`` (default: as :func:`data_dir` resolves it); must exist."""
    folder = Path(path) if path else data_dir()
    if not folder.is_dir():
        if folder == SAMPLE_DIR:  # an installed wheel has no source tree beside it
            raise UserError(
                f"no data folder: the embedded sample {folder} is missing; use --data-dir or {DATA_ENV}"
            )
        source = "--data-dir" if path else DATA_ENV
        raise UserError(f"{source}={folder} is not a directory (unset it to use the embedded sample)")
    os.environ[DATA_ENV] = str(folder.resolve())
    return folder
