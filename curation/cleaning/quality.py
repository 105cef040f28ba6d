"""Gopher / C4 / FineWeb quality heuristics with named drop reasons, sharing one tokenisation per document.

The rules and thresholds follow the papers and datatrove's filters (GopherQualityFilter, C4QualityFilter in
FineWeb's configuration, FineWebQualityFilter); the reason names are datatrove's. Instead of spaCy's tokenizer
(datatrove's word splitter) one compiled regex emulates its English rules (punctuation and hyphen infixes
split
off, URLs and decimal numbers kept whole); tests check the decisions equal datatrove's on real documents.
"""

from __future__ import annotations

import re
import unicodedata

from curation.config import QualityConfig

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# spaCy English keeps these abbreviations whole (tokenizer exceptions); a trailing "." is part of the word.
_ABBREVIATIONS = (
    "Mr",
    "Mrs",
    "Ms",
    "Dr",
    "St",
    "Jr",
    "Sr",
    "Mt",
    "Co",
    "Corp",
    "Inc",
    "Ltd",
    "Bros",
    "vs",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Sept",
    "Oct",
    "Nov",
    "Dec",
    "Gen",
    "Gov",
    "Rev",
    "Sen",
    "Rep",
    "Capt",
    "Lt",
    "Sgt",
    "Prof",
    "Ph.D",
    "a.m",
    "p.m",
)
_UNITS = "(?:km|dm|cm|mm|nm|m|ha|yd|ft|in|kg|mg|g|lb|lbs|oz|mph|kmh|t|mb|gb|tb|kb|MB|GB|TB|KB|T|G|M|K)"
# One findall emulates spaCy's English tokenizer closely enough for ratio thresholds: URLs and emails whole,
# contractions split (do + n't, it + 's), abbreviations keep their ".", and inside an alphanumeric word a
# connector is kept exactly where spaCy's infix rules do not split: "." unless lower->Upper, "," / "/" / ":"
# between or before digits, "-" between a letter and a digit, "'" inside a word. Punctuation runs "..." / "--"
# stay whole; any other symbol is its own token.
_CONNECTOR = (
    r"(?:\.(?!(?<=[a-z]\.)[A-Z])|(?<=\d),(?=\w)|,(?=\d)|[/:](?=\d)|(?<=[^\W\d_])-(?=\d)"
    r"|(?<=\w)[@;*(](?=\w)|(?<=[^\W\d_])\+(?=\w)|[’'](?![sS]\b)(?=\w))"
)
_PRONOUNS = "I|you|he|she|it|we|they|You|He|She|It|We|They|that|That|there|There|who|Who|what|What"
_WORD = re.compile(
    r"(?:https?://|www\.)\S*[^\s.,;:!?)\"']"
    r"|[\w.+-]+@[\w-]+\.[\w.]+"
    r"|(?<!\S)@[^\s@]@(?!\S)"  # WikiText's @-@ / @.@ / @,@ stay whole
    r"|n[’']t\b|[’'](?:s|re|ve|ll|d|m|S|RE|VE|LL|D|M)\b"
    r"|\b(?:" + _PRONOUNS + r")(?=[’'](?:re|ve|ll|d|m)\b)|\b[Cc]an(?=not\b)"
    r"|\b[A-Z]\.(?=\s|$)"
    r"|\b(?:" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")\.(?=\s|$)"
    r"|[^\W\d_]+(?:\.[^\W\d_])+\.(?=\s|$)"
    r"|\w+?(?=n[’']t\b)"
    r"|\d+(?:[.,]\d+)*(?=" + _UNITS + r"(?!\w))"
    r"|\w+-+(?=[^\w\s-])\S*|\w+-+(?=\s|$)"  # spaCy only splits a dash run that precedes a letter
    r"|\w+(?:" + _CONNECTOR + r"\w+)*?(?<=\d)(?=" + _UNITS + r"(?!\w))"  # unit suffix after a digit
    r"|\w+(?:" + _CONNECTOR + r"\w+)*"
    r"|\.\.\.+|--+|''|’’|[^\w\s]",
)
# spaCy sentencizer's most common sentence-final characters
_SENT_PUNCT = frozenset({".", "!", "?", "\u3002", "\uff01", "\uff1f", "\u0964", "\u061f", "\u06d4", "\u0589"})
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


def _terminal_punctuation() -> tuple[str, ...]:
    from datatrove.utils.text import TERMINAL_PUNCTUATION  # the same multi-script set FineWeb uses

    return tuple(sorted(TERMINAL_PUNCTUATION))


TERMINAL = _terminal_punctuation()


def _punctuation_set() -> frozenset[str]:
    from datatrove.utils.text import PUNCTUATION_SET  # Gopher's notion of a "symbol", as datatrove defines it

    return frozenset(PUNCTUATION_SET)


PUNCTUATION = _punctuation_set()


def is_symbol_word(word: str) -> bool:
    return all(ch in PUNCTUATION for ch in word)


def _spacy_words(text: str) -> list[str]:
    from datatrove.utils.text import split_into_words

    return split_into_words(text)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text)


def count_sentences(words: list[str]) -> int:
    """spaCy sentencizer rule: a new sentence starts at the first non-punctuation token after a sentence-final
    character."""
    count, seen_end = 1, False
    for w in words:
        if w in _SENT_PUNCT:
            seen_end = True
        elif seen_end and not all(unicodedata.category(ch)[0] == "P" for ch in w):
            count += 1
            seen_end = False
    return count


class _Borderline(Exception):
    """A token-dependent statistic is too close to its threshold to trust the regex tokenisation."""


# Hybrid mode: how far (in the statistic's own unit) the regex tokenisation may drift from spaCy's before a
# decision is re-checked with spaCy. Measured on real docs: alpha ratios differ by <= ~0.04, counts by a
# few %.
_TOL_RATIO = 0.05
_TOL_AVG_LEN = 0.25
_TOL_SENTENCES = 2
# Chunks where spaCy's prefix/suffix/infix rules and the regex disagree by more than a tolerance can absorb:
# dash runs or sentence punctuation glued between words, and wide/CJK punctuation.
_RISKY = re.compile(r"\S(?:--|—|[.!?;:]-)\S|\w[!?;\"()\[\]]+\w|[\u2010-\u205e\u3000-\u303f\uff00-\uffef]")


class QualityFilter:
    """``check(text) -> (reason | None, text)``: the first failing rule's name, and the (C4-line-filtered)
    text.

    tokenizer ``regex``: fast spaCy emulation; ``spacy``: datatrove's word splitter (exact parity, slow);
    ``hybrid``: regex, but any decision whose token statistic lies within a tolerance of its threshold is
    recomputed with spaCy -- datatrove's decisions at close to regex speed (``fallbacks`` counts re-checks).
    """

    def __init__(self, config: QualityConfig):
        if config.tokenizer not in ("regex", "spacy", "hybrid"):
            raise ValueError(
                f"cleaning.quality.tokenizer {config.tokenizer!r} is not one of regex, spacy, hybrid"
            )
        self.c = config
        self.words = _spacy_words if config.tokenizer == "spacy" else words_of
        self._guarded = False
        self.fallbacks = self.fast_path = 0

    def _near(self, value: float, threshold: float, tol: float) -> None:
        if self._guarded and abs(value - threshold) <= tol:
            raise _Borderline

    def gopher(self, text: str, words: list[str]) -> str | None:
        c = self.c
        n_words = len(words)
        content = [w for w in words if not is_symbol_word(w)]
        if c.min_doc_words:
            self._near(len(content), c.min_doc_words, max(3, 0.06 * c.min_doc_words))
        if c.max_doc_words:
            self._near(len(content), c.max_doc_words, 0.06 * c.max_doc_words)
        if c.min_doc_words and len(content) < c.min_doc_words:
            return "gopher_short_doc"
        if c.max_doc_words and len(content) > c.max_doc_words:
            return "gopher_long_doc"
        if not content:
            return "gopher_below_avg_threshold"
        avg = sum(map(len, content)) / len(content)
        for bound in (c.min_avg_word_length, c.max_avg_word_length):
            if bound:
                self._near(avg, bound, _TOL_AVG_LEN)
        if c.min_avg_word_length and avg < c.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if c.max_avg_word_length and avg > c.max_avg_word_length:
            return "gopher_above_avg_threshold"
        n_hash, n_ellipsis = text.count("#"), text.count("...") + text.count("…")
        if c.max_symbol_word_ratio and (n_hash or n_ellipsis):
            self._near(
                max(n_hash, n_ellipsis) / n_words, c.max_symbol_word_ratio, 0.2 * c.max_symbol_word_ratio
            )
        if c.max_symbol_word_ratio and n_hash / n_words > c.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if c.max_symbol_word_ratio and n_ellipsis / n_words > c.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        lines = text.splitlines() or [""]
        if (
            c.max_bullet_lines_ratio
            and sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > c.max_bullet_lines_ratio
        ):
            return "gopher_too_many_bullets"
        if (
            c.max_ellipsis_lines_ratio
            and sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
            > c.max_ellipsis_lines_ratio
        ):
            return "gopher_too_many_end_ellipsis"
        if c.max_non_alpha_words_ratio:
            alpha = sum(any(ch.isalpha() for ch in w) for w in words) / n_words
            self._near(alpha, c.max_non_alpha_words_ratio, _TOL_RATIO)
            if alpha < c.max_non_alpha_words_ratio:
                return "gopher_below_alpha_threshold"
        if c.min_stop_words:
            n_stop = len(GOPHER_STOP_WORDS.intersection(words))
            self._near(n_stop, c.min_stop_words - 0.5, 1)
            if n_stop < c.min_stop_words:
                return "gopher_enough_stop_words"
        return None

    def c4(self, text: str) -> tuple[str | None, str]:
        """C4 as FineWeb runs it (no terminal-punctuation line filter): drops lines, may drop the document."""
        kept, n_sentences = [], 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if any(len(w) > 1000 for w in words):
                continue
            line = _CITATION.sub("", line)
            if len(words) < 3:
                continue
            low = line.lower()
            if self.c.c4_lorem_ipsum and "lorem ipsum" in low:
                return "lorem_ipsum", text
            if "javascript" in low:
                continue
            if self.c.c4_curly_bracket and "{" in line:
                return "curly_bracket", text
            if any(p in low for p in POLICY_SUBSTRINGS):
                continue
            n_sentences += count_sentences(self.words(line))
            kept.append(line)
        self._near(n_sentences, 5, _TOL_SENTENCES)
        if n_sentences < 5:
            return "too_few_sentences", text
        return None, "\n".join(kept).strip()

    def fineweb(self, text: str, words: list[str]) -> str | None:
        c = self.c
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "empty"
        if c.line_punct_thr is not None:
            ratio = sum(line.endswith(TERMINAL) for line in lines) / len(lines)
            if ratio < c.line_punct_thr:
                return "line_punct_ratio"
        if (
            c.short_line_thr is not None
            and sum(len(line) <= c.short_line_length for line in lines) / len(lines) > c.short_line_thr
        ):
            return "short_line_ratio"
        if c.char_duplicates_ratio is not None:
            seen, dup_chars = set(), 0
            for line in lines:
                if line in seen:
                    dup_chars += len(line)
                else:
                    seen.add(line)
            if dup_chars / max(1, len(text.replace("\n", ""))) > c.char_duplicates_ratio:
                return "char_dup_ratio"
        if c.new_line_ratio is not None:
            ratio = text.count("\n") / max(1, len(words))
            self._near(ratio, c.new_line_ratio, 0.1 * c.new_line_ratio)
            if ratio > c.new_line_ratio:
                return "list_ratio"
        return None

    def check(self, text: str) -> tuple[str | None, str]:
        """Order as in FineWeb: Gopher quality, then C4 (which rewrites the text), then FineWeb on the
        result."""
        if self.c.tokenizer != "hybrid":
            return self._check(text)
        self._guarded = True
        try:
            if _RISKY.search(text):
                raise _Borderline
            result = self._check(text)
            self.fast_path += 1
            return result
        except _Borderline:
            self.fallbacks += 1
            self._guarded, self.words = False, _spacy_words
            try:
                return self._check(text)
            finally:
                self.words = words_of
        finally:
            self._guarded = False

    def _check(self, text: str) -> tuple[str | None, str]:
        if self.c.gopher:
            words = self.words(text)
            if not words:
                return "gopher_short_doc", text
            reason = self.gopher(text, words)
            if reason:
                return reason, text
        if self.c.c4:
            reason, text = self.c4(text)
            if reason:
                return reason, text
        if self.c.fineweb:
            reason = self.fineweb(text, self.words(text))
            if reason:
                return reason, text
        return None, text
