"""Small real-data fixtures for the curation tests (built from REXBERT_DATA_DIR, never copied into the
repo)."""

from __future__ import annotations

import pytest

SMALL = {
    "icecat_pages": 60,
    "esci": 40,
    "gutenberg": 80,
    "wikitext": 30,
    "unselected": 5,
    "planted": 8,
    "commoncrawl": 10,
}


@pytest.fixture(scope="session")
def small_records(data_dir):
    from curation.demo_data import build_records

    return build_records(data_dir, seed=0, sizes=SMALL)


@pytest.fixture(scope="session")
def real_texts(data_dir):
    """(commerce texts, non-commerce texts) from Icecat/ESCI vs Gutenberg/WikiText/Common Crawl."""
    from curation.demo_data import (
        dolma_pages,
        esci_pages,
        gutenberg_passages,
        icecat_pages,
        wikitext_sections,
    )

    commerce = icecat_pages(data_dir, 100) + esci_pages(data_dir, 100)
    other = (
        gutenberg_passages(data_dir, 120)
        + wikitext_sections(data_dir, 50)
        + [t for t, _ in dolma_pages(data_dir)]
    )
    return commerce, other
