"""The datatrove filter steps: reasons recorded in datatrove stats, per domain too; the adult filter keeps
the commerce pages a word list gets wrong; boilerplate lines go, commerce lines stay."""

from __future__ import annotations

import pytest
from datatrove.data import Document

from curation.config import AdultConfig, BoilerplateConfig, DomainConfig
from curation.filters import AdultFilter, BoilerplateFilter, DomainRouter

TARGET_PAGES = [  # commerce pages that the old word list dropped
    (
        "https://www.urbandecay.com/naked-eyeshadow-palette",
        "Naked Heat eyeshadow palette with 12 nude and naked shades. Naked palette, nude lip liner, "
        "naked skin "
        "foundation. Add to bag. $54.00",
    ),
    (
        "https://parts.example.com/ford-escort-mk2-brake-pads",
        "Ford Escort brake pads for the Escort Mk2 and Escort RS2000. "
        "Fits every Ford Escort estate. In stock.",
    ),
    (
        "https://tools.example.com/klein-wire-stripper",
        "Klein Tools wire stripper and cutter, 10-18 AWG. "
        "This wire stripper has a spring-loaded stripper head.",
    ),
]


def _run(step, docs):
    return list(step.run(iter(docs), 0, 1))


def _doc(text, url="", domain="beauty", i=0):
    return Document(text=text, id=f"d{i}", metadata={"url": url, "domain": domain})


@pytest.fixture(scope="module")
def adult():
    return AdultFilter(AdultConfig(extra_domains=["bad-shop.com"]))  # loads datatrove's UT1 list once


def test_adult_filter_keeps_the_naked_palette_the_ford_escort_and_the_wire_stripper(adult):
    kept = _run(adult, [_doc(text, url, i=i) for i, (url, text) in enumerate(TARGET_PAGES)])
    assert len(kept) == 3


def test_adult_filter_drops_blocklisted_hosts_and_explicit_text_with_reasons(adult):
    docs = [
        _doc("Great videos", "https://www.pornhub.com/view", domain="movie", i=0),  # datatrove's UT1 list
        _doc("Cheap shoes", "https://bad-shop.com/shoes", domain="fashion", i=1),  # extra_domains
        _doc("porn porn porn " + "word " * 100, domain="movie", i=2),  # explicit-term density
        _doc("an innocent page about shoes " * 5, domain="fashion", i=3),
    ]
    assert [d.id for d in _run(adult, docs)] == ["d3"]
    stats = {k: v.total for k, v in adult.stats.stats.items()}
    assert stats["dropped_adult_url_domain"] == 2 and stats["dropped_adult_words"] == 1
    assert stats["movie/dropped_adult_url_domain"] == 1 and stats["fashion/forwarded"] == 1


def test_boilerplate_lines_are_removed_and_commerce_lines_kept():
    page = "\n".join(
        [
            "Home | Shop | Deals | My Account",
            "Skip to content",
            "Bosch 18V cordless drill, 2 batteries",
            "Add to cart",
            "Free shipping on orders over $50",
            "We use cookies to improve your experience.",
            "Sign up for our newsletter",
            "Advertisement",
            "© 2024 Example Ltd. All rights reserved.",
            "A long paragraph that mentions that we use cookies in passing while describing, at length "
            "and in "
            "detail, how the drill's clutch has twenty settings for screws of every size.",
        ]
    )
    step = BoilerplateFilter(BoilerplateConfig())
    (doc,) = _run(step, [_doc(page), _doc("Privacy Policy\nTerms of Use", i=1)])
    assert doc.text.splitlines() == [
        "Bosch 18V cordless drill, 2 batteries",
        "Add to cart",
        "Free shipping on orders over $50",
        page.splitlines()[-1],
    ]
    assert doc.metadata["boilerplate_lines"] == 6
    assert step.stats.stats["dropped_boilerplate_only"].total == 1


def test_domain_router_normalises_and_counts_unselected_domains():
    step = DomainRouter(DomainConfig(filter_required=["Music & Dance"], directly_selected=["Beauty"]))
    docs = [_doc("x", domain=d, i=i) for i, d in enumerate(["music_and_dance", "BEAUTY", "mathematics"])]
    kept = _run(step, docs)
    assert [(d.metadata["domain"], d.metadata["route"]) for d in kept] == [
        ("music_and_dance", "filter"),
        ("beauty", "direct"),
    ]
    assert step.stats.stats["mathematics/dropped_domain_not_selected"].total == 1
