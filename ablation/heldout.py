"""The study's train / held-out split: evaluation text that no cell ever trains on.

* Products: ``rexbert_cli.heldout.split_products`` (1 Icecat product in 20 by a stable hash of its id, and
  every ESCI product of the ``test`` split -- the ESCI similarity evaluation reads that split too).
* General text: whole WikiText articles (1 in ``general_share`` by a stable hash of the title) and the last
  ``1 / general_share`` of every Gutenberg book (unseen passages of known authors).

The recipe's sources that read those files are pointed at the training files (:func:`point_at_training`).
Evaluation texts that still occur verbatim inside a training document (catalogues repeat titles under other
ids), or that are near-duplicates of a line or paragraph of one (word Jaccard >= 0.8: the same cable in
another length), are dropped by :func:`evaluation_texts`, so "held out" means "not in the training text,
nor nearly", not "another id". The share dropped is reported (``EvaluationTexts.filtered``).
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from curation.io_utils import atomic_write
from rexbert_cli.heldout import ESCI, ICECAT, split_products

WIKITEXT = Path("wikitext2_raw_test") / "wiki.test.raw"
GUTENBERG = Path("gutenberg_nltk") / "gutenberg.zip"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same input gives the same bytes


@dataclass(frozen=True)
class StudySplit:
    """Files of the split. ``training[original file] = training file``; held-out texts per field."""

    training: dict[Path, Path]
    icecat_heldout: Path
    general_heldout: Path


def _is_heldout(key: str, share: int) -> bool:
    return zlib.crc32(key.encode("utf-8")) % share == 0


def _wikitext_articles(text: str) -> list[tuple[str, str]]:
    """(title, text) of each article: a line `` = Title = `` starts one (`` = = Section = = `` does not)."""
    articles: list[tuple[str, list[str]]] = []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
            articles.append((stripped.strip("= ").strip(), []))
        if not articles:
            articles.append(("", []))
        articles[-1][1].append(line)
    return [(title, "".join(lines)) for title, lines in articles]


def _passages(paragraphs: list[str], min_chars: int) -> list[str]:
    """Paragraphs (whitespace normalised) of at least ``min_chars`` characters, headings left out."""
    parts = [" ".join(p.split()) for p in paragraphs]
    return [p for p in parts if len(p) >= min_chars and not p.startswith("=")]


def _split_wikitext(source: Path, train: Path, share: int, min_chars: int) -> list[str]:
    kept, heldout = [], []
    for title, text in _wikitext_articles(source.read_text(encoding="utf-8")):
        (heldout if title and _is_heldout(title, share) else kept).append(text)
    atomic_write(train, lambda tmp: Path(tmp).write_text("".join(kept), encoding="utf-8"))
    return _passages([line for text in heldout for line in text.splitlines()], min_chars)  # a line each


def _split_gutenberg(source: Path, train: Path, share: int, min_chars: int) -> list[str]:
    heldout = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for member in sorted(archive.namelist()):
            if member.endswith("/") or not member.endswith(".txt"):
                continue
            lines = archive.read(member).splitlines(keepends=True)  # bytes: the head is kept byte for byte
            cut = len(lines) - len(lines) // share  # the book's tail is held out
            out.writestr(zipfile.ZipInfo(member, date_time=_ZIP_TIME), b"".join(lines[:cut]))
            tail = b"".join(lines[cut:]).decode("utf-8", errors="replace")
            heldout += _passages(re.split(r"\n\s*\n", tail), min_chars)
    atomic_write(train, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return heldout


def split_study_data(data_dir: Path, out_dir: Path, general_share: int, min_chars: int) -> StudySplit:
    """Write the training files and the held-out texts under ``out_dir``; a split already written from the
    same inputs and settings is reused untouched (training rows are cached by source file size and mtime)."""
    originals = [data_dir / f for f in (ICECAT, ESCI, WIKITEXT, GUTENBERG) if (data_dir / f).is_file()]
    key = {
        "inputs": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in originals],
        "general_share": general_share,
        "min_chars": min_chars,
    }
    out_dir = out_dir.resolve()  # absolute source paths: the study may be resumed from another folder
    marker = out_dir / "split.json"
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved["key"] == key:  # the files live in out_dir: their names locate them wherever it moved
            return StudySplit(
                {Path(k): out_dir / Path(v).name for k, v in saved["training"].items()},
                out_dir / Path(saved["icecat_heldout"]).name,
                out_dir / Path(saved["general_heldout"]).name,
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    products = split_products(data_dir, out_dir)
    training = {
        (data_dir / ICECAT).resolve(): products.icecat_train,
        (data_dir / ESCI).resolve(): products.esci_train,
    }
    general: list[str] = []
    for original, name, split in (
        (WIKITEXT, "wiki.train.raw", _split_wikitext),
        (GUTENBERG, "gutenberg_train.zip", _split_gutenberg),
    ):
        if (data_dir / original).is_file():
            general += split(data_dir / original, out_dir / name, general_share, min_chars)
            training[(data_dir / original).resolve()] = out_dir / name
    general_path = out_dir / "general_heldout.jsonl"
    lines = "".join(json.dumps({"text": t}) + "\n" for t in general)
    atomic_write(general_path, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    result = StudySplit(training, products.icecat_heldout, general_path)
    document = {
        "key": key,
        "training": {str(k): v.name for k, v in training.items()},
        "icecat_heldout": result.icecat_heldout.name,
        "general_heldout": general_path.name,
    }
    atomic_write(marker, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=1), encoding="utf-8"))
    return result


def point_at_training(recipe, split: StudySplit) -> list[str]:
    """Point the recipe's sources that read a split file at its training part (in place); returns the
    names of the sources changed."""
    changed = []
    for source in (*recipe.data.general, *recipe.data.domain):
        path = Path(source.path)
        if path.exists() and path.resolve() in split.training:
            source.path = str(split.training[path.resolve()])
            changed.append(source.name)
    return changed


# word-set Jaccard from which a held-out text counts as the training text it nearly repeats: one size or
# length apart in a 5-10 word title is 0.7-0.85; the issue that asked for this measured titles at >= 0.8
HELDOUT_NEAR_DUPLICATE_JACCARD = 0.8


@dataclass(frozen=True)
class EvaluationTexts:
    """Held-out texts every cell is scored on.

    Attributes:
        fields: masked-token recovery texts per field: ``product_title``, ``product_description`` (held-out
            Icecat products and ESCI test products) and ``general`` (held-out WikiText / Gutenberg passages).
        products: held-out product texts (title + description) for the entity/attribute recovery.
        validation: per field, held-out texts after the scored ones (disjoint from ``fields``) on which
            choices are made (the plain arm's learning rate), so no choice sees a scored text.
        filtered: per field (and ``products``), the distinct candidate texts and how many were dropped as
            ``verbatim`` or ``near_duplicate`` training text (``near_duplicate_share`` of the candidates).
    """

    fields: dict[str, list[str]]
    products: list[str]
    validation: dict[str, list[str]] = field(default_factory=dict)
    filtered: dict[str, dict] = field(default_factory=dict)


def _column_texts(path: Path, column: str) -> list[str]:
    import pyarrow.parquet as pq

    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _normalised(text: str) -> str:
    return " ".join(text.split())


def training_documents(recipe) -> Iterator[str]:
    """Every document of the recipe's local, in-memory sources. Streaming and Hub sources are not read (the
    GPU studies' web corpora are not filtered)."""
    from training.data import load_source, source_files

    for source in (*recipe.data.general, *recipe.data.domain):
        if source.streaming or source_files(source) is None:
            continue
        full = copy.copy(source)
        full.max_docs = None  # whatever a cell reads is a prefix of this
        yield from load_source(full).texts


def training_corpus(recipe) -> str:
    """Every training document (whitespace normalised), one per line (:func:`training_documents`)."""
    return "\n".join(_normalised(t) for t in training_documents(recipe))


def _occurring(corpus: str, needles: set[str]) -> set[str]:
    """The needles that occur in ``corpus``: one Aho-Corasick pass over the corpus for all of them."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for needle in needles:
        if needle:
            automaton.add_word(needle, needle)
    if len(automaton) == 0:
        return set()
    automaton.make_automaton()
    return {needle for _, needle in automaton.iter(corpus)}


def _units(document: str) -> Iterator[str]:
    """The lines of a document, and its paragraphs of several lines (hard-wrapped books)."""
    for paragraph in re.split(r"\n\s*\n", document):
        lines = [line for line in paragraph.split("\n") if line.strip()]
        yield from lines
        if len(lines) > 1:
            yield " ".join(lines)


def near_duplicates_in_training(
    texts: Iterable[str], documents: Iterable[str], threshold: float = HELDOUT_NEAR_DUPLICATE_JACCARD
) -> set[str]:
    """The ``texts`` with a near-duplicate (word Jaccard >= ``threshold``) among the lines and paragraphs
    of ``documents``. The texts are indexed (curation's MinHash, :mod:`evaluation.near_duplicates`) and
    the documents streamed past them once: memory is the texts', not the corpus'."""
    from evaluation.near_duplicates import NearDuplicateIndex

    index = NearDuplicateIndex(threshold)
    keys = list(dict.fromkeys(texts))
    for text in keys:
        index.add(text)
    found: set[str] = set()
    for document in documents:
        for unit in _units(document):
            found.update(keys[i] for i in index.matches(unit))
    return found


def evaluation_texts(
    split: StudySplit,
    recipe,
    max_texts: int,
    entity_max_texts: int,
    seed: int,
    validation_texts: int = 0,
) -> EvaluationTexts:
    """The held-out texts (first ``max_texts`` per field after a seeded shuffle, then ``validation_texts``
    more per field for choices), without any text whose lines occur verbatim inside a training document of
    ``recipe`` or nearly repeat one of its lines or paragraphs (:func:`near_duplicates_in_training`)."""
    import pyarrow.parquet as pq

    from evaluation.blocks import ordered_texts
    from evaluation.data import load_esci, product_field_texts
    from evaluation.near_duplicates import distinct_texts
    from rexbert_cli.product_check import product_texts

    esci_test = load_esci(None, "test")
    titles = _column_texts(split.icecat_heldout, "title") + product_field_texts(esci_test, "title")
    descriptions = _column_texts(split.icecat_heldout, "short_description") + product_field_texts(
        esci_test, "description"
    )
    general = [json.loads(line)["text"] for line in split.general_heldout.read_text("utf-8").splitlines()]
    products = product_texts(pq.read_table(split.icecat_heldout).to_pylist())
    names = ("product_title", "product_description", "general", "products")
    candidates = {
        name: ordered_texts(distinct_texts(texts), seed)
        for name, texts in zip(names, (titles, descriptions, general, products))
    }
    paragraphs = {_normalised(p) for texts in candidates.values() for t in texts for p in t.split("\n")}
    verbatim = _occurring(training_corpus(recipe), paragraphs)
    near = near_duplicates_in_training(paragraphs - verbatim, training_documents(recipe))

    def reason(text: str) -> str | None:
        parts = {_normalised(p) for p in text.split("\n")}
        return "verbatim" if parts & verbatim else "near_duplicate" if parts & near else None

    kept, filtered = {}, {}
    for name, texts in candidates.items():
        reasons = [reason(t) for t in texts]
        kept[name] = [t for t, r in zip(texts, reasons) if r is None]
        dropped = {r: reasons.count(r) for r in ("verbatim", "near_duplicate")}
        share = dropped["near_duplicate"] / max(1, len(texts))
        filtered[name] = {"candidates": len(texts), **dropped, "near_duplicate_share": round(share, 4)}
    fields = names[:3]
    return EvaluationTexts(
        fields={name: kept[name][:max_texts] for name in fields},
        products=kept["products"][:entity_max_texts],
        validation={name: kept[name][max_texts : max_texts + validation_texts] for name in fields},
        filtered=filtered,
    )
