"""Adult filtering, the text half: explicit terms counted against document length.

The URL half is datatrove's ``URLFilter`` with its shipped UT1 blocklist (see ``curation.filters``).
Production runs may extend the word list via ``cleaning.adult.word_list``.
"""

from __future__ import annotations

import re
from pathlib import Path

from curation.config import AdultConfig
from rexbert_common.errors import UserError

BUILTIN_WORDS = frozenset(
    {
        "porn",
        "porno",
        "pornography",
        "pornographic",
        "xxx",
        "blowjob",
        "handjob",
        "cumshot",
        "milf",
        "hentai",
        "camgirl",
        "camgirls",
        "nsfw",
        "fuck",
        "fucking",
        "fucked",
        "motherfucker",
        "cunt",
        "pussy",
        "slut",
        "whore",
        "asshole",
        "dildo",
        "orgasm",
        "sexcam",
        "gangbang",
    }
)
_WORD = re.compile(r"[a-z]+")


class AdultWords:
    """``check(text) -> "adult_words" | None``: explicit terms counted against document length.

    The built-in list holds only terms with no product sense: "naked" (an eyeshadow palette), "escort" (a
    Ford), "stripper" (a wire tool), "nude" (a colour) or "cock" (a valve) would drop commerce pages; adult
    sites are caught by datatrove's URL blocklist instead.
    """

    def __init__(self, config: AdultConfig):
        words = set(BUILTIN_WORDS)
        if config.word_list:
            path = Path(config.word_list)
            if not path.is_file():
                raise UserError(f"cleaning.adult.word_list {path} not found")
            words |= {w.strip().lower() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()}
        self.words = frozenset(words)
        self.max_ratio = config.max_word_ratio
        self.min_hits = config.min_word_hits

    def check(self, text: str) -> str | None:
        tokens = _WORD.findall(text.lower())
        if not tokens:
            return None
        hits = sum(t in self.words for t in tokens)
        if hits >= self.min_hits and hits / len(tokens) > self.max_ratio:
            return "adult_words"
        return None
