"""Per-step counters in datatrove's style: ``kept`` and ``dropped_<reason>`` (plus token totals)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping


class StepStats:
    """Counts what one step kept and why it dropped the rest.

    Example:
        >>> s = StepStats("quality"); s.keep(); s.drop("gopher_short_doc"); s.as_dict()
        {'kept': 1, 'dropped_gopher_short_doc': 1}
    """

    def __init__(self, name: str, counts: Mapping[str, int] | None = None):
        self.name = name
        self.counts: Counter[str] = Counter(counts or {})

    def keep(self, n: int = 1, tokens: int = 0) -> None:
        self.counts["kept"] += n
        if tokens:
            self.counts["kept_tokens"] += tokens

    def drop(self, reason: str, n: int = 1, tokens: int = 0) -> None:
        self.counts[f"dropped_{reason}"] += n
        if tokens:
            self.counts[f"dropped_{reason}_tokens"] += tokens

    def add(self, key: str, n: int = 1) -> None:
        """A free-form counter (e.g. ``malformed_answers``) that is neither a keep nor a drop."""
        self.counts[key] += n

    def merge(self, other: StepStats | Mapping[str, int]) -> StepStats:
        self.counts.update(other.counts if isinstance(other, StepStats) else other)
        return self

    @property
    def kept(self) -> int:
        return self.counts["kept"]

    @property
    def dropped(self) -> int:
        return sum(
            v for k, v in self.counts.items() if k.startswith("dropped_") and not k.endswith("_tokens")
        )

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.counts.items(), key=lambda kv: (kv[0] != "kept", kv[0]))}


def merge_all(name: str, parts: Iterable[Mapping[str, int]]) -> StepStats:
    total = StepStats(name)
    for part in parts:
        total.merge(part)
    return total
