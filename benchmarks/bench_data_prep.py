"""Training-data preparation benchmark: the build stage of ``rexbert prepare`` (read, tokenize, mine, pack,
write shards) against the limit of this step, and its scaling.

* **per core vs the tokenizer**: one task on one worker builds a phase; its real tokens per second of
  shard building (and of the stages' wall time, start-up included) are compared with the tokenizer's own
  ``encode_batch`` (Rust, one thread) on the same documents in the same chunks (the step cannot beat it;
  goal >= 0.5 of it; ``--repeats`` runs of each, interleaved, medians), for a phase of product and general
  text without Guided MLM (phase 1, most of a recipe's tokens), the same with Guided MLM (phase 3: product
  text mined) and one of general text only;
* **1 vs 2 workers**: the same phase in 4 tasks on 1 and on 2 workers (runs 1, 2, 2, 1, ...; medians;
  goal >= 1.7×). Two workers need two idle cores: the CPU time other work used during these runs is
  measured (``_common.ForeignLoad``: the machine's busy time minus this benchmark's own), and above half a
  core the ratio is printed as "not measurable";
* **memory**: the peak RSS one build task adds to its (fresh) process, over sources of 1 vs 10 copies of
  the files and a 10× larger phase (the kernel's high-water mark reset after the imports).

Sources: WikiText-2 (general, text) and Icecat products (domain, parquet, attribute mining), a 4096-token BPE
trained on them once (the setup stage, outside the timings), 512-token rows, domain share 0.2 → 0.9.
Every measured run is a fresh process (``--child``), so nothing is cached between runs.

    REXBERT_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_data_prep \
        [--tokens 2000000] [--repeats 2] [--memory-tokens 200000] [--sections core,workers,memory]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _corpus(data_dir: Path, work: Path, copies: int) -> tuple[str, str]:
    """Folders holding ``copies`` links to the WikiText and Icecat files."""
    wiki, icecat = work / f"wiki{copies}", work / f"icecat{copies}"
    for folder, source in (
        (wiki, "wikitext2_raw_test/wiki.test.raw"),
        (icecat, "icecat_products_chorus/icecat_text.parquet"),
    ):
        folder.mkdir(exist_ok=True)
        for k in range(copies):
            link = folder / f"part-{k:03d}{Path(source).suffix}"
            if not link.exists():
                link.symlink_to(data_dir / source)
    return str(wiki), str(icecat)


def _recipe(data_dir: str, work: str, copies: int, tokens: int, out: str):
    """Phases 1 and 3 mix in products, 0.2 → 0.9; phase 3 mines them for Guided MLM (phase 1, without
    Guided MLM, does not); phase 2 is general text only."""
    from training.recipe import recipe_from_dict

    wiki, icecat = _corpus(Path(data_dir), Path(work), copies)
    phase = {"tokens": tokens, "max_seq_len": 512, "batch_size": 8, "micro_batch_size": 8}
    mixed = {**phase, "mixture": {"domain_start": 0.2, "domain_end": 0.9}}
    return recipe_from_dict(
        {
            "name": "bench",
            "output_dir": out,
            "tokenizer": {"vocab_size": 4096, "train_docs": 2000},
            "data": {
                "buffer_docs": 256,
                "shard_buffers": 4,
                "max_doc_tokens": None,  # whole documents: the same tokens as encode_batch's
                "general": [{"name": "wiki", "path": wiki}],
                "domain": [
                    {
                        "name": "icecat",
                        "path": icecat,
                        "text_fields": ["title", "short_description"],
                        "mine_attributes": True,
                    }
                ],
            },
            "phase1": mixed,
            "phase2": phase,
            "phase3": {**mixed, "masking": {"guided_fraction": 0.05}},  # the only phase that mines
        }
    )


def _child_build(
    data_dir: str,
    work: str,
    copies: int,
    tokens: int,
    tasks: int,
    workers: int,
    out: str,
    phase: str = "phase1",
):
    """One build of ``phase`` (setup copied in beforehand): tokens, wall seconds of the stages, seconds spent
    building shards, and the peak RSS the build adds to the process (one worker: the tasks run here)."""
    from benchmarks._common import peak_rss_delta_mib
    from rexbert_common.executors import ExecutorConfig
    from training.prepare import PreparedInputs, PrepareLayout, prepared_rows, run_prepare

    recipe = _recipe(data_dir, work, copies, tokens, out)
    layout = PrepareLayout.of(recipe)
    PreparedInputs.load(layout)  # imports and first loads outside the measurement
    timing = {}

    def build() -> None:
        start = time.perf_counter()
        run_prepare(recipe, [phase], ExecutorConfig(kind="local", tasks=tasks, workers=workers))
        timing["seconds"] = time.perf_counter() - start

    added = peak_rss_delta_mib(build)
    markers = [json.loads(p.read_text()) for p in layout.rows_dir(phase).glob("shard-*.json")]
    return {
        "built_tokens": sum(m["tokens"] for m in markers),
        "kept_tokens": prepared_rows(layout, phase).stats.num_tokens,
        "seconds": timing["seconds"],
        "shard_seconds": sum(m["seconds"] for m in markers),
        "peak_rss_added_mb": added,
    }


def _child_encode(data_dir: str, work: str, tokens: int, out: str, phase: str) -> dict:
    """``encode_batch`` alone on the documents of the built shards, in the build's 64-document chunks."""
    from training.phase_data import CHUNK_DOCS, fast_encoder
    from training.prepare import PreparedInputs, PrepareLayout

    recipe = _recipe(data_dir, work, 1, tokens, out)
    layout = PrepareLayout.of(recipe)
    inputs = PreparedInputs.load(layout)
    builder, plan = inputs.builder(phase)
    shards = len(list(layout.rows_dir(phase).glob("shard-*.json")))
    texts = []
    for shard in range(shards):
        for r in plan.ranges(shard):
            texts += [t for t in builder.sources[r.source].draws.read(r.start, r.stop) if t is not None]
    encoder = fast_encoder(inputs.tokenizer)
    encoder.encode_batch(texts[:CHUNK_DOCS])  # warm-up
    start = time.perf_counter()
    count = 0
    for k in range(0, len(texts), CHUNK_DOCS):
        count += sum(
            len(e.ids) for e in encoder.encode_batch(texts[k : k + CHUNK_DOCS], add_special_tokens=True)
        )
    seconds = time.perf_counter() - start
    return {"tokens": count, "seconds": seconds, "documents": len(texts)}


def _run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_data_prep", "--child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fresh(work: Path, name: str, setup: Path) -> str:
    """A new output folder holding the shared setup (index, tokenizer, miner, sizes): only the phase runs."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    for part in ("prepare", "tokenizer"):
        shutil.copytree(setup / part, out / part)
    return str(out)


def quiet_enough(foreign_cores: float, cores: int) -> bool:
    """Two workers can show their speed-up only with two cores free of other work (other work may have
    used half a core on average while the scaling runs ran)."""
    return cores >= 2 and foreign_cores <= cores - 2 + 0.5


def _per_core(data_dir: Path, work: Path, setup: Path, tokens: int, repeats: int) -> None:
    """One worker against encode_batch on the same documents, for each kind of phase: ``repeats`` builds
    and as many encode runs, interleaved (build, encode, encode, build, ...) so a drift of the machine's
    speed meets both; each run printed, the ratio of the medians the verdict."""
    from benchmarks._common import ForeignLoad

    for phase, what in (
        ("phase1", "products 0.2 → 0.9, no Guided MLM"),
        ("phase3", "products 0.2 → 0.9, mined for Guided MLM"),
        ("phase2", "general text"),
    ):
        shard_rates, wall_rates, encode_rates = [], [], []
        with ForeignLoad() as foreign:
            for k, step in enumerate((["build", "encode", "encode", "build"] * repeats)[: 2 * repeats]):
                if step == "build":
                    out = _fresh(work, f"core-{phase}-{k}", setup)
                    build = _run(["build", str(data_dir), str(work), "1", str(tokens), "1", "1", out, phase])
                    shard_rates.append(build["built_tokens"] / build["shard_seconds"])
                    wall_rates.append(build["built_tokens"] / build["seconds"])
                    print(
                        f"  {phase} build: {build['built_tokens']:,} tokens, shards {shard_rates[-1]:,.0f} "
                        f"tokens/s ({wall_rates[-1]:,.0f} with the stages' start-up)",
                        flush=True,
                    )
                else:
                    encode = _run(["encode", str(data_dir), str(work), str(tokens), out, phase])
                    encode_rates.append(encode["tokens"] / encode["seconds"])
                    print(
                        f"  {phase} encode_batch: {encode_rates[-1]:,.0f} tokens/s on the same "
                        f"{encode['documents']:,} documents",
                        flush=True,
                    )
        shard, wall, encode_rate = map(statistics.median, (shard_rates, wall_rates, encode_rates))
        other = f"{foreign.cores:.2f} cores" if foreign.cores is not None else "unknown"
        print(
            f"one worker, {what}: building shards {shard:,.0f} tokens/s ({wall:,.0f} with the stages' "
            f"start-up); encode_batch {encode_rate:,.0f} tokens/s (medians of {repeats}); ratio "
            f"{shard / encode_rate:.2f} ({wall / encode_rate:.2f}) (goal >= 0.5; other work used {other})",
            flush=True,
        )


def _workers(
    data_dir: Path, work: Path, setup: Path, tokens: int, repeats: int, cores: int, load_before: float
) -> None:
    """The same phase in 4 tasks on 1 and 2 workers, interleaved 1, 2, 2, 1, ...; medians."""
    from benchmarks._common import ForeignLoad

    rates: dict[int, list[float]] = {1: [], 2: []}
    with ForeignLoad() as foreign:
        for k, workers in enumerate(([1, 2, 2, 1] * repeats)[: 2 * repeats]):
            out = _fresh(work, f"w{k}", setup)
            result = _run(["build", str(data_dir), str(work), "1", str(tokens), "4", str(workers), out])
            rates[workers].append(result["built_tokens"] / result["seconds"])
            print(f"4 tasks, {workers} worker(s): {result}", flush=True)
    load_after = os.getloadavg()[0]
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    # other work's CPU use during these runs; the load average (which counts them) where unknown
    other = foreign.cores if foreign.cores is not None else max(load_before, load_after)
    scaling = f"{two / one:.2f}" if quiet_enough(other, cores) else "not measurable"
    print(
        f"4 tasks: 1 worker {one:,.0f} tokens/s, 2 workers {two:,.0f} tokens/s; 2 vs 1: {scaling} "
        f"(goal >= 1.7; other work used {other:.2f} of {cores} cores meanwhile; load average "
        f"{load_before:.2f} → {load_after:.2f})",
        flush=True,
    )


def _memory(data_dir: Path, work: Path, setup: Path, memory_tokens: int) -> None:
    """The peak RSS one task adds at 1× and 10× (input and phase)."""
    from rexbert_common.executors import ExecutorConfig
    from training.prepare import run_prepare

    setup10 = work / "setup10"
    recipe10 = _recipe(str(data_dir), str(work), 10, memory_tokens * 10, str(setup10))
    shutil.copytree(setup / "tokenizer", setup10 / "tokenizer")
    run_prepare(recipe10, [], ExecutorConfig(tasks=1, workers=1))
    peaks = {}
    for copies, root in ((1, setup), (10, setup10)):
        out = _fresh(work, f"m{copies}", root)
        tokens = memory_tokens * copies
        result = _run(["build", str(data_dir), str(work), str(copies), str(tokens), "1", "1", out])
        peaks[copies] = result["peak_rss_added_mb"]
        print(f"memory: corpus ×{copies}, {tokens:,} tokens, one task: {result}", flush=True)
    print(
        f"peak RSS a one-worker build adds, ×1 {peaks[1]:.0f} MiB, ×10 {peaks[10]:.0f} MiB: "
        f"{peaks[10] / peaks[1]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2_000_000, help="phase budget of the throughput runs")
    parser.add_argument(
        "--memory-tokens", type=int, default=200_000, help="phase budget of the 1× memory run"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per worker count, and builds / encode runs per phase"
    )
    parser.add_argument(
        "--sections", default="core,workers,memory", help="comma list of core, workers, memory (default all)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            d, w, copies, tokens, tasks, workers, out, *phase = rest
            print(
                json.dumps(
                    _child_build(d, w, int(copies), int(tokens), int(tasks), int(workers), out, *phase)
                )
            )
        else:
            d, w, tokens, out, phase = rest
            print(json.dumps(_child_encode(d, w, int(tokens), out, phase)))
        return
    from rexbert_common.executors import ExecutorConfig
    from training.prepare import run_prepare

    sections = set(args.sections.split(","))
    if unknown := sections - {"core", "workers", "memory"}:
        parser.error(f"--sections: unknown {sorted(unknown)}")
    data_dir = Path(os.environ.get("REXBERT_DATA_DIR", ROOT.parent / "shared" / "data"))
    work = Path(tempfile.mkdtemp(prefix="bench_data_prep_"))
    cores = os.cpu_count() or 1
    try:
        setup = work / "setup"
        run_prepare(
            _recipe(str(data_dir), str(work), 1, args.tokens, str(setup)),
            [],
            ExecutorConfig(tasks=1, workers=1),
        )
        load_before = os.getloadavg()[0]
        print(f"cores: {cores}, load (1 min) before: {load_before:.2f}", flush=True)
        if "core" in sections:
            _per_core(data_dir, work, setup, args.tokens, args.repeats)
        if "workers" in sections:
            _workers(data_dir, work, setup, args.tokens, args.repeats, cores, load_before)
        if "memory" in sections:
            _memory(data_dir, work, setup, args.memory_tokens)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
