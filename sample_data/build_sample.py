"""Rebuild ``sample_data/`` from the full local data (``python sample_data/build_sample.py FULL_DATA_DIR``).

The embedded sample keeps the full data's folder and file names, so ``REXBERT_DATA_DIR`` / ``--data-dir``
can point at either. Each file is either a byte-identical copy or the first rows/bytes of the original
(documented per folder in ``PROVENANCE.md``); web pages whose rights belong to their owners are left out.
Deterministic: rerunning on the same input gives byte-identical files.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
COPIED = {  # folder -> files copied byte for byte
    "icecat_products_chorus": ["icecat_text.parquet"],
    "esci_union_with_text": ["esci_union_with_text.parquet", "ESCI_LICENSE.txt", "ESCI_NOTICE.txt"],
    "fasttext_lid176": ["lid.176.ftz"],
    "glue_stsb": ["dev.tsv", "LICENSE.txt", "original/sts-test.tsv"],
    "glue_sst2": ["dev.tsv"],
}
BOOK_CHARS = 70_000  # first characters of each Gutenberg book (whole paragraphs)
WIKITEXT_LINES = 1_000  # first lines of the WikiText-2 test split (whole articles up to there)
TSV_ROWS = {
    ("glue_stsb", "train.tsv"): 1_500,
    ("glue_sst2", "train.tsv.gz"): 3_000,
    ("glue_qnli", "dev.tsv"): 1_000,
}
IN_THIS_SAMPLE = {  # prepended to each folder's PROVENANCE.md (the full data's, kept below it)
    "icecat_products_chorus": "`icecat_text.parquet`: byte-identical copy (15,000 products, text fields "
    "only). The product JSON zips are not included. Open Icecat data is redistributed under the Icecat Open "
    "Content License (OPL) with its required disclaimer: **the product data is provided AS IS, without any "
    "warranty**. "
    "Contains product data from Open Icecat (icecat.biz), provided AS IS under the Icecat Open Content "
    "License; redistributed via OpenSource Connections' Chorus.",
    "esci_union_with_text": "`esci_union_with_text.parquet`: byte-identical copy (1,999 rows); Apache-2.0 "
    "(`ESCI_LICENSE.txt`, `ESCI_NOTICE.txt`).",
    "fasttext_lid176": "`lid.176.ftz`: byte-identical copy; CC BY-SA 3.0 (fastText, Joulin et al. 2016).",
    "glue_stsb": "`dev.tsv`: byte-identical copy (1,500 pairs); `train.tsv`: the header + the first 1,500 of "
    "5,749 rows; `original/sts-test.tsv`: byte-identical copy (1,379 labelled test pairs, for the STS-B "
    "test-split protocol). `test.tsv`, the rest of `original/` and `readme.txt` are not included. Licence: "
    "`LICENSE.txt`.",
    "glue_sst2": "`dev.tsv`: byte-identical copy (872 rows); `train.tsv.gz`: the header + the first 3,000 of "
    "67,349 rows (gzip, mtime 0). `test.tsv` is not included.",
    "glue_qnli": "`dev.tsv`: the header + the first 1,000 of 5,463 rows. `test.tsv` is not included. "
    "CC BY-SA "
    "4.0 (derived from SQuAD v1.1; cite Rajpurkar et al. 2016 and Wang et al. 2019).",
    "wikitext2_raw_test": f"`wiki.test.raw`: the first {WIKITEXT_LINES:,} of 2,891 lines (byte-identical "
    "prefix); CC BY-SA 3.0 with attribution to Wikipedia's authors and WikiText (Merity et al. 2016).",
    "gutenberg_nltk": f"`gutenberg.zip`: the same 17 entries; each book cut to its first ~{BOOK_CHARS:,} "
    "characters at a paragraph break (public domain in the USA; Project Gutenberg texts).",
}


def head_lines(lines: list[str], n: int) -> list[str]:
    return lines[: n + 1]  # + the header line


def build(full: Path, out: Path = HERE) -> None:
    for folder, names in COPIED.items():
        (out / folder).mkdir(exist_ok=True)
        for name in names:
            (out / folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full / folder / name, out / folder / name)
    for (folder, name), rows in TSV_ROWS.items():
        (out / folder).mkdir(exist_ok=True)
        source = full / folder / name
        if name.endswith(".gz"):
            lines = gzip.decompress(source.read_bytes()).decode("utf-8").splitlines(keepends=True)
            data = "".join(head_lines(lines, rows)).encode("utf-8")
            with gzip.GzipFile(out / folder / name, "wb", compresslevel=9, mtime=0) as handle:
                handle.write(data)
        else:
            lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
            (out / folder / name).write_text("".join(head_lines(lines, rows)), encoding="utf-8")
    wiki = (full / "wikitext2_raw_test" / "wiki.test.raw").read_text(encoding="utf-8").splitlines(True)
    (out / "wikitext2_raw_test").mkdir(exist_ok=True)
    (out / "wikitext2_raw_test" / "wiki.test.raw").write_text(
        "".join(wiki[:WIKITEXT_LINES]), encoding="utf-8"
    )
    (out / "gutenberg_nltk").mkdir(exist_ok=True)
    with (
        zipfile.ZipFile(full / "gutenberg_nltk" / "gutenberg.zip") as source,
        zipfile.ZipFile(
            out / "gutenberg_nltk" / "gutenberg.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
        ) as target,
    ):
        for info in sorted(source.infolist(), key=lambda i: i.filename):
            data = source.read(info.filename)
            if info.filename.endswith(".txt"):
                text = data.decode("latin-1")
                cut = text.rfind("\n\n", 0, BOOK_CHARS)
                data = text[: cut if cut > 0 else BOOK_CHARS].encode("latin-1")
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, data)
    for folder, note in IN_THIS_SAMPLE.items():
        original = (full / folder / "PROVENANCE.md").read_text(encoding="utf-8")
        header = f"# Embedded sample of `{folder}`\n\n**In this sample** (`sample_data/build_sample.py`): "
        (out / folder / "PROVENANCE.md").write_text(
            f"{header}{note}\n\nThe full folder's provenance follows.\n\n---\n\n{original}", encoding="utf-8"
        )
    # the parquet copies are read back once: a damaged copy fails here, not in a user's demo
    for path in sorted(out.rglob("*.parquet")):
        pq.read_metadata(path)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
