"""fastText supervised training in a fresh Python process, so a model depends only on its inputs.

Why a process: fastText 0.9.2 trained inside a long-lived process (pytest, or ``rexbert curate`` after the
labeler has run torch) gave different weights for the *same* training file, arguments, seed and
``thread=1`` depending on what the process had done before (measured: same input hash, two weight hashes,
within one process); a fresh interpreter gives the same weights every time. Different classifiers meant
different thresholds, hence a different kept set after a resume. Running each training here costs ~0.15 s.

Usage (internal): ``python -m curation.fasttext_train <train.txt> <out.bin> '<json kwargs>'``; exits 3 with
"NaN" on stderr when fastText diverges, so the caller can lower the learning rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def train_in_fresh_process(train_file: str, out_bin: str, kwargs: dict[str, Any]) -> None:
    """Train ``fasttext.train_supervised(input=train_file, **kwargs)`` in a new interpreter, save to
    ``out_bin``. Raises RuntimeError (with fastText's message) when training fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "curation.fasttext_train", train_file, out_bin, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise RuntimeError(f"fastText training on {train_file} failed: {tail[0]}")


def _main(argv: list[str]) -> int:
    import fasttext

    from rexbert_common.signals import exit_with_parent

    exit_with_parent()  # a curation run killed with SIGKILL must not leave its trainings behind

    train_file, out_bin, kwargs = argv[0], argv[1], json.loads(argv[2])
    try:
        model = fasttext.train_supervised(input=train_file, **kwargs)
    except RuntimeError as error:
        print(f"RuntimeError: {error}", file=sys.stderr)
        return 3
    model.save_model(out_bin)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
