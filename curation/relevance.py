"""The written, versioned operational definition of commerce relevance, and strict answer parsing.

A prompt version is a file (``curation/prompts/<version>.yaml``): the definition shown to chat labelers, and
the prototype sentences the offline zero-shot labeler embeds. Labels are cached under a hash of the wording,
so editing a file invalidates its cached labels; a revision should still get a new version name so every
audit round stays attributable to the exact wording that produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RELEVANT = 1
NOT_RELEVANT = 0
LABEL_NAMES = {RELEVANT: "Relevant", NOT_RELEVANT: "Not relevant"}
PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class PromptVersion:
    version: str
    definition: str
    relevant_prototypes: tuple[str, ...]
    not_relevant_prototypes: tuple[str, ...]

    @property
    def cache_key(self) -> str:
        """The version plus a hash of its wording: an edited prompt file never reuses stale labels."""
        import hashlib

        wording = "\x00".join(
            (self.definition, *self.relevant_prototypes, "\x01", *self.not_relevant_prototypes)
        )
        return f"{self.version}:{hashlib.sha256(wording.encode()).hexdigest()[:12]}"

    def messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages for one document (system = the definition; user = the document)."""
        return [
            {"role": "system", "content": self.definition},
            {
                "role": "user",
                "content": f"Document:\n<<<\n{text}\n>>>\nAnswer with exactly one of: "
                f"Relevant, Not relevant.",
            },
        ]


def load_prompt(folder: str | Path, version: str) -> PromptVersion:
    """Read ``<folder>/<version>.yaml`` (keys: definition, relevant_prototypes, not_relevant_prototypes).

    The version string is part of every cache key, so a revised definition must get a new file name.
    """
    import yaml

    from rexbert_common.errors import UserError

    path = Path(folder) / f"{version}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(folder).glob("*.yaml"))
        raise UserError(f"relevance prompt {path} not found (versions in {folder}: {known})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    missing = [k for k in ("definition", "relevant_prototypes", "not_relevant_prototypes") if not data.get(k)]
    if missing:
        raise UserError(f"relevance prompt {path}: missing {missing}")
    return PromptVersion(
        version=version,
        definition=" ".join(str(data["definition"]).split()),
        relevant_prototypes=tuple(data["relevant_prototypes"]),
        not_relevant_prototypes=tuple(data["not_relevant_prototypes"]),
    )


def get_prompt(version: str) -> PromptVersion:
    """A packaged prompt version (``curation/prompts/<version>.yaml``)."""
    return load_prompt(PROMPTS_DIR, version)


_ANSWER = re.compile(r"^\W*(not\s+relevant|irrelevant|relevant)\W*$", re.IGNORECASE)


class MalformedAnswer(ValueError):
    """The model answered something other than the two allowed labels (counted, never coerced)."""


def parse_answer(answer: str) -> int:
    """Map a model answer to a label; anything but a clean 'Relevant' / 'Not relevant' is malformed.

    Only surrounding whitespace/punctuation is tolerated: an answer like "Relevant? maybe not" is
    ambiguous and
    must be counted as malformed rather than guessed.
    """
    if not isinstance(answer, str):
        raise MalformedAnswer(f"non-text answer {answer!r}")
    match = _ANSWER.match(answer.strip())
    if not match:
        raise MalformedAnswer(f"unparseable answer {answer[:80]!r}")
    word = match.group(1).lower()
    return RELEVANT if word == "relevant" else NOT_RELEVANT
