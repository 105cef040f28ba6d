"""A lightweight entity/attribute miner for product text and web pages (Guided MLM spans).

Finds, as character spans: attribute values of ``Key: Value`` pairs (within one sentence), dimensions
(``30 x 20 cm``), sizes with units (``500 GB``, ``6 pc(s)``), model numbers / SKUs (``006R90321``,
``WH-1000XM4``; not ordinals, resolutions or formats such as ``2nd``, ``4K``, ``mp3``), product types (a
built-in noun lexicon, extendable) and brands (a lexicon, learned from a bounded sample of documents with
:meth:`AttributeMiner.fit`, or given). Overlaps keep the longest span. Char spans become token spans
through the tokenizer's offset mapping (:func:`char_to_token_spans`; :func:`encoding_token_spans`).

Hand-written rules on purpose: no maintained library mines product attributes without a trained model,
and the miner must run inside the tokenization workers at corpus scale. Its precision on a hand-labelled
sample of web and product text is measured in tests/training/test_attribute_miner.py (docs/training.md).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

_UNITS = (
    r"mm|cm|m|km|in|inch|inches|ft|\"|kg|g|mg|lb|lbs|oz|ml|l|L|TB|GB|MB|kB|GHz|MHz|Hz|W|kW|V|mAh|Wh"
    r"|pc\(s\)|pcs|pc|pack|ct|count|MP|dpi|ppm|rpm|°C|°F|%"
)
_NUM = r"\d+(?:[.,]\d+)?"
_NUM_REST = r"\d*(?:[.,]\d+)?"  # _NUM after its first digit
# Patterns open with a character class, their left-boundary assertion placed after it: `re` then skips to
# the candidates (digits, capitals) in C instead of trying a match at every position.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "dimension": re.compile(
        rf"\d(?<!\w\d){_NUM_REST}\s?[x×X]\s?{_NUM}(?:\s?[x×X]\s?{_NUM})?(?:\s?(?:{_UNITS}))?(?![\w])"
    ),
    "size_unit": re.compile(rf"\d(?<![\w.]\d){_NUM_REST}\s?(?:{_UNITS})(?![\w])"),
    # an upper-case letter and at least two digits, >= 4 chars, optional -,/ separators: SKUs, model numbers
    "model_number": re.compile(
        r"(?<![\w-])(?=[\w/-]*\d[\w/-]*\d)(?=[\w/-]*[A-Z])[A-Za-z0-9]{2,}(?:[-/][A-Za-z0-9]+)*(?![\w-])"
    ),
    # "Key: value" with a short key and a short value ending at a separator or the end of the sentence
    # (a "." not followed by a word character): "Color: Navy. Best in ..." yields "Navy"
    "attribute_value": re.compile(
        r"([A-Z](?<!\w[A-Z])[A-Za-z]*(?: [A-Za-z]+){0,2}):[ \t]*"
        r"([\w$€£#+-](?:[^\x00-\x1f,;:|.!?()\"]|\.(?=\w)){0,39}?)(?=\s*(?:[\n,;|!?]|\.(?!\w)|$))"
    ),
}
# digits + a suffix: ordinals, decades, times, video resolutions, formats -- words, not model numbers
_NOT_MODEL_NUMBER = re.compile(
    r"\d+(?:st|nd|rd|th|s|am|pm|p|i|k|D|G|fps|px)|[A-Za-z]{1,4}\d{1,2}", re.IGNORECASE
)
# a separated part made of letters only is a word ("38-year-old", "Under-15"), unless a short code ("WH")
_WORD_PART = re.compile(r"(?:^|[-/])(?![A-Z]{1,4}(?:[-/]|$))[A-Za-z]+(?:[-/]|$)")
_MAX_VALUE_WORDS = 5
# capitalised title openers that are not brands (besides English stop words)
_TITLE_OPENERS = """
best top new free how why what when where who which review reviews guide introducing official
welcome home about news buy shop get our your my this these those cheap sale
"""
_TITLE_WORDS = frozenset(_TITLE_OPENERS.split())
# nouns that name products in web text too: words with common other senses ("case", "cover", "light",
# "switch", "ring", "watch", "drive", "table", "memory", "mouse", "server") are left out
_PRODUCT_TYPE_WORDS = """
adapter backpack battery blender bracelet cable camera cartridge charger coat controller desk dress
earbuds earphones headphones headset heater helmet hoodie jacket jeans keyboard kettle lamp laptop
lens microphone monitor mug necklace notebook pants phone pillow printer projector purse router
sandals scanner shampoo shirt shoes shorts skirt smartphone sneakers sofa speakers tablet tent toner
tripod tv vacuum wallet
"""
PRODUCT_TYPES = frozenset(_PRODUCT_TYPE_WORDS.split())
_LOWER_WORD = re.compile(r"(?<![\w-])[a-z][a-z]+(?![\w-])")
_WORD_RUN = re.compile(r"\w+")


class MinedSpan(NamedTuple):
    """A character span ``text[start:end]`` and what it is (a tuple: millions are made per shard)."""

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
        self.documents_fitted = 0  # documents seen by the last fit()
        self.product_types = {p.lower() for p in product_types}
        self._compile_brands()
        # one-word types are looked up per word (a lexicon-sized regex alternation is slow on long texts)
        self._type_words = {p for p in self.product_types if _WORD_RUN.fullmatch(p)}
        # every form a one-word type matches (itself, plural -s / -es), for one set lookup per word
        self._type_forms = {w + suffix for w in self._type_words for suffix in ("", "s", "es")}
        others = sorted((re.escape(p) for p in self.product_types - self._type_words), key=len, reverse=True)
        self._type_re = re.compile(rf"\b(?:{'|'.join(others)})(?:e?s)?\b", re.IGNORECASE) if others else None

    def _compile_brands(self) -> None:
        """One-word brands are looked up per word; others (``Tripp Lite``) go through a regex."""
        self._brand_words = {b for b in self.brands if _WORD_RUN.fullmatch(b)}
        others = sorted((re.escape(b) for b in self.brands - self._brand_words), key=len, reverse=True)
        self._brand_re = re.compile(rf"(?<!\w)(?:{'|'.join(others)})(?!\w)") if others else None

    def fit(
        self, documents: Iterable[str], min_count: int = 2, max_lowercase_share: float = 0.2
    ) -> AttributeMiner:
        """Learn brands from documents whose first line is a title (a bounded sample of a corpus).

        Product titles usually start with the brand (``Xerox 006R90321 toner ...``); web page titles
        start with ordinary words (``The``, ``How``, ``Best``). A capitalised first word is kept when it
        starts at least ``min_count`` titles, is no English stop word or title opener, and is written
        in lower case in at most ``max_lowercase_share`` of its uses elsewhere in the documents
        (brands keep their capital; ordinary words do not).
        """
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        firsts: Counter[str] = Counter()
        lowercase: Counter[str] = Counter()
        self.documents_fitted = 0
        for document in documents:
            self.documents_fitted += 1
            title = document.split("\n", 1)[0]
            words = title.split(maxsplit=1)
            if words and words[0][:1].isupper() and words[0].isalpha() and len(words[0]) > 1:
                firsts[words[0]] += 1
            lowercase.update(_LOWER_WORD.findall(document))
        common = ENGLISH_STOP_WORDS | _TITLE_WORDS | self.product_types
        learned = {
            word
            for word, count in firsts.items()
            if count >= min_count
            and word.lower() not in common
            and lowercase[word.lower()] <= max_lowercase_share * (count + lowercase[word.lower()])
        }
        self.brands |= learned
        self._compile_brands()
        return self

    def to_json(self) -> dict:
        return {"brands": sorted(self.brands), "product_types": sorted(self.product_types)}

    @classmethod
    def from_json(cls, obj: dict) -> AttributeMiner:
        return cls(obj["brands"], obj["product_types"])

    def mine(self, text: str) -> list[MinedSpan]:
        """All non-overlapping spans in ``text`` (longest wins), sorted by start."""
        found: list[tuple[int, int, str]] = []  # (start, end, kind): MinedSpan only for the kept ones
        for kind, pattern in _PATTERNS.items():
            if kind == "attribute_value" and ":" not in text:  # its one required character, found in C
                continue
            for match in pattern.finditer(text):
                token = match.group()
                if kind == "model_number" and (
                    _NOT_MODEL_NUMBER.fullmatch(token) or _WORD_PART.search(token)
                ):
                    continue
                if kind == "attribute_value" and len(match.group(2).split()) > _MAX_VALUE_WORDS:
                    continue
                group = 2 if kind == "attribute_value" else 0  # mask the value, keep the key as context
                start, end = match.span(group)
                if end > start and not text[start:end].isspace():
                    found.append((start, end, kind))
        if self._brand_words or self._type_words:  # whole words: \w runs, as (?<!\w) / \b delimit them
            brands, types = self._brand_words, self._type_forms
            for match in _WORD_RUN.finditer(text):
                word = match.group()
                if word in brands:
                    found.append((*match.span(), "brand"))
                if word.casefold() in types:  # a product type or its plural, in any case
                    found.append((*match.span(), "product_type"))
        for kind, pattern in (("brand", self._brand_re), ("product_type", self._type_re)):
            if pattern is not None:
                found.extend((*m.span(), kind) for m in pattern.finditer(text))
        found.sort(key=lambda s: (s[0] - s[1], s[0]))  # longest first, then leftmost (stable)
        covered = bytearray(len(text))  # characters of the spans taken so far
        taken: list[MinedSpan] = []
        for start, end, kind in found:
            if covered.find(1, start, end) == -1:  # overlaps no taken span
                covered[start:end] = b"\x01" * (end - start)
                taken.append(MinedSpan(start, end, kind))
        return sorted(taken, key=lambda s: s.start)


def char_to_token_spans(
    offsets: Sequence[tuple[int, int]], spans: Sequence[MinedSpan]
) -> list[tuple[int, int]]:
    """Map char spans to token spans [start, end) using a tokenizer offset mapping.

    A token belongs to a span when their character ranges overlap; special tokens (offset (0, 0))
    never do. Spans that cover no token are dropped.
    """
    return char_to_token_spans_batch([offsets], [spans])[0]


def encoding_token_spans(encoding, spans: Sequence[MinedSpan]) -> list[tuple[int, int]] | None:
    """:func:`char_to_token_spans` through a ``tokenizers.Encoding``'s own lookups, without building its
    offset list (which costs more than the lookups on short texts; each lookup scans the offsets, so long
    documents should take :func:`char_to_token_spans_batch`). None when a span's first or last character
    lies in no token: then only the offsets can say which tokens it meets."""
    found = []
    for span in spans:
        first, last = encoding.char_to_token(span.start), encoding.char_to_token(span.end - 1)
        if first is None or last is None:
            return None
        # a character split over several byte tokens: char_to_token names the first, the span takes all
        while (chars := encoding.token_to_chars(last + 1)) is not None and chars[0] < span.end:
            last += 1
        found.append((first, last + 1))
    return found


def char_to_token_spans_batch(
    offsets: Sequence[Sequence[tuple[int, int]]], spans: Sequence[Sequence[MinedSpan]]
) -> list[list[tuple[int, int]]]:
    """:func:`char_to_token_spans` of many documents in a few numpy calls (per-call overhead dominates
    short product texts): each document's characters are shifted by ``doc × stride`` so one sorted array
    holds every document's tokens, and a span can only land among its own document's tokens."""
    import itertools

    import numpy as np

    found: list[list[tuple[int, int]]] = [[] for _ in offsets]
    span_docs = [d for d, doc_spans in enumerate(spans) for _ in doc_spans]
    if not span_docs:
        return found
    tokens = np.fromiter(map(len, offsets), dtype=np.int64, count=len(offsets))
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(offsets))  # 3× np.asarray's speed
    arr = np.fromiter(flat, dtype=np.int64, count=2 * int(tokens.sum())).reshape(-1, 2)  # (tokens, 2)
    bounds = np.fromiter(
        itertools.chain.from_iterable((s.start, s.end) for doc_spans in spans for s in doc_spans),
        dtype=np.int64,
        count=2 * len(span_docs),
    ).reshape(-1, 2)  # (spans, 2)
    stride = int(max(arr.max(initial=0), bounds.max())) + 1
    first_token = np.cumsum(tokens) - tokens  # (docs,) index of each document's first token in arr
    token_doc = np.repeat(np.arange(len(offsets), dtype=np.int64), tokens)
    real = np.flatnonzero(arr[:, 1] > arr[:, 0])  # skip special tokens; the rest are monotonic per doc
    shift = token_doc[real] * stride
    starts, ends = arr[real, 0] + shift, arr[real, 1] + shift
    docs = np.asarray(span_docs, dtype=np.int64)
    shifted = bounds + (docs * stride)[:, None]
    first = np.searchsorted(ends, shifted[:, 0], side="right")  # first token ending after a span's start
    last = np.searchsorted(starts, shifted[:, 1], side="left") - 1  # last token starting before its end
    keep = np.flatnonzero(first <= last)
    local = first_token[docs[keep]]
    for doc, a, b in zip(
        docs[keep].tolist(), (real[first[keep]] - local).tolist(), (real[last[keep]] + 1 - local).tolist()
    ):
        found[doc].append((a, b))
    return found
