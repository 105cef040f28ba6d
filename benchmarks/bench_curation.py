"""Curation benchmarks, one run, ratios (interleaved where two sides are compared):

1. docs/s per core of the prepare stage's filters (our datatrove steps: language ID -> Gopher/C4/FineWeb
   quality) vs datatrove's own LanguageFilter / GopherQualityFilter / C4QualityFilter / FineWebQualityFilter
   with the same thresholds and the same local lid.176, in one process.
2. The prepare stage on LocalPipelineExecutor, 4 tasks, 1 vs 2 workers (goal >= 1.7x).
3. Peak RSS of one prepare task (fresh process) at 1x and 10x input (goal <= 1.2x).
4. The MinHash stages (signatures -> buckets -> clusters -> filter) on planted pairs: recall at Jaccard >= 0.8
   and false-positive rate at Jaccard 0.45-0.55, FineWeb's 14 x 8 vs the former 20 x 5.

    REXBERT_DATA_DIR=../shared/data python -m benchmarks.bench_curation [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core numbers


def _records(quick: bool) -> list[dict]:
    from benchmarks._common import data_dir
    from curation.demo_data import build_records

    sizes = (
        {"icecat_pages": 150, "esci": 120, "gutenberg": 200, "wikitext": 80, "planted": 0} if quick else {}
    )
    records, _ = build_records(data_dir(), seed=0, sizes={**sizes, "unselected": 0})
    return records


def _write_input(records: list[dict], folder: Path, files: int, copies: int = 1) -> Path:
    """``files`` jsonl files (``copies`` times the records, so 10x input has 10x distinct documents)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps(r) + "\n" for _ in range(copies) for r in records]
    for k in range(files):
        (folder / f"part-{k:03d}.jsonl").write_text("".join(rows[k::files]), encoding="utf-8")
    return folder


def _config(input_dir: Path, out: Path, tasks: int, workers: int):
    from curation.config import config_from_dict

    return config_from_dict(
        {
            "input": {"sources": [{"path": str(input_dir)}]},
            "domains": {
                "filter_required": ["hobby", "news", "automotive", "sports"],
                "directly_selected": ["fashion", "beauty"],
            },
            # the URL blocklist's one-off load (~10 s per task here) would dominate a benchmark-sized task
            "cleaning": {"adult": {"url_filter": False}},
            "executor": {"kind": "local", "tasks": tasks, "workers": workers},
            "output": {"dir": str(out)},
        }
    )


def _prepare_executor(config):
    from curation.pipeline import build_stages
    from rexbert_common.executors import make_executor

    stage = next(s for s in build_stages(config) if s.name == "prepare")
    return make_executor(stage, config.executor)


# ---------------------------------------------------------------------------------------- 1. throughput
def ours_chain(docs, lid_path, quality_config):
    from curation.config import LidConfig
    from curation.filters import LanguageFilter, QualityFilter

    stream = iter(docs)
    for step in (LanguageFilter(LidConfig(), lid_path), QualityFilter(quality_config)):
        stream = step.run(stream)
    return {d.id for d in stream}


def datatrove_chain(docs, lid_path):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        LanguageFilter,
    )

    from curation.cleaning.lid import LanguageId

    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model._model = LanguageId(lid_path).model  # the same local lid.176.ftz instead of a download
    stream = iter(docs)
    for step in (
        lang,
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ):
        stream = step.run(stream)
    return {d.id for d in stream}


def bench_throughput(records, repeats: int) -> list[list]:
    import copy

    from datatrove.data import Document

    from benchmarks._common import data_dir, interleaved_timings, median
    from curation.config import QualityConfig

    lid_path = str(data_dir() / "fasttext_lid176" / "lid.176.ftz")
    docs = [Document(text=r["text"], id=r["id"], metadata={"domain": r["domain"]}) for r in records]
    kept = {}
    fns = {
        "datatrove": lambda: kept.__setitem__("datatrove", datatrove_chain(copy.deepcopy(docs), lid_path)),
        "ours (hybrid tokenizer)": lambda: kept.__setitem__(
            "hybrid", ours_chain(copy.deepcopy(docs), lid_path, QualityConfig(tokenizer="hybrid"))
        ),
        "ours (spacy tokenizer)": lambda: kept.__setitem__(
            "spacy", ours_chain(copy.deepcopy(docs), lid_path, QualityConfig(tokenizer="spacy"))
        ),
    }
    times = interleaved_timings(fns, repeats=repeats, warmup=1)
    rows = []
    for name, key in (
        ("datatrove", "datatrove"),
        ("ours (hybrid tokenizer)", "hybrid"),
        ("ours (spacy tokenizer)", "spacy"),
    ):
        same = len(kept[key] & kept["datatrove"]) / max(1, len(kept[key] | kept["datatrove"]))
        rows.append(
            [
                name,
                f"{len(docs) / median(times[name]):.0f}",
                f"{median(times['datatrove']) / median(times[name]):.2f}x",
                len(kept[key]),
                f"{same:.3f}",
            ]
        )
    return rows


# ------------------------------------------------------------------------------------------- 2. workers
def bench_workers(records, tmp: Path, repeats: int) -> list[list]:
    import shutil

    from benchmarks._common import interleaved_timings, median

    source = _write_input(records, tmp / "input4", files=4)
    runs = iter(range(10_000))

    def run(workers: int):
        out = tmp / f"w{workers}-{next(runs)}"
        _prepare_executor(_config(source, out, tasks=4, workers=workers)).run()
        shutil.rmtree(out)

    times = interleaved_timings({"1 worker": lambda: run(1), "2 workers": lambda: run(2)}, repeats, warmup=0)
    one, two = median(times["1 worker"]), median(times["2 workers"])
    return [
        ["1 worker", f"{one:.1f}", f"{len(records) / one:.0f}", "1.00x"],
        ["2 workers", f"{two:.1f}", f"{len(records) / two:.0f}", f"{one / two:.2f}x"],
    ]


# ----------------------------------------------------------------------------------------------- 3. RSS
def _one_task(input_dir: str, out: str) -> None:
    """Child process: one prepare task; prints its peak RSS (MiB) and document count as JSON."""
    import resource

    start = time.perf_counter()
    _prepare_executor(_config(Path(input_dir), Path(out), tasks=1, workers=1)).run()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak_mib, "seconds": time.perf_counter() - start}))


def bench_rss(records, tmp: Path) -> list[list]:
    from benchmarks._common import run_json_subprocess

    rows = []
    for copies in (1, 10):
        source = _write_input(records, tmp / f"rss{copies}", files=1, copies=copies)
        result = run_json_subprocess(
            "benchmarks.bench_curation", ["--one-task", str(source), str(tmp / f"o{copies}")]
        )
        rows.append(
            [f"{copies}x", len(records) * copies, f"{result['peak_rss_mib']:.0f}", f"{result['seconds']:.1f}"]
        )
    rows[1].append(f"{float(rows[1][2]) / float(rows[0][2]):.2f}x")
    rows[0].append("1.00x")
    return rows


# -------------------------------------------------------------------------------------------- 4. MinHash
def _mutate(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    return " ".join(rng.choice(vocab) if rng.random() < rate else w for w in words)


def bench_minhash(records, tmp: Path) -> list[list]:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupFilter

    from curation.cleaning.dedup import jaccard
    from curation.config import DedupConfig
    from curation.minhash import KeyedMinhashCluster, KeyedMinhashSignature, minhash_config

    rng = random.Random(0)
    originals = [r["text"] for r in records if len(r["text"].split()) >= 150][:300]
    vocab = sorted({w for t in originals[:30] for w in t.split() if w.isalpha()})
    docs, pairs = [], []
    for i, text in enumerate(originals):
        copy = _mutate(text, rng.choice([0.02, 0.03, 0.04, 0.08, 0.10, 0.12]), rng, vocab)
        docs += [Document(text=text, id=f"o{i}"), Document(text=copy, id=f"c{i}")]
        pairs.append((f"o{i}", f"c{i}", jaccard(text, copy)))
    rows = []
    for label, dedup in (
        ("14 x 8 (FineWeb; default)", DedupConfig()),
        ("20 x 5 (before)", DedupConfig(buckets=20, hashes_per_bucket=5)),
    ):
        work = tmp / f"mh{dedup.buckets}"
        kept = []
        stages = [
            (
                1,
                [
                    lambda data, rank=0, world_size=1: iter(docs),
                    KeyedMinhashSignature(str(work / "s"), dedup),
                ],
            ),
            (
                dedup.buckets,
                [MinhashDedupBuckets(str(work / "s"), str(work / "d"), config=minhash_config(dedup))],
            ),
            (1, [KeyedMinhashCluster(str(work / "d"), str(work / "r"), str(work / "s" / "keys"), dedup)]),
            (
                1,
                [
                    lambda data, rank=0, world_size=1: iter(docs),
                    MinhashDedupFilter(str(work / "r")),
                    lambda data, rank=0, world_size=1, kept=kept: kept.extend(d.id for d in data),
                ],
            ),
        ]
        for k, (tasks, pipeline) in enumerate(stages):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs{k}")).run()
        survivors = set(kept)
        flagged = [(j, not (a in survivors and b in survivors)) for a, b, j in pairs]
        high = [f for j, f in flagged if j >= 0.8]
        mid = [f for j, f in flagged if 0.45 <= j <= 0.55]
        rows.append(
            [
                label,
                len(high),
                f"{sum(high) / max(1, len(high)):.3f}",
                len(mid),
                f"{sum(mid) / max(1, len(mid)):.3f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer documents and repeats (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--one-task", nargs=2, metavar=("INPUT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_task:
        _one_task(*args.one_task)
        return 0
    import logging

    import torch
    from loguru import logger

    from benchmarks._common import markdown_table

    logger.remove()  # datatrove's per-task logs would drown the tables
    logging.disable(logging.INFO)
    repeats = args.repeats or (1 if args.quick else 3)
    records = _records(args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_curation_"))
    load = os.getloadavg()
    print(
        f"{len(records)} documents; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
        f"{os.cpu_count()} cores; torch CPU capability {torch.backends.cpu.get_cpu_capability()}\n"
    )
    print(
        "### docs/s per core: language ID + quality filters, ours vs datatrove (1 process, interleaved, "
        f"median of {repeats})\n"
    )
    print(
        markdown_table(
            ["implementation", "docs/s/core", "vs datatrove", "kept", "kept-set Jaccard vs datatrove"],
            bench_throughput(records, repeats),
        )
    )
    print(f"\n### prepare stage, 4 tasks: 1 vs 2 workers (interleaved, median of {repeats})\n")
    print(markdown_table(["workers", "seconds", "docs/s", "speed-up"], bench_workers(records, tmp, repeats)))
    print("\n### peak RSS of one prepare task (fresh process)\n")
    print(markdown_table(["input", "docs", "peak RSS MiB", "seconds", "ratio"], bench_rss(records, tmp)))
    print("\n### MinHash stages on planted pairs (5-gram shingles)\n")
    print(
        markdown_table(
            ["buckets x hashes", "pairs J>=0.8", "recall", "pairs J 0.45-0.55", "flagged (FP rate)"],
            bench_minhash(records, tmp),
        )
    )
    print(f"\nload average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
