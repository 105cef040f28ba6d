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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


# --------------------------------------------------------------------------- 5. one task of a stage, measured
COMMERCE_WORDS = ("price", "products", "brand:", "model:", "shipping", "warranty")


class _StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        document = body["messages"][-1]["content"].lower()
        answer = "Relevant" if any(w in document for w in COMMERCE_WORDS) else "Not relevant"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _StubServer(ThreadingHTTPServer):
    request_queue_size = 128  # the labelers open batch_size connections at once (the default backlog: 5)
    daemon_threads = True


class StubEndpoint:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that answers at once (Relevant when the document has
    a commerce word): the audit and label stages' own costs, without an LLM's. ``with StubEndpoint() as
    url: ...``."""

    def __enter__(self) -> str:
        import threading

        self.server = _StubServer(("127.0.0.1", 0), _StubHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# what a stage's task imports, loaded before the measurement starts (the forkserver preloads them once)
PRELOAD = (
    "curation.pipeline",
    "curation.audit",
    "curation.classifier",
    "curation.fetch",
    "curation.filters",
    "curation.finalize",
    "curation.labelling",
    "curation.labelers.http",
    "curation.minhash",
    "curation.readers",
    "curation.sampling",
    "curation.shards",
    "datatrove.executor",
    "fasttext",
    "pyarrow.compute",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "sklearn.isotonic",
    "sklearn.linear_model",
    "sklearn.metrics",
    "yaml",
)


def _vm_kib(field: str) -> int:
    import re

    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _measured(run) -> dict:
    """``run()`` in this (fresh) process, measured.

    ``traced``: Python's tracemalloc peak plus the Arrow memory pool's peak -- every byte of text, rows and
    tables the task holds, and nothing of the interpreter or the libraries loaded before it started: exact
    and repeatable to the kilobyte, so a growth with the input cannot hide in noise. ``rss_added``: the
    resident high-water mark over the task minus the resident size before it (``clear_refs`` resets the
    mark), which also counts what tracemalloc cannot see (sqlite's and fastText's C/C++ allocations, torch,
    the allocator's slack) but moves by megabytes with arena reuse; ``rss_base``: the resident size before
    the task (interpreter + preloaded libraries). The scheduler request must cover ``rss_base + rss_added``.
    """
    import gc
    import tracemalloc

    import pyarrow as pa

    # The interpreter's table of interned strings (~100k names once the libraries are loaded) doubles in one
    # 4 MB block when a new name crosses its fill limit, wherever that happens: grow it now, not in the task.
    grown = [sys.intern(f"_measure_{i}") for i in range(200_000)]
    del grown
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the resident high-water mark
    rss_base, arrow_base = _vm_kib("VmRSS"), pa.total_allocated_bytes()
    load = os.getloadavg()[0]
    tracemalloc.start()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "seconds": seconds,
        "traced": traced + max(0, pa.default_memory_pool().max_memory() - arrow_base),
        "rss_added": (_vm_kib("VmHWM") - rss_base) * 1024,
        "rss_base": rss_base * 1024,
        "load": [load, os.getloadavg()[0]],
    }


def _stage_task(config: dict, stage_name: str, rank: int) -> dict:
    """Task ``rank`` of the stage ``stage_name`` of the pipeline ``config`` builds, as an executor runs it."""
    from curation.config import config_from_dict
    from curation.pipeline import build_stages
    from rexbert_common.executors import ExecutorConfig, make_executor

    parsed = config_from_dict(config)
    stage = next(s for s in build_stages(parsed) if s.name == stage_name)
    executor = make_executor(stage, ExecutorConfig(kind="local", tasks=parsed.executor.tasks, workers=1))
    # _run_for_rank is exactly what a Slurm array task, a Ray task or a local worker runs (local_rank 1: its
    # log goes to the task's log file, only errors to the console)
    measured = _measured(lambda: executor._run_for_rank(rank, local_rank=1))
    return {"stage": stage_name, "rank": rank, **measured}


def _pipeline_task(pipeline: list, tasks: int, logging_dir: str, rank: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor

    executor = LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=logging_dir)
    return {"rank": rank, **_measured(lambda: executor._run_for_rank(rank, local_rank=1))}


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a fresh child of a forkserver that has imported :data:`PRELOAD` (a measurement costs
    a fork, not a Python start-up, and inherits nothing of earlier measurements)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # no effect once the forkserver runs
    with ProcessPoolExecutor(
        1, mp_context=context, max_tasks_per_child=1, initializer=_import_all, initargs=(PRELOAD,)
    ) as pool:
        return pool.submit(fn, *args).result()


def _import_all(modules) -> None:
    """Imported before any measurement starts (already there when the forkserver preloaded them)."""
    import importlib

    for module in modules:
        importlib.import_module(module)


def measure_task(config, stage_name: str, rank: int) -> dict:
    from curation.config import config_to_dict

    return in_fresh_process(_stage_task, config_to_dict(config), stage_name, rank)


def _rows(folder: Path, rank: int) -> int:
    import pyarrow.parquet as pq

    path = folder / f"{rank:05d}.parquet"
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


def largest_task(stage, done: dict) -> int:
    """The rank of ``stage`` with the most sampled documents to hold (``done``: the finished stages)."""
    import json as _json

    if stage.name == "fetch":
        return max(range(stage.tasks), key=lambda r: _rows(done["sample"].dir / "chosen", r))
    if stage.name == "label":
        return max(range(stage.tasks), key=lambda r: _rows(done["fetch"].dir / "fetched", r))
    if stage.name == "train":
        counts = _json.loads((done["sample"].dir / "sample.json").read_text())["per_domain"]
        domains = sorted(counts)
        return domains.index(max(domains, key=lambda d: counts[d]))
    return 0


def run_measured(config, measured, every_rank: bool = False, until: str = "finalize") -> dict[str, list]:
    """Run the pipeline of ``config`` up to ``until``; for each stage in ``measured``, the largest task (or
    every task) runs first in a fresh measured process, then the executor runs the rest. Returns the
    measurements per stage."""
    from curation.pipeline import build_stages
    from rexbert_common.executors import make_executor, run_stage

    results: dict[str, list] = {}
    done: dict = {}
    for stage in build_stages(config):
        if stage.name in measured:
            ranks = range(stage.tasks) if every_rank else [largest_task(stage, done)]
            results[stage.name] = [measure_task(config, stage.name, rank) for rank in ranks]
        run_stage(make_executor(stage, config.executor), stage.name)
        done[stage.name] = stage
        if stage.name == until:
            break
    return results


# ------------------------------------------------------------------------- 6. inputs and configs for it
SYNTHETIC_VOCABULARY = (  # split into words where used
    "the a of and to in is was for on with as by at from this that it be are or an which their his her "
    "garden river morning letter village travel music engine wheel market story season window evening "
    "friend house road winter summer train station kitchen table book chapter harbour mountain field"
)


def _synthetic_text(rng: random.Random, commerce: bool) -> str:
    """~1,450 characters of English-like prose in 12 lines; commerce documents name a price."""
    vocabulary, lines = SYNTHETIC_VOCABULARY.split(), []
    for k in range(12):
        words = [rng.choice(vocabulary) for _ in range(22)]
        if commerce and k == 3:
            words += ["price", "£", str(rng.randrange(5, 500))]
        lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines)


def synthetic_input(folder: Path, files: int, per_file: int) -> Path:
    """``files`` jsonl files of ``per_file`` documents of equal length (so a sample's bytes do not depend on
    which documents it drew), a third each in hobby / automotive (filter-required) and fashion (direct),
    half of them commerce. 10x input = 10x documents per file."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        rng = random.Random(f)
        records = [
            {
                "text": _synthetic_text(rng, i % 2 == 0),
                "domain": ("hobby", "automotive", "fashion")[i // 2 % 3],
            }
            for i in range(per_file)
        ]
        (folder / f"part-{f:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def stage_config(input_dir: Path, out: Path, endpoint: str, tasks: int, per_domain: int, **overrides):
    """The packaged default config on ``input_dir`` with HTTP labelers at ``endpoint`` (primary and auditor
    are different served models), ``tasks`` tasks and ``per_domain`` sampled documents per domain; the
    audit pool is a quarter of the sample, so most labels come from the endpoint, not the audit's cache."""
    import yaml

    from curation.config import DEFAULT_CONFIG, config_from_dict

    data = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    data["domains"] = {"filter_required": ["hobby", "news", "automotive", "sports"], "directly_selected": []}
    data["domains"]["directly_selected"] = ["fashion", "beauty"]
    labeler = {"kind": "http", "endpoint": endpoint, "batch_size": 16, "backoff_s": 0.1}
    data = _merged(
        data,
        {
            "input": {"demo": False, "sources": [{"path": str(input_dir)}]},
            "sampling": {"per_domain": per_domain},
            "labeler": {**labeler, "model": "primary"},
            "audit": {
                "labeler": {**labeler, "model": "auditor"},
                "allow_same_model": False,
                "pool_per_domain": max(1, per_domain // 4),
                "subset_per_class": 10,
                "min_per_stratum": 2,
                "min_pairs": 5,
            },
            "classifier": {"kfold": 3},
            "executor": {"kind": "local", "tasks": tasks, "workers": 1},
            "output": {"dir": str(out)},
        },
    )
    return config_from_dict(_merged(data, overrides))


SECTIONS = ("filters", "workers", "rss", "minhash", "memory", "costs")
STAGES = ("prepare", "sample", "fetch", "audit", "label", "train", "buckets", "cluster", "select", "finalize")
# the grid's input: the URL blocklist's ~10 s load per task, the quality rules and MinHash are prepare's and
# select's cost, not the sample's; they are off so a 10x input stays a quick run
GRID = {
    "cleaning": {
        "adult": {"url_filter": False},
        "quality": {"gopher": False, "c4": False, "fineweb": False},
        "dedup": {"enabled": False},
    }
}
SAMPLE_STAGES = ("sample", "fetch", "audit", "label", "train")


def bench_memory_grid(tmp: Path, files: int, per_file: int, per_domain: int) -> list[list]:
    """Peak memory (Python + Arrow) of every task of the sample..train stages at 1x / 10x input and 1 / 8
    tasks, the per-domain sample fixed; the largest task of each sharded stage."""
    peaks: dict[tuple[int, int], dict[str, list[dict]]] = {}
    with StubEndpoint() as endpoint:
        for copies in (1, 10):
            source = synthetic_input(tmp / f"grid-in-{copies}x", files, per_file * copies)
            for tasks in (1, 8):
                config = stage_config(
                    source, tmp / f"grid-{copies}x-{tasks}", endpoint, tasks, per_domain, **GRID
                )
                peaks[copies, tasks] = run_measured(config, SAMPLE_STAGES, every_rank=True, until="train")
    rows = []
    for stage in SAMPLE_STAGES:
        top = {key: max(m["traced"] for m in peaks[key][stage]) for key in peaks}
        rows.append(
            [
                stage,
                *(f"{top[key] / 1024:,.0f}" for key in ((1, 1), (10, 1), (1, 8), (10, 8))),
                f"{top[10, 1] / top[1, 1]:.2f}x",
                f"{top[10, 8] / top[10, 1]:.2f}x",
                f"{max(m['load'][1] for key in peaks for m in peaks[key][stage]):.1f}",
            ]
        )
    return rows


# ------------------------------------------------------------------- 8. per-stage costs per document
def _step_stat(stage, rank: int, step: int, key: str) -> float:
    steps = json.loads((stage.dir / "logs" / "stats" / f"{rank:05d}.json").read_text())
    value = steps[step]["stats"].get(key, 0)
    return value["total"] if isinstance(value, dict) else value


def task_units(stage, rank: int, done: dict) -> tuple[str, int]:
    """(unit, count) of what task ``rank`` of a finished ``stage`` handled: its cost grows with that."""
    prepared = lambda r: json.loads((done["prepare"].dir / "docs" / f"{r:05d}.json").read_text())["documents"]
    all_prepared = lambda: sum(prepared(r) for r in range(done["prepare"].tasks))
    name = stage.name
    if name == "prepare":
        return "input doc", int(_step_stat(stage, rank, 0, "forwarded"))
    if name == "sample":
        return "sampled key", json.loads((stage.dir / "sample.json").read_text())["total"]
    if name in ("fetch", "label"):
        return "sampled doc", _rows(stage.dir / ("fetched" if name == "fetch" else "labels"), rank)
    if name == "audit":
        return "pool doc", json.loads((stage.dir / "audit.json").read_text())["pool_size"]
    if name == "train":
        records = sorted((stage.dir / "classifiers").glob("*.json"))
        domains = sorted(stage.pipeline[0].config_dict["domains"]["filter_required"])
        path = stage.dir / "classifiers" / f"{domains[rank]}.json"
        return "sampled doc", json.loads(path.read_text())["n_sampled"] if path in records else 0
    if name == "cluster":
        return "duplicate", int(_step_stat(stage, rank, 0, "duplicates"))
    if name == "select":
        return "prepared doc", prepared(rank)
    return "prepared doc", all_prepared()  # buckets (each band reads every signature), finalize


def _fit(points: list[tuple[float, float]]) -> tuple[float | None, float]:
    """(slope, intercept) of a least-squares line; no slope where the units hardly vary or the line explains
    less than 80% of the variance (one-off loads under a shared machine's load, allocator noise)."""
    import numpy as np

    x, y = (np.array(v, dtype=float) for v in zip(*points))
    if x.max() < 1.2 * max(x.min(), 1):
        return None, float(y.mean())
    slope, intercept = np.polyfit(x, y, 1)
    explained = 1 - ((y - (slope * x + intercept)) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12)
    return (float(slope), float(intercept)) if explained >= 0.8 else (None, float(y.mean()))


def bench_stage_costs(records, tmp: Path, per_domains: tuple[int, int], tasks: int) -> tuple[list, dict]:
    """Every task of every stage on the local data, measured in a fresh process (the stages that hold
    sampled documents at two sample sizes); per stage a line ``cost = intercept + slope x units`` for
    seconds, traced bytes and added RSS."""
    from curation.pipeline import build_stages

    source = _write_input(records, tmp / "costs-input", files=8)
    points: dict[str, list[dict]] = {}
    with StubEndpoint() as endpoint:
        for per_domain in per_domains:
            config = stage_config(source, tmp / f"costs-{per_domain}", endpoint, tasks, per_domain)
            # the stages after train do not depend on the sample's size: measured once
            whole = per_domain == per_domains[0]
            stages, until = (STAGES, "finalize") if whole else (SAMPLE_STAGES, "train")
            measured = run_measured(config, stages, every_rank=True, until=until)
            done = {s.name: s for s in build_stages(config)}
            for name, runs in measured.items():
                for m in runs:
                    unit, count = task_units(done[name], m["rank"], done)
                    points.setdefault(name, []).append({**m, "unit": unit, "units": count})
            chars = [len(t) for t in _column(done["fetch"].dir / "fetched", "text")]
    rows, fits = [], {}
    for name in STAGES:
        runs = points.get(name, [])
        if not runs:
            continue
        fit = {key: _fit([(m["units"], m[key]) for m in runs]) for key in ("seconds", "traced", "rss_added")}
        fits[name] = {
            **fit,
            "unit": runs[0]["unit"],
            "rss_base": max(m["rss_base"] for m in runs),
            "rss_max": max(m["rss_added"] for m in runs),
        }
        rows.append(
            [
                name,
                runs[0]["unit"],
                f"{min(m['units'] for m in runs):,}-{max(m['units'] for m in runs):,}",
                _slope(fit["seconds"], 1e3, ".2f"),
                f"{fit['seconds'][1]:.2f}",
                _slope(fit["traced"], 1, ",.0f"),
                f"{max(m['traced'] for m in runs) / 2**20:.1f}",
                _slope(fit["rss_added"], 1, ",.0f"),
                f"{max(m['rss_added'] for m in runs) / 2**20:.0f}",
                f"{min(m['load'][0] for m in runs):.1f}-{max(m['load'][1] for m in runs):.1f}",
            ]
        )
    fits["mean_sampled_chars"] = sum(chars) / max(1, len(chars))
    return rows, fits


def _slope(fit: tuple[float | None, float], scale: float, fmt: str) -> str:
    return "-" if fit[0] is None else format(fit[0] * scale, fmt)


def _column(folder: Path, column: str) -> list:
    import pyarrow.parquet as pq

    return [
        v
        for path in sorted(folder.glob("*.parquet"))
        for v in pq.read_table(path, columns=[column])[0].to_pylist()
    ]


def _cluster_input(folder: Path, files: int, docs_per_file: int, duplicated: int, bands: int, seed: int = 0):
    """What the buckets stage hands the cluster stage, written directly: ``keys/<file>.keys`` (an 8-byte id
    hash per document) and ``dups/<band>.dups`` (datatrove's (file, doc, file, doc) uint32 tuples): the
    ``duplicated`` documents form pairs, each pair found by ``bands`` LSH bands (FineWeb's 14 x 8 finds a
    pair at Jaccard 0.8 in 12-13 of 14)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "keys").mkdir(parents=True)
    (folder / "dups").mkdir()
    for f in range(files):
        rng.integers(0, 2**63, docs_per_file, dtype=np.uint64).astype("<u8").tofile(
            folder / "keys" / f"{f:05d}.keys"
        )
    chosen = rng.choice(files * docs_per_file, size=duplicated, replace=False)
    pairs = np.sort(chosen.reshape(-1, 2), axis=1)
    tuples = np.stack(
        [
            pairs[:, 0] // docs_per_file,
            pairs[:, 0] % docs_per_file,
            pairs[:, 1] // docs_per_file,
            pairs[:, 1] % docs_per_file,
        ],
        axis=1,
    ).astype("<u4")
    for band in range(bands):
        tuples[np.lexsort(tuples.T[::-1])].tofile(folder / "dups" / f"{band:05d}.dups")
    return folder


def bench_cluster_costs(tmp: Path, docs: int, duplicated: int) -> tuple[list, dict]:
    """The cluster stage (one task) on synthetic bucket output at (docs, duplicated), (2 docs, duplicated)
    and (docs, 2 duplicated): bytes and seconds per document and per duplicated document."""
    from curation.config import DedupConfig
    from curation.minhash import KeyedMinhashCluster

    files, results = 64, {}
    for label, n, d in (
        ("base", docs, duplicated),
        ("2x docs", 2 * docs, duplicated),
        ("2x dups", docs, 2 * duplicated),
    ):
        folder = _cluster_input(tmp / f"cluster-{n}-{d}", files, n // files, d, bands=12)
        step = KeyedMinhashCluster(
            str(folder / "dups"), str(folder / "remove"), str(folder / "keys"), DedupConfig()
        )
        results[label] = {
            "docs": n,
            "duplicated": d,
            **in_fresh_process(_pipeline_task, [step], 1, str(folder / "logs"), 0),
        }
    base, more_docs, more_dups = results["base"], results["2x docs"], results["2x dups"]
    per_doc = {k: (more_docs[k] - base[k]) / docs for k in ("traced", "rss_added", "seconds")}
    per_dup = {k: (more_dups[k] - base[k]) / duplicated for k in ("traced", "rss_added", "seconds")}
    rows = [
        [
            label,
            f"{r['docs']:,}",
            f"{r['duplicated']:,}",
            f"{r['seconds']:.1f}",
            f"{r['traced'] / 2**20:.1f}",
            f"{r['rss_added'] / 2**20:.1f}",
            f"{r['load'][0]:.1f}-{r['load'][1]:.1f}",
        ]
        for label, r in results.items()
    ]
    return rows, {"per_doc": per_doc, "per_duplicate": per_dup}


def _encoder_task(texts: list[str]) -> dict:
    """The offline zero-shot labeler (torch + the bundled MiniLM encoder) loaded and labelling a batch."""
    from curation.config import LabelerConfig
    from curation.labelers import make_labeler
    from curation.relevance import get_prompt

    labeler = make_labeler(LabelerConfig(kind="zero_shot", batch_size=64, max_chars=2000))
    return _measured(lambda: labeler.label_batch(texts, get_prompt("v1")))


def derived_defaults(fits: dict, cluster: dict, encoder: dict) -> list[list]:
    """The measured quantities behind the per-stage memory defaults (curation/pipeline.py,
    docs/curation.md *Resources per stage* shows the arithmetic)."""
    mib = lambda n_bytes: f"{n_bytes / 2**20:,.0f} MiB"
    per_doc = {s: fits[s]["traced"][0] for s in ("fetch", "label", "train") if fits[s]["traced"][0]}
    widest = max(per_doc, key=per_doc.get) if per_doc else None
    chars = fits["mean_sampled_chars"]
    return [
        [
            "resident size before a task",
            mib(fits["prepare"]["rss_base"]),
            "interpreter + datatrove, pyarrow, sklearn",
        ],
        [
            "prepare / select: RSS added",
            mib(max(fits[s]["rss_max"] for s in ("prepare", "select"))),
            "lid.176, URL blocklist, spaCy",
        ],
        ["fetch: RSS added", mib(fits["fetch"]["rss_max"]), "the quality filters re-applied (spaCy)"],
        ["train: RSS added", mib(fits["train"]["rss_max"]), "URL blocklist (adult drop rate) + fastText"],
        ["encoder (zero-shot labeler)", mib(encoder["rss_added"]), "torch + MiniLM, one batch of 64"],
        ["bytes per sampled key (sample)", f"{fits['sample']['traced'][0] or 0:,.0f}", "traced slope"],
        [
            "bytes per sampled doc",
            "-" if widest is None else f"{per_doc[widest]:,.0f} ({per_doc[widest] / chars:.1f} per char)",
            f"{widest} (widest of fetch, label, train); sampled docs average {chars:,.0f} chars",
        ],
        [
            "cluster: bytes per duplicated doc",
            f"{cluster['per_duplicate']['rss_added']:,.0f}",
            f"RSS slope (traced {cluster['per_duplicate']['traced']:,.0f})",
        ],
        [
            "cluster: bytes per doc",
            f"{cluster['per_doc']['rss_added']:.1f}",
            f"RSS slope (traced {cluster['per_doc']['traced']:.1f})",
        ],
        [
            "cluster: seconds per duplicated doc",
            f"{cluster['per_duplicate']['seconds'] * 1e6:,.0f} us",
            "under the load shown above",
        ],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer documents and repeats (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--one-task", nargs=2, metavar=("INPUT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_task:
        _one_task(*args.one_task)
        return 0
    sections = set(args.sections.split(","))
    if unknown := sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
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
    if "filters" in sections:
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
    if "workers" in sections:
        print(f"\n### prepare stage, 4 tasks: 1 vs 2 workers (interleaved, median of {repeats})\n")
        print(
            markdown_table(["workers", "seconds", "docs/s", "speed-up"], bench_workers(records, tmp, repeats))
        )
    if "rss" in sections:
        print("\n### peak RSS of one prepare task (fresh process)\n")
        print(markdown_table(["input", "docs", "peak RSS MiB", "seconds", "ratio"], bench_rss(records, tmp)))
    if "minhash" in sections:
        print("\n### MinHash stages on planted pairs (5-gram shingles)\n")
        print(
            markdown_table(
                ["buckets x hashes", "pairs J>=0.8", "recall", "pairs J 0.45-0.55", "flagged (FP rate)"],
                bench_minhash(records, tmp),
            )
        )
    if "memory" in sections:
        print(
            "\n### per-task peak memory (Python + Arrow, KiB), per-domain sample 100 x 2 domains: 1x / 10x "
            "synthetic input (16 files, 320 / 3,200 documents), 1 / 8 tasks (the largest task)\n"
        )
        print(
            markdown_table(
                [
                    "stage",
                    "1x, 1 task",
                    "10x, 1 task",
                    "1x, 8 tasks",
                    "10x, 8 tasks",
                    "10x / 1x",
                    "8 / 1 tasks",
                    "max load",
                ],
                bench_memory_grid(tmp, files=16, per_file=20, per_domain=100),
            )
        )
    if "costs" in sections:
        per_domains = (40, 160) if args.quick else (100, 400)
        rows, fits = bench_stage_costs(records, tmp, per_domains, tasks=4)
        print(
            "\n### per-stage costs on the local data, every task in a fresh process, per_domain "
            f"{per_domains}, 4 tasks: cost = intercept + slope x units (slope: bytes or ms per unit)\n"
        )
        print(
            markdown_table(
                [
                    "stage",
                    "unit",
                    "units per task",
                    "ms / unit",
                    "s per task (intercept)",
                    "traced B / unit",
                    "max traced MiB",
                    "RSS B / unit",
                    "max RSS added MiB",
                    "load",
                ],
                rows,
            )
        )
        docs, duplicated = (40_000, 10_000) if args.quick else (400_000, 100_000)
        cluster_rows, cluster = bench_cluster_costs(tmp, docs, duplicated)
        print("\n### cluster stage (one task) on synthetic bucket output, 64 files, each pair in 12 bands\n")
        print(
            markdown_table(
                ["run", "documents", "duplicated", "seconds", "traced MiB", "RSS added MiB", "load"],
                cluster_rows,
            )
        )
        encoder = in_fresh_process(_encoder_task, [r["text"] for r in records[:64]])
        print("\n### defaults recomputed from these measurements (docs/curation.md, *Resources per stage*)\n")
        print(markdown_table(["constant", "measured", "from"], derived_defaults(fits, cluster, encoder)))
    print(f"\nload average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
