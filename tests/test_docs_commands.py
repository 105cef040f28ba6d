"""Every command printed in README.md and docs/*.md that can run offline runs, exactly as written (slow).

Commands are the lines of the ```bash blocks (backslash continuations and here-documents joined). Each
document's commands run in order, in a scratch folder that mirrors the repository (so relative paths and
``outputs/`` resolve as in a checkout, without writing into it), with the repository's ``rexbert`` and
``python`` first on PATH, offline, on the configured data folder (the embedded sample by default).

A command that cannot run here is listed in :data:`NOT_RUN` with the reason; a new command in the docs
either runs or is listed, so the docs cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)

# pattern (searched in the command) -> why it does not run in the test suite
NOT_RUN = {
    r"^make (demo|test)\b": "the Makefile's targets build .venv/ from PyPI; CI runs them itself",
    r"\[--|\.\.\.|<[a-z_]+>": "a usage template with placeholders, not a literal command",
    r"answerdotai/|thebajajra/|bert-base-uncased|tasksource/|jhu-clsp/|hf://|--hub\b|--push-to|HfApi": (
        "needs the Hugging Face Hub"
    ),
    r"recipes/(micro|mini|base|large)\.yaml": "a paper recipe: ModernBERT's tokenizer (Hub), paper scale",
    r"cpu_study\.yaml": "an hours-long study",
    r"CUDA_VISIBLE_DEVICES|gpu_micro\.yaml|--executor (ray|slurm)|squeue|scontrol|srun|prod\.yaml": (
        "needs GPUs or a cluster (Slurm, Ray)"
    ),
    r"\baccelerate launch": "several processes (the 2-process CPU run has its own test in training/)",
    r"\bpytest\b": "runs the test suite itself",
    r"my_curation\.yaml|my-model|pairs\.csv|outputs/rexbert-(micro|mini)|outputs/base/|runs/ ": (
        "stands for the reader's own model, data or config"
    ),
}


@dataclass
class Command:
    document: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}: {self.text}"


def commands(document: Path) -> list[Command]:
    """The shell commands of ``document`` in order (comment-only lines dropped, continuations joined)."""
    text = document.read_text(encoding="utf-8")
    found = []
    for block in SHELL_BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            start, current = i, lines[i]
            while current.endswith("\\") and i + 1 < len(lines):  # kept as written: bash joins them
                i += 1
                current += "\n" + lines[i]
            heredoc = re.search(r"<<-?'?(\w+)'?", current)
            if heredoc:
                while i + 1 < len(lines) and lines[i].strip() != heredoc.group(1):
                    i += 1
                    current += "\n" + lines[i]
            i += 1
            if current.strip() and not current.lstrip().startswith("#"):
                found.append(Command(document, first_line + start, current.strip()))
    return found


def reason_not_run(command: Command) -> str | None:
    return next((why for pattern, why in NOT_RUN.items() if re.search(pattern, command.text)), None)


def _scratch(folder: Path) -> Path:
    """A folder that looks like the repository root (tracked top-level entries linked, outputs/ empty)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in sorted({line.split("/", 1)[0] for line in tracked.stdout.splitlines()}):
        (folder / name).symlink_to(ROOT / name)
    return folder


def _environment(folder: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HOME=str(folder / "home"),  # no user config or cache outside the scratch folder is read or written
        HF_HOME=os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
    )
    return env


def test_the_not_run_list_is_current_and_the_stage_guides_run_something():
    """Fast: the commands the slow test runs. Every entry of NOT_RUN still matches a printed command (no
    stale excuses), and each stage guide has commands that run."""
    listed = [c for doc in DOCUMENTS for c in commands(doc)]
    for pattern in NOT_RUN:
        assert any(re.search(pattern, c.text) for c in listed), f"NOT_RUN entry {pattern!r} matches nothing"
    runs = {c.document.name for c in listed if reason_not_run(c) is None}
    assert {"training.md", "curation.md", "evaluation.md"} <= runs


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_printed_commands_run_as_written(document, tmp_path):
    folder = _scratch(tmp_path)
    env = _environment(tmp_path)
    failures = []
    for command in commands(document):
        if reason_not_run(command):
            continue
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command.text],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if result.returncode != 0:
            failures.append(f"{command}\n  exit {result.returncode}: {result.stderr.strip()[-1500:]}")
    assert not failures, "\n".join(failures)
