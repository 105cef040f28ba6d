"""Boilerplate and advertising lines: navigation, cookie / consent banners, newsletter and social prompts,
ad labels, copyright footers.

Commerce lines ("Add to cart", "Free shipping", prices) are content for this corpus and are never matched.
The check is per line and only for short lines, so a sentence that merely mentions cookies survives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BOILERPLATE_PATTERNS = (
    r"\b(we|this (web)?site) uses? cookies\b",
    r"\baccept (all )?cookies\b",
    r"\bcookie (policy|settings|preferences)\b",
    r"\bprivacy policy\b.*\bterms\b|\bterms (of (use|service)|and conditions)\b.*\bprivacy\b",
    r"^\W*(privacy policy|terms of (use|service)|terms and conditions|cookie policy|site ?map)\W*$",
    r"\ball rights reserved\b",
    r"^\W*(©|\(c\)|copyright)\s*\d{4}",
    r"\b(sign up|subscribe) (for|to) (our|the) (newsletter|mailing list)\b",
    r"\bshare (this|on) (facebook|twitter|pinterest|linkedin|whatsapp|email)\b",
    r"^\W*(share|tweet|pin it|email|print)(\W+(share|tweet|pin it|email|print|facebook|twitter))+\W*$",
    r"\bfollow us on\b",
    r"^\W*skip to (main )?content\W*$",
    r"^\W*(home|menu|search|log ?in|sign ?in|register|my account)(\s*[|>/»·]\s*\w[\w ]*)+\W*$",
    r"^\W*(advertisement|sponsored( content| links?)?|ads by \w+|adchoices)\W*$",
    r"\bclick here to (subscribe|download|learn more)\b",
    r"\b(javascript is|enable javascript|your browser does not support)\b",
)


class BoilerplateRemover:
    """``clean(text) -> (cleaned text, lines removed)``."""

    def __init__(self, extra_patterns: Sequence[str] = (), max_line_words: int = 25):
        self.pattern = re.compile(
            "|".join(f"(?:{p})" for p in (*BOILERPLATE_PATTERNS, *extra_patterns)), re.I
        )
        self.max_line_words = max_line_words

    def is_boilerplate(self, line: str) -> bool:
        stripped = line.strip()
        return (
            bool(stripped)
            and len(stripped.split()) <= self.max_line_words
            and bool(self.pattern.search(stripped))
        )

    def clean(self, text: str) -> tuple[str, int]:
        lines = text.split("\n")
        kept = [line for line in lines if not self.is_boilerplate(line)]
        return "\n".join(kept).strip(), len(lines) - len(kept)
