"""The written, versioned operational definition of commerce relevance, and strict answer parsing.

A prompt version is data: the definition shown to chat labelers, and the prototype sentences the offline
zero-shot labeler embeds. Revising the definition means adding a version, never editing an old one, so every
cached label and audit round stays attributable to the exact wording that produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RELEVANT = 1
NOT_RELEVANT = 0
LABEL_NAMES = {RELEVANT: "Relevant", NOT_RELEVANT: "Not relevant"}


@dataclass(frozen=True)
class PromptVersion:
    version: str
    definition: str
    relevant_prototypes: tuple[str, ...]
    not_relevant_prototypes: tuple[str, ...]

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


_V1 = PromptVersion(
    version="v1",
    definition=(
        "You label web documents for an e-commerce corpus. A document is Relevant when its main "
        "content helps "
        "someone find, compare, buy or use products: product pages, catalogue listings, specifications, "
        "prices, reviews of products, shopping guides. Otherwise it is Not relevant. "
        "Answer with exactly one of: Relevant, Not relevant."
    ),
    relevant_prototypes=(
        "Product page with title, brand, price and technical specifications.",
        "Online shop listing: buy now, add to cart, in stock, free shipping.",
        "Customer review of a product with pros and cons.",
    ),
    not_relevant_prototypes=(
        "A chapter of a novel or a poem.",
        "An encyclopedia article about history, science or a person.",
        "A news report about politics or events.",
    ),
)

_V2 = PromptVersion(
    version="v2",
    definition=(
        "You label web documents for an e-commerce corpus (operational definition v2). Relevant: the "
        "document's "
        "main purpose is commercial information about concrete products or services: product titles and "
        "descriptions, model numbers, attribute lists (size, colour, capacity, compatibility), "
        "prices, offers, "
        "retailer or catalogue pages, product comparisons, buying guides and product reviews. Not relevant: "
        "fiction, poetry, religious or historical text, encyclopedic articles, personal or academic "
        "pages, news "
        "or opinion that only mentions products in passing, and boilerplate without product content. "
        "When a page "
        "mixes both, judge the majority of its text. Answer with exactly one of: Relevant, Not relevant."
    ),
    relevant_prototypes=_V1.relevant_prototypes
    + (
        "Specifications: model number, dimensions, weight, capacity, colour, compatible devices.",
        "Replacement part or accessory compatible with the following models.",
        "Toner cartridge, notebook, cable, adapter, printer, monitor product description.",
    ),
    not_relevant_prototypes=_V1.not_relevant_prototypes
    + (
        "Scripture verses and religious text.",
        "Personal homepage of a researcher with publications and teaching.",
        "Dialogue between characters in a story or play.",
    ),
)

PROMPT_VERSIONS: dict[str, PromptVersion] = {p.version: p for p in (_V1, _V2)}


def get_prompt(version: str) -> PromptVersion:
    if version not in PROMPT_VERSIONS:
        raise KeyError(f"unknown relevance prompt version {version!r}; known: {sorted(PROMPT_VERSIONS)}")
    return PROMPT_VERSIONS[version]


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
