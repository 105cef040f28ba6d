"""What a user reads on the console of a command, for tests that count its lines."""

from __future__ import annotations

import re

PROGRESS_BAR = r"\d+%\||\d+doc \[|it/s\]|doc/s\]"  # tqdm's bars (several tasks' bars may share a line)


def console_lines(text: str) -> list[str]:
    """The lines a user reads: tqdm's redrawn bars (\\r-separated frames) and blank lines left out."""
    lines = [line.split("\r")[-1].strip() for line in text.splitlines()]
    return [line for line in lines if line and not re.search(PROGRESS_BAR, line)]
