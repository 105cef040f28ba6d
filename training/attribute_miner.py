"""A lightweight entity/attribute miner for product text (Guided MLM spans).

Finds, as character spans: attribute values of ``Key: Value`` pairs, dimensions (``30 x 20 cm``),
sizes with units (``500 GB``, ``6 pc(s)``), model numbers / SKUs (``006R90321``, ``WH-1000XM4``),
product types (a built-in noun lexicon, extendable) and brands (a lexicon, learned from titles with
:meth:`AttributeMiner.fit` or given). Overlaps keep the longest span. Char spans become token spans
through the tokenizer's offset mapping (:func:`char_to_token_spans`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_UNITS = (
    r"mm|cm|m|km|in|inch|inches|ft|\"|kg|g|mg|lb|lbs|oz|ml|l|L|TB|GB|MB|kB|GHz|MHz|Hz|W|kW|V|mAh|Wh"
    r"|pc\(s\)|pcs|pc|pack|ct|count|MP|dpi|ppm|rpm|°C|°F|%"
)
_NUM = r"\d+(?:[.,]\d+)?"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "dimension": re.compile(rf"\b{_NUM}\s?[x×X]\s?{_NUM}(?:\s?[x×X]\s?{_NUM})?(?:\s?(?:{_UNITS}))?(?![\w])"),
    "size_unit": re.compile(rf"(?<![\w.]){_NUM}\s?(?:{_UNITS})(?![\w])"),
    # letters and digits mixed, >= 4 chars, optional -,/ separators: SKUs and model numbers
    "model_number": re.compile(
        r"(?<![\w-])(?=[\w/-]*\d)(?=[\w/-]*[A-Za-z])[A-Za-z0-9]{2,}(?:[-/][A-Za-z0-9]+)*(?![\w-])"
    ),
    "attribute_value": re.compile(r"\b([A-Z][A-Za-z ]{1,30}):[ \t]*([^\n,;:|]{1,60}?)(?=\s*(?:[\n,;|]|$))"),
}
_PRODUCT_TYPE_WORDS = """
adapter backpack bag battery blender bottle bracelet cable camera cartridge case charger chair
coat controller cover cream desk dress drive earbuds earphones headphones headset heater helmet
hoodie jacket jeans keyboard kettle lamp laptop lens light memory microphone monitor mouse mug
necklace notebook pants pen phone pillow printer projector purse ring router sandals scanner
server shampoo shirt shoes shorts skirt smartphone sneakers sofa speaker switch table tablet tent
toner toy tripod tv vacuum wallet watch
"""
PRODUCT_TYPES = frozenset(_PRODUCT_TYPE_WORDS.split())


@dataclass(frozen=True)
class MinedSpan:
    """A character span ``text[start:end]`` and what it is."""

    start: int
    end: int
    kind: str


class AttributeMiner:
    """Mine attribute/entity spans from product text.

    Args:
        brands: known brand names (case-sensitive, matched as whole words).
        product_types: nouns naming product types (case-insensitive; plurals with -s/-es match).
    """

    def __init__(self, brands: Iterable[str] = (), product_types: Iterable[str] = PRODUCT_TYPES) -> None:
        self.brands = {b for b in brands if b and not b.isspace()}
        self.product_types = {p.lower() for p in product_types}
        self._brand_re = self._compile_brands()
        types = "|".join(sorted((re.escape(p) for p in self.product_types), key=len, reverse=True))
        self._type_re = re.compile(rf"\b(?:{types})(?:e?s)?\b", re.IGNORECASE) if types else None

    def _compile_brands(self) -> re.Pattern[str] | None:
        if not self.brands:
            return None
        alternatives = "|".join(sorted((re.escape(b) for b in self.brands), key=len, reverse=True))
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")

    def fit(self, titles: Iterable[str], min_count: int = 2) -> AttributeMiner:
        """Learn brands: capitalised first words of titles seen at least ``min_count`` times
        (product titles usually start with the brand, e.g. ``Xerox 006R90321 toner ...``)."""
        counts: Counter[str] = Counter()
        for title in titles:
            words = title.split(maxsplit=1)
            if words and words[0][:1].isupper() and words[0].isalpha() and len(words[0]) > 1:
                counts[words[0]] += 1
        learned = {w for w, c in counts.items() if c >= min_count and w.lower() not in self.product_types}
        self.brands |= learned
        self._brand_re = self._compile_brands()
        return self

    def mine(self, text: str) -> list[MinedSpan]:
        """All non-overlapping spans in ``text`` (longest wins), sorted by start."""
        found: list[MinedSpan] = []
        for kind, pattern in _PATTERNS.items():
            for match in pattern.finditer(text):
                group = 2 if kind == "attribute_value" else 0  # mask the value, keep the key as context
                start, end = match.span(group)
                if end > start and not text[start:end].isspace():
                    found.append(MinedSpan(start, end, kind))
        for kind, pattern in (("brand", self._brand_re), ("product_type", self._type_re)):
            if pattern is not None:
                found.extend(MinedSpan(*m.span(), kind) for m in pattern.finditer(text))
        found.sort(key=lambda s: (-(s.end - s.start), s.start))
        taken: list[MinedSpan] = []
        for span in found:
            if all(span.end <= t.start or span.start >= t.end for t in taken):
                taken.append(span)
        return sorted(taken, key=lambda s: s.start)


def char_to_token_spans(
    offsets: Sequence[tuple[int, int]], spans: Sequence[MinedSpan]
) -> list[tuple[int, int]]:
    """Map char spans to token spans [start, end) using a tokenizer offset mapping.

    A token belongs to a span when their character ranges overlap; special tokens (offset (0, 0))
    never do. Spans that cover no token are dropped.
    """
    import numpy as np

    arr = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    real = np.flatnonzero(arr[:, 1] > arr[:, 0])  # skip special tokens; the rest are monotonic
    starts, ends = arr[real, 0], arr[real, 1]
    token_spans: list[tuple[int, int]] = []
    for span in spans:
        first = int(np.searchsorted(ends, span.start, side="right"))  # first token ending after start
        last = int(np.searchsorted(starts, span.end, side="left")) - 1  # last token starting before end
        if first <= last:
            token_spans.append((int(real[first]), int(real[last]) + 1))
    return token_spans
