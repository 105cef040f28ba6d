"""Adult / profanity filtering: a word list (counted hits vs. document length) and a URL domain blocklist.

The built-in lists are deliberately short and explicit (unambiguous adult terms and well-known adult hosts);
production runs extend them via ``cleaning.adult.word_list`` / ``url_blocklist`` (e.g. the LDNOOBW list and
the UT1 "adult" blocklist that FineWeb and C4 use).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from curation.config import AdultConfig

BUILTIN_WORDS = frozenset(
    {
        "porn",
        "porno",
        "pornography",
        "pornographic",
        "xxx",
        "hardcore",
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
        "shit",
        "bullshit",
        "cunt",
        "pussy",
        "dick",
        "cock",
        "slut",
        "whore",
        "bitch",
        "bastard",
        "asshole",
        "dildo",
        "orgasm",
        "nude",
        "nudes",
        "naked",
        "escort",
        "escorts",
        "stripper",
        "erotic",
        "sexcam",
        "gangbang",
        "anal",
    }
)
BUILTIN_URL_BLOCKLIST = frozenset(
    {
        "pornhub.com",
        "xvideos.com",
        "xnxx.com",
        "xhamster.com",
        "redtube.com",
        "youporn.com",
        "onlyfans.com",
        "chaturbate.com",
        "livejasmin.com",
        "brazzers.com",
        "spankbang.com",
        "tube8.com",
    }
)
_WORD = re.compile(r"[a-z]+")


class AdultFilter:
    """``check(text, url) -> reason | None`` with reasons ``adult_url`` / ``adult_words``."""

    def __init__(self, config: AdultConfig):
        words = set(BUILTIN_WORDS)
        if config.word_list:
            path = Path(config.word_list)
            if not path.is_file():
                raise FileNotFoundError(f"cleaning.adult.word_list {path} not found")
            words |= {w.strip().lower() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()}
        self.words = frozenset(words)
        self.blocked_hosts = frozenset(
            h.lower().lstrip(".") for h in BUILTIN_URL_BLOCKLIST | set(config.url_blocklist)
        )
        self.max_ratio = config.max_word_ratio
        self.min_hits = config.min_word_hits

    def url_blocked(self, url: str) -> bool:
        if not url:
            return False
        host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
        parts = host.split(".")
        # example.com blocks www.example.com and a.b.example.com
        return any(".".join(parts[i:]) in self.blocked_hosts for i in range(len(parts)))

    def check(self, text: str, url: str = "") -> str | None:
        if self.url_blocked(url):
            return "adult_url"
        tokens = _WORD.findall(text.lower())
        if not tokens:
            return None
        hits = sum(t in self.words for t in tokens)
        if hits >= self.min_hits and hits / len(tokens) > self.max_ratio:
            return "adult_words"
        return None
