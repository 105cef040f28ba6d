"""What a Hub-ready RexBERT folder must contain, checked before anything is uploaded."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

from rexbert_common.errors import UserError

# Auto classes a RexBERT config must map to its remote code (transformers writes auto_map per saved class
# only, so a folder saved from one head class can silently lack the others).
REQUIRED_AUTO_CLASSES = (
    "AutoConfig",
    "AutoModel",
    "AutoModelForMaskedLM",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
)
REMOTE_CODE_FILES = (
    "configuration_rexbert.py",
    "modeling_rexbert.py",
    "packing_rexbert.py",
    "attention_rexbert.py",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
FORBIDDEN_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files that never belong in a published model repository (training state, scratch): the upload skips
# them, so the check ignores them too -- a folder the training pipeline wrote is judged on what is uploaded.
IGNORE_PATTERNS = (
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "phase_summary.json",
    "checkpoint-*/**",
    "*.tmp",
    ".*",
)


class HubFolderError(UserError, ValueError):
    """A folder is not ready to be published; the message lists every problem."""


def files_to_upload(folder: str | Path) -> list[str]:
    """Relative paths (POSIX) the upload sends: every file except those matching :data:`IGNORE_PATTERNS`."""
    folder = Path(folder)
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(
            fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(path.name, pattern)
            for pattern in IGNORE_PATTERNS
        ):
            files.append(relative)
    return files


@dataclass
class FolderReport:
    """Outcome of :func:`check_hub_folder`.

    Args:
        folder: the checked folder.
        problems: human-readable reasons the folder is not Hub-ready (empty when it is).
        model_type: ``config.json``'s ``model_type`` (``rexbert`` or ``modernbert``), if readable.
    """

    folder: Path
    problems: list[str] = field(default_factory=list)
    model_type: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_invalid(self) -> None:
        if self.problems:
            listing = "; ".join(self.problems)
            raise HubFolderError(f"{self.folder} is not a Hub-ready model folder: {listing}")


def check_hub_folder(folder: str | Path, require_card: bool = True) -> FolderReport:
    """Check that ``folder`` holds config, safetensors weights, tokenizer, code and (optionally) a card."""
    folder = Path(folder)
    report = FolderReport(folder=folder)
    if not folder.is_dir():
        report.problems.append("folder does not exist")
        return report

    config_path = folder / "config.json"
    config: dict = {}
    if not config_path.is_file():
        report.problems.append("config.json is missing")
    else:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            report.problems.append(f"config.json is not valid JSON ({error})")
    report.model_type = config.get("model_type")

    if report.model_type == "rexbert":
        auto_map = config.get("auto_map") or {}
        missing = [name for name in REQUIRED_AUTO_CLASSES if name not in auto_map]
        if missing:
            report.problems.append(f"config.json auto_map lacks {', '.join(missing)}")
        for code_file in REMOTE_CODE_FILES:
            if not (folder / code_file).is_file():
                report.problems.append(f"{code_file} is missing (needed for trust_remote_code)")
    elif config and report.model_type != "modernbert":
        report.problems.append(
            f"config.json model_type is {report.model_type!r}, expected 'rexbert' or 'modernbert'"
        )

    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        report.problems.append("no *.safetensors weights")
    unsafe = sorted(
        name for name in files_to_upload(folder) if Path(name).suffix in FORBIDDEN_WEIGHT_SUFFIXES
    )
    if unsafe:
        report.problems.append(f"pickle-based weight files must not be published: {', '.join(unsafe)}")

    for tokenizer_file in TOKENIZER_FILES:
        if not (folder / tokenizer_file).is_file():
            report.problems.append(f"{tokenizer_file} is missing")

    if require_card and not (folder / "README.md").is_file():
        report.problems.append("README.md (model card) is missing: run `rexbert card` first")
    return report


def count_parameters(folder: str | Path) -> int:
    """Number of stored parameters, read from safetensors headers without loading tensors.

    Tied weights are stored once, so this matches ``model.num_parameters()`` for tied models.
    """
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                numel = 1
                for dim in handle.get_slice(name).get_shape():
                    numel *= dim
                total += numel
    return total
