"""Curation throughput vs datatrove on the same real documents, in one run (interleaved, medians).

1. Cleaning chain (language ID -> Gopher -> C4 -> FineWeb quality -> fastText relevance scoring), one process:
   ours (batched lid.176, one shared tokenisation for the heuristics, batched fastText) vs datatrove's
   LanguageFilter / GopherQualityFilter / C4QualityFilter / FineWebQualityFilter / FastTextClassifierFilter
   with identical thresholds, the same local lid.176.ftz and the same fastText model. Ours runs twice: with
   the fast regex tokenizer, and with tokenizer=spacy (datatrove's word splitter: exactly datatrove's output).
2. MinHash near-duplicate removal (5-grams, 20 bands x 5 rows): ours (datasketch signatures + LSH) vs
   datatrove's four MinHash stages; kept sets compared, planted near-duplicate recall at Jaccard >= 0.8.

    REXBERT_DATA_DIR=../shared/data python -m benchmarks.bench_curation [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core numbers


def _documents(root: Path, quick: bool):
    from curation.demo_data import build_records

    sizes = (
        {"icecat_pages": 150, "esci": 120, "gutenberg": 200, "wikitext": 80, "unselected": 0, "planted": 40}
        if quick
        else None
    )
    records, planted = build_records(root, seed=0, sizes=sizes)
    return records, planted


def _fasttext_model(records, tmp: Path):
    """One relevance model (trained by our trainer on the source class) that both sides use."""
    from curation.classifier import DomainClassifier, train_domain_classifier
    from curation.config import ClassifierConfig

    sub = records[:600]
    train_domain_classifier(
        "bench",
        [r["id"] for r in sub],
        [r["text"] for r in sub],
        [r["is_commerce"] for r in sub],
        ClassifierConfig(kfold=2),
        tmp,
    )
    return DomainClassifier.load(tmp, "bench"), tmp / "bench.bin"


def our_chain(texts, ids, lid, quality, clf):
    """LID -> quality (Gopher, C4 rewrite, FineWeb) -> fastText on the cleaned text; returns kept ids."""
    kept_ids, kept_texts = [], []
    for doc_id, text, (ok, _, _) in zip(ids, texts, lid.predict(texts)):
        if not ok:
            continue
        reason, cleaned = quality.check(text)
        if reason is None:
            kept_ids.append(doc_id)
            kept_texts.append(cleaned)
    scores = clf.scores(kept_texts)
    return {i for i, s in zip(kept_ids, scores) if s >= clf.threshold}


def datatrove_chain(records, lid_model, ft_model, threshold):
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FastTextClassifierFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        LanguageFilter,
    )

    from curation.classifier import fasttext_text

    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model._model = lid_model  # the local lid.176.ftz instead of a download
    ft = FastTextClassifierFilter(
        model_url="local", keep_labels=("1", threshold), save_labels_in_metadata=False
    )
    ft._model = ft_model

    def same_preprocessing(docs):  # the classifier was trained on fasttext_text(); feed datatrove the same
        for doc in docs:
            doc.text = fasttext_text(doc.text)
            yield doc

    docs = (Document(text=r["text"], id=r["id"]) for r in records)
    steps = [
        lang,
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]
    stream = docs
    for step in steps:
        stream = step.run(stream)
    stream = ft.run(same_preprocessing(stream))
    return {d.id for d in stream}


def our_dedup(texts, config):
    from curation.cleaning.dedup import MinHasher, find_near_duplicates

    drop, roots = find_near_duplicates(MinHasher(config).signatures(texts), config)
    return drop, roots


def _patch_datatrove_xxhash() -> None:
    """datatrove 0.10.1 passes ``str`` to xxhash, which xxhash 4.x rejects ("Strings must be encoded before
    hashing"); encode as UTF-8 first (the same work our shingle hashing does) so its MinHash can run at
    all."""
    import datatrove.utils.hashes.xxhash as dt_xxhash
    import xxhash

    dt_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode() if isinstance(data, str) else data)
    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)


def datatrove_dedup(records, config, work: Path):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    mh = MinhashConfig(
        n_grams=config.n_grams, num_buckets=config.bands, hashes_per_bucket=config.rows, seed=config.seed
    )
    for sub in ("sigs", "buckets", "remove"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    docs = [Document(text=r["text"], id=r["id"]) for r in records]
    MinhashDedupSignature(output_folder=str(work / "sigs"), config=mh).run(iter(docs), rank=0, world_size=1)
    for bucket in range(config.bands):
        MinhashDedupBuckets(
            input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=mh
        ).run(None, rank=bucket, world_size=config.bands)
    MinhashDedupCluster(
        input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=mh
    ).run(None, 0, 1)
    kept = {d.id for d in MinhashDedupFilter(input_folder=str(work / "remove")).run(iter(docs), 0, 1)}
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer documents and repeats (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)

    from benchmarks._common import data_dir, interleaved_timings, markdown_table, median
    from curation.cleaning.dedup import shingles
    from curation.cleaning.lid import LanguageId
    from curation.cleaning.quality import QualityFilter
    from curation.config import DedupConfig, QualityConfig
    from curation.report import planted_duplicate_recall

    root = data_dir()
    records, planted = _documents(root, args.quick)
    texts, ids = [r["text"] for r in records], [r["id"] for r in records]
    n = len(records)
    tmp = Path(tempfile.mkdtemp(prefix="bench_curation_"))
    clf, _ = _fasttext_model(records, tmp / "clf")
    lid = LanguageId(root / "fasttext_lid176" / "lid.176.ftz", ["en"], 0.65)
    q_regex = QualityFilter(QualityConfig(tokenizer="regex"))
    q_hybrid = QualityFilter(QualityConfig(tokenizer="hybrid"))
    q_spacy = QualityFilter(QualityConfig(tokenizer="spacy"))

    results = {}
    fns = {
        "ours (regex tokenizer)": lambda: results.__setitem__(
            "regex", our_chain(texts, ids, lid, q_regex, clf)
        ),
        "ours (tokenizer=hybrid)": lambda: results.__setitem__(
            "hybrid", our_chain(texts, ids, lid, q_hybrid, clf)
        ),
        "ours (tokenizer=spacy)": lambda: results.__setitem__(
            "spacy", our_chain(texts, ids, lid, q_spacy, clf)
        ),
        "datatrove": lambda: results.__setitem__(
            "dt", datatrove_chain(records, lid.model, clf.model, clf.threshold)
        ),
    }
    t_clean = interleaved_timings(fns, repeats=repeats, warmup=1)
    dt = results["dt"]
    rows = []
    for name, key in (
        ("datatrove", "dt"),
        ("ours (regex tokenizer)", "regex"),
        ("ours (tokenizer=hybrid)", "hybrid"),
        ("ours (tokenizer=spacy)", "spacy"),
    ):
        kept = results[key]
        rows.append(
            [
                name,
                f"{n / median(t_clean[name]):.0f}",
                f"{median(t_clean['datatrove']) / median(t_clean[name]):.2f}x",
                len(kept),
                len(kept & dt) / max(1, len(kept | dt)),
            ]
        )
    print(
        f"## Cleaning chain: LID + Gopher + C4 + FineWeb + fastText ({n} real docs, 1 process, median of "
        f"{repeats}, interleaved)\n"
    )
    share = q_hybrid.fallbacks / max(1, q_hybrid.fallbacks + q_hybrid.fast_path)
    print(f"hybrid: {share:.0%} of quality checks re-checked with spaCy\n")
    print(
        markdown_table(
            ["implementation", "docs/s/core", "speed vs datatrove", "kept", "kept-set Jaccard vs datatrove"],
            rows,
        )
    )

    config = DedupConfig(n_grams=5, bands=20, rows=5)
    _patch_datatrove_xxhash()
    dedup_out = {}
    counter = iter(range(1_000_000))
    fns = {
        "ours (datasketch)": lambda: dedup_out.__setitem__("ours", our_dedup(texts, config)),
        "datatrove MinHash": lambda: dedup_out.__setitem__(
            "dt", datatrove_dedup(records, config, tmp / f"dt{next(counter)}")
        ),
    }
    t_dedup = interleaved_timings(fns, repeats=repeats, warmup=1)
    drop, roots = dedup_out["ours"]
    ours_kept = {ids[i] for i in range(n) if not drop[i]}
    dt_kept = dedup_out["dt"]
    # planted pairs at true Jaccard >= 0.8 (5-gram shingles of the normalised text)
    by_id = dict(zip(ids, texts))
    eligible = []
    for a, b in planted:
        x, y = set(shingles(by_id[a], 5)), set(shingles(by_id[b], 5))
        if len(x & y) / len(x | y) >= 0.8:
            eligible.append([a, b])
    ours_recall = planted_duplicate_recall(eligible, set(ids), {ids[i]: ids[r] for i, r in roots.items()})
    dt_found = sum((a in dt_kept) != (b in dt_kept) for a, b in eligible)
    rows = [
        [
            "datatrove MinHash (4 stages)",
            f"{n / median(t_dedup['datatrove MinHash']):.0f}",
            "1.00x",
            n - len(dt_kept),
            f"{dt_found}/{len(eligible)} = {dt_found / max(1, len(eligible)):.3f}",
            1.0,
        ],
        [
            "ours (datasketch + LSH)",
            f"{n / median(t_dedup['ours (datasketch)']):.0f}",
            f"{median(t_dedup['datatrove MinHash']) / median(t_dedup['ours (datasketch)']):.2f}x",
            n - len(ours_kept),
            f"{ours_recall['found']}/{len(eligible)} = {ours_recall['recall']:.3f}",
            len(ours_kept & dt_kept) / len(ours_kept | dt_kept),
        ],
    ]
    print(
        f"\n## MinHash dedup: 5-grams, 20 bands x 5 rows ({n} docs, {len(eligible)} planted pairs at "
        f"Jaccard >= 0.8)\n"
    )
    print(
        markdown_table(
            [
                "implementation",
                "docs/s/core",
                "speed vs datatrove",
                "removed",
                "planted recall",
                "kept-set Jaccard vs datatrove",
            ],
            rows,
        )
    )
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"python {sys.version.split()[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
