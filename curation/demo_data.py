"""The offline FineFineWeb-style demo input, built from ``REXBERT_DATA_DIR`` (default: the embedded sample).

Commerce documents: Open Icecat product listings (4 products of one supplier per page) and ESCI product pages
(title, bullets, description). Non-commerce: Project Gutenberg passages, WikiText sections and, when the full
local data has them, Common Crawl pages (Dolma fixtures; not in the embedded sample, their rights belong to
the pages' owners). Products kept for evaluation never enter the input: Icecat products selected by
:func:`is_heldout_product` and ESCI products of the ``test`` split. Domains: four "filter required" domains
of Table 1 mixing both classes, two "directly selected" domains, and one unselected domain. Planted
near-duplicates (few word substitutions, Jaccard >= 0.8 on 5-gram shingles) and a handful of bad records
(invalid UTF-8, malformed JSON, missing/empty fields, an oversized document, a repeated id) exercise the
error paths. ``is_commerce`` carries the source class for reporting.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

from curation.io_utils import atomic_write, write_json_atomic
from rexbert_common.data import data_dir

FILTER_DOMAINS = ("hobby", "news", "automotive", "sports")
DIRECT_DOMAINS = ("fashion", "beauty")
UNSELECTED_DOMAIN = "mathematics"
SIZES = {
    "icecat_pages": 700,
    "esci": 600,
    "gutenberg": 1100,
    "wikitext": 400,
    "unselected": 60,
    "planted": 60,
}


HELDOUT_SHARE = 20  # 1 Icecat product in 20 is kept out of every demo input, for evaluation on unseen text


def is_heldout_product(product_id: str) -> bool:
    """Whether an Icecat product is kept for evaluation (a stable hash of its id: same split everywhere)."""
    return zlib.crc32(str(product_id).encode("utf-8")) % HELDOUT_SHARE == 0


def data_root() -> Path:
    path = data_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"REXBERT_DATA_DIR={path} is not a directory")
    return path


def icecat_pages(root: Path, n_pages: int) -> list[str]:
    import pyarrow.parquet as pq

    rows = sorted(
        (
            row
            for row in pq.read_table(root / "icecat_products_chorus" / "icecat_text.parquet").to_pylist()
            if not is_heldout_product(row["id"])
        ),
        key=lambda r: (r["supplier"] or "", r["id"]),
    )
    pages, page = [], []
    for row in rows:
        if page and row["supplier"] != page[0]["supplier"]:
            page = []
        page.append(row)
        if len(page) == 4:
            lines = [f"{page[0]['supplier']} products"]
            for p in page:
                lines.append(f"{p['title']}")
                if p["short_description"]:
                    lines.append(f"{p['short_description']}")
                lines.append(f"Model: {p['name']}")
            pages.append("\n".join(lines))
            page = []
    step = max(1, len(pages) // n_pages)
    return pages[::step][:n_pages]


def esci_pages(root: Path, n: int) -> list[str]:
    import pyarrow.parquet as pq

    rows = pq.read_table(root / "esci_union_with_text" / "esci_union_with_text.parquet").to_pylist()
    seen = {row["product_id"] for row in rows if row["split"] == "test"}  # the evaluation's products
    out = []
    for row in rows:
        if row["product_id"] in seen or not row["product_title"]:
            continue
        seen.add(row["product_id"])
        parts = [row["product_title"]]
        if row["product_brand"]:
            parts.append(f"Brand: {row['product_brand']}")
        for field in ("product_bullet_point", "product_description"):
            if row[field]:
                parts.append(re.sub(r"<[^>]+>", " ", row[field]))
        if len(" ".join(parts).split()) >= 40:
            out.append("\n".join(parts))
    return out[:n]


def gutenberg_passages(root: Path, n: int, min_words: int = 120) -> list[str]:
    per_book: list[list[str]] = []
    with zipfile.ZipFile(root / "gutenberg_nltk" / "gutenberg.zip") as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith(".txt"):
                continue
            text = archive.read(name).decode("latin-1")
            chunks, current = [], []
            for para in re.split(r"\n\s*\n", text):
                para = " ".join(para.split())
                if not para:
                    continue
                current.append(para)
                if sum(len(p.split()) for p in current) >= min_words:
                    chunks.append("\n".join(current))
                    current = []
            per_book.append(chunks)
    # spread over each book: every stride-th passage, the stride chosen so that n passages exist
    total = sum(len(b) for b in per_book)
    stride = max(1, min(7, total // max(n, 1)))
    out, k = [], 0
    while len(out) < n and any(k * stride < len(b) for b in per_book):
        out += [b[k * stride] for b in per_book if k * stride < len(b)]
        k += 1
    return out[:n]


def wikitext_sections(root: Path, n: int, min_words: int = 80) -> list[str]:
    text = (root / "wikitext2_raw_test" / "wiki.test.raw").read_text(encoding="utf-8")
    sections = re.split(r"\n (?:= )+[^=\n]+(?: =)+ \n", text)
    out = []
    for sec in sections:
        body = "\n".join(line.strip() for line in sec.splitlines() if line.strip())
        if len(body.split()) >= min_words:
            out.append(body)
    return out[:n]


def dolma_pages(root: Path) -> list[tuple[str, str]]:
    """(text, url) of the Dolma Common Crawl fixtures; none when the folder is absent (embedded sample)."""
    out: list[tuple[str, str]] = []
    folder = root / "web_samples_dolma"
    if not folder.is_dir():
        return out
    for name in (
        "multiple_files_cc_en_head-0091.jsonl.gz",
        "multiple_files_cc_en_head-0174.jsonl.gz",
        "provided_documents_000.json.gz",
    ):
        with gzip.open(folder / name, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                url = row.get("id", "") if str(row.get("id", "")).startswith("http") else ""
                out.append((row["text"], url))
    return out


def _shingles(text: str, n: int = 5) -> set[str]:
    from curation.cleaning.dedup import normalise

    words = normalise(text).split()
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def near_duplicate(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """A copy with ~1 word in 150 substituted (at least one) and the trailing whitespace changed."""
    lines = text.split("\n")
    positions = [(li, wi) for li, line in enumerate(lines) for wi in range(len(line.split()))]
    n_edits = max(1, len(positions) // 150)
    split_lines = [line.split() for line in lines]
    for li, wi in rng.sample(positions, n_edits):
        split_lines[li][wi] = rng.choice(vocabulary)
    return "\n".join(" ".join(words) for words in split_lines) + "\n"


def build_records(
    root: Path, seed: int = 0, sizes: dict[str, int] | None = None
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    sizes_ = {**SIZES, **(sizes or {})}
    rng = random.Random(seed)
    commerce = [("icecat", t, "") for t in icecat_pages(root, sizes_["icecat_pages"])]
    commerce += [("esci", t, "") for t in esci_pages(root, sizes_["esci"])]
    other = [
        ("gutenberg", t, "") for t in gutenberg_passages(root, sizes_["gutenberg"] + sizes_["unselected"])
    ]
    other += [("wikitext", t, "") for t in wikitext_sections(root, sizes_["wikitext"])]
    other += [("commoncrawl", t, url) for t, url in dolma_pages(root)][: sizes_.get("commoncrawl", 30)]
    records: list[dict[str, Any]] = []

    def add(source: str, text: str, url: str, is_commerce: int, domain: str) -> dict[str, Any]:
        rec = {
            "id": f"{source}-{len(records):05d}",
            "text": text,
            "domain": domain,
            "url": url,
            "is_commerce": is_commerce,
        }
        records.append(rec)
        return rec

    unselected = other[: sizes_["unselected"]]
    for source, text, url in unselected:
        add(source, text, url, 0, UNSELECTED_DOMAIN)
    for cls, pool in ((1, commerce), (0, other[sizes_["unselected"] :])):
        direct_share = 0.25 if cls else 0.15
        for source, text, url in pool:
            domains = DIRECT_DOMAINS if rng.random() < direct_share else FILTER_DOMAINS
            add(source, text, url, cls, rng.choice(domains))
    rng.shuffle(records)
    # planted near-duplicates of documents long enough to survive cleaning
    vocabulary = sorted({w for r in records[:200] for w in r["text"].split() if w.isalpha()})
    candidates = [r for r in records if r["domain"] != UNSELECTED_DOMAIN and len(r["text"].split()) >= 100]
    planted = []
    for original in rng.sample(candidates, min(sizes_["planted"], len(candidates))):
        copy_text = near_duplicate(original["text"], rng, vocabulary)
        a, b = _shingles(original["text"]), _shingles(copy_text)
        if len(a & b) / len(a | b) < 0.8:
            continue
        copy = dict(original, id=f"{original['id']}-dup", text=copy_text)
        records.insert(rng.randrange(len(records) + 1), copy)
        planted.append([original["id"], copy["id"]])
    return records, planted


BAD_LINES = [
    b'{"id": "bad-utf8", "text": "caf\xe9 cr\xe8me \xff\xfe", "domain": "hobby"}',
    b'{"id": "bad-json", "text": "unterminated',
    b'{"id": "bad-missing-text", "domain": "news"}',
    b'{"id": "bad-empty", "text": "   ", "domain": "news"}',
    b'{"id": "bad-missing-domain", "text": "A document without a domain label."}',
    b'{"id": "bad-text-type", "text": 42, "domain": "news"}',
]


DEMO_FILES = 8  # several input files, so every task of a 2..8-task run reads its own share


def build_demo_input(
    out_dir: str | Path,
    seed: int = 0,
    max_chars: int = 1_000_000,
    sizes: dict[str, int] | None = None,
    files: int = DEMO_FILES,
) -> Path:
    """Write ``finefineweb_demo/part-<k>.jsonl.gz`` (``files`` gzip parts, records dealt round-robin, the bad
    records spread over the parts) + ``planted_duplicates.json``; idempotent; returns the parts' folder."""
    out_dir = Path(out_dir)
    folder = out_dir / "finefineweb_demo"
    names = [f"part-{k:05d}.jsonl.gz" for k in range(files)]
    if (out_dir / "planted_duplicates.json").exists() and all((folder / n).exists() for n in names):
        return folder
    records, planted = build_records(data_root(), seed, sizes)
    lines: list[list[bytes]] = [[] for _ in range(files)]
    for k, rec in enumerate(records):
        lines[k % files].append(json.dumps(rec, ensure_ascii=False).encode())
        if k < len(BAD_LINES):
            lines[k % files].append(BAD_LINES[k])
    huge = {"id": "bad-huge", "text": "word " * (max_chars // 5 + 10), "domain": "hobby"}
    lines[-1].append(json.dumps(huge).encode())
    lines[-1].append(json.dumps(dict(records[0], text="same id, different text")).encode())
    for name, part in zip(names, lines):
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:  # mtime=0: byte-identical rebuilds
            gz.write(b"".join(line + b"\n" for line in part))
        data = buffer.getvalue()
        atomic_write(folder / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
    write_json_atomic(out_dir / "planted_duplicates.json", planted)
    return folder
