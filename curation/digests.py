"""Content hashes of the files a stage reads (word lists, models, prompts): stage fingerprints and labeler
model identities hash what is in a file, never its name."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

# Files that hold a model's weights: two labelers whose weights hash equal are the same model.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ftz", ".gguf", ".onnx")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes ("missing" when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # size/mtime: a rewritten file is hashed again
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def weights_digest(path: str | Path) -> str:
    """sha256 over a model's weight files (a file, or every weight file under a folder, by relative path)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    sha = hashlib.sha256()
    for file in files:
        sha.update(f"{file.relative_to(path)}\0{file_digest(file)}\n".encode())
    return sha.hexdigest() if files else "missing"
