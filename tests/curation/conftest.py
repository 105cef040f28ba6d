"""Small real-data fixtures for the curation tests (built from REXBERT_DATA_DIR, never copied into the repo;
no web_samples_dolma: web-like pages are assembled here from product and prose text)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_texts(data_dir):
    """(commerce texts, non-commerce texts): Icecat/ESCI product pages vs Gutenberg/WikiText prose."""
    from curation.demo_data import esci_pages, gutenberg_passages, icecat_pages, wikitext_sections

    commerce = icecat_pages(data_dir, 100) + esci_pages(data_dir, 100)
    other = gutenberg_passages(data_dir, 120) + wikitext_sections(data_dir, 50)
    return commerce, other


NAV = "Home | Shop | Deals | My Account"
COOKIES = "We use cookies to improve your experience. Accept all cookies"


def web_page(text: str, rng: random.Random) -> str:
    """A product or prose text wrapped in typical page chrome (navigation, cookie banner, footer)."""
    return "\n".join(
        [NAV, text.strip(), COOKIES if rng.random() < 0.5 else "", "© 2024 Example Ltd. All rights reserved."]
    )


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_corpus(real_texts, tmp_path_factory):
    """~220 web-like documents in 6 jsonl files over two folders (with the same file names), two
    filter-required domains and one directly selected domain, a planted near-duplicate, a record with a
    JSON-escaped lone surrogate and one of an unselected domain."""
    commerce, other = real_texts
    rng = random.Random(0)
    docs = [(t, 1) for t in commerce[:110]] + [(t, 0) for t in other[:110]]
    rng.shuffle(docs)
    root = tmp_path_factory.mktemp("corpus")
    records = []
    for i, (text, truth) in enumerate(docs):
        domain = ("hobby", "automotive", "fashion")[i % 3]
        url = f"https://shop{i % 7}.example.com/item/{i}"
        records.append({"text": web_page(text, rng), "domain": domain, "url": url, "is_commerce": truth})
    # copy a prose page (stop words pass the Gopher filters) of the directly selected domain, so the pair
    # reaches dedup whatever the classifier threshold is
    long_doc = next(
        r
        for r in records
        if r["domain"] == "fashion" and not r["is_commerce"] and len(r["text"].split()) > 150
    )
    # a light edit (Jaccard ≈ 0.95): 14×8 MinHash buckets find it with probability ≈ 1, so the planted pair
    # does not hinge on one seed's luck (at Jaccard 0.8 they would miss it 8% of the time)
    records.append(dict(long_doc, text=long_doc["text"] + "\nIt was, on the whole, a fine morning for it."))
    records.append({"text": "Tragic surrogate \ud800 text " * 20, "domain": "hobby"})
    records.append({"text": "A treatise on prime numbers. " * 30, "domain": "mathematics"})
    for k, folder in enumerate(("crawl_a", "crawl_b")):
        for part in range(3):
            chunk = records[(k * 3 + part) :: 6]
            write_jsonl(root / folder / f"part-{part}.jsonl", chunk)
    return root


def curation_config(output: Path, sources: list[dict], **overrides):
    """A fast test config: regex tokenizer, small sample, 3 folds, offline zero-shot labelers."""
    from curation.config import config_from_dict

    data = {
        "input": {"sources": sources},
        "domains": {"filter_required": ["hobby", "automotive"], "directly_selected": ["fashion"]},
        "sampling": {"per_domain": 30},
        "labeler": {"kind": "zero_shot", "max_chars": 300, "batch_size": 64},
        "audit": {
            "labeler": {"kind": "zero_shot", "max_chars": 600, "chunks": 2, "batch_size": 64},
            "allow_same_model": True,
            "pool_per_domain": 30,
            "subset_per_class": 10,
            "min_per_stratum": 2,
            "min_pairs": 5,
            "prompt_versions": ["v1", "v2"],
            "target_agreement": 0.3,
            "on_target_missed": "continue",
        },
        "classifier": {"kfold": 3, "epochs": 10},
        # the URL blocklist (4.5M domains, ~10 s to load per task) is tested on its own in test_filters.py
        "cleaning": {
            "lid": {"threshold": 0.4},
            "adult": {"url_filter": False},
            "quality": {
                "tokenizer": "regex",
                "min_doc_words": 20,
                "min_stop_words": 1,
                "max_non_alpha_words_ratio": 0.6,
                "line_punct_thr": None,
                "short_line_thr": None,
                "c4": False,
                "char_duplicates_ratio": None,
                "new_line_ratio": None,
            },
        },
        "executor": {"kind": "local", "tasks": 1, "workers": 1},
        "output": {"dir": str(output)},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(data)


def dataset_rows(output: Path) -> list[tuple[str, str, str]]:
    """(id, domain, text) of every dataset row, sorted: the content, whatever the file layout."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted((output / "dataset" / "data").glob("*.parquet")):
        table = pq.read_table(path, columns=["id", "domain", "text"])
        rows += zip(*(table.column(c).to_pylist() for c in ("id", "domain", "text")))
    return sorted(rows)
