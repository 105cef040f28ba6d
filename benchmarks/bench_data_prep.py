"""Data-preparation benchmark: tokenize + mine + pack a phase's rows into on-disk shards.

* **throughput**: the same phase built with ``data.workers`` = 1 and 2 (runs interleaved 1, 2, 2, 1, ...;
  medians), real tokens per second of wall time including the worker pool's start-up;
* **memory**: peak RSS (this process + its children, fresh subprocesses) of a build over a corpus and a
  budget 10× larger than the small one (every source streaming: folders of 1 vs 10 copies of the files).

Sources: WikiText-2 (general, text) and Icecat products (domain, parquet, attribute mining), a 4096-token
BPE trained on them, 512-token rows, domain share 0.2 → 0.9.

    REXBERT_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.bench_data_prep [--tokens 400000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def _build(data_dir: str, work: str, copies: int, tokens: int, workers: int, out: str) -> dict:
    """One build in this process; returns its size, wall time and peak RSS."""
    from training.attribute_miner import AttributeMiner
    from training.data import load_source
    from training.phase_build import build_phase_rows
    from training.recipe import DataConfig, MixtureConfig, PhaseConfig, SourceConfig
    from training.tokenizer import load_tokenizer

    wiki_dir, icecat_dir = _corpus(Path(data_dir), Path(work), copies)
    wiki = load_source(SourceConfig(name="wiki", path=wiki_dir, streaming=True), shuffle_buffer=1000)
    icecat = load_source(
        SourceConfig(
            name="icecat",
            path=icecat_dir,
            text_fields=["title", "short_description"],
            streaming=True,
            mine_attributes=True,
        ),
        shuffle_buffer=1000,
    )
    miner = AttributeMiner().fit(icecat.sample(5000, __import__("numpy").random.default_rng(0)))
    tok = load_tokenizer(str(Path(work) / "tokenizer"))
    data = DataConfig(buffer_docs=256, shard_buffers=4, max_doc_tokens=2048, workers=workers)
    phase = PhaseConfig(
        tokens=tokens, max_seq_len=512, mixture=MixtureConfig(domain_start=0.2, domain_end=0.9)
    )
    start = time.perf_counter()
    rows = build_phase_rows([wiki], [icecat], data, phase, tok, miner, 0, Path(out))
    elapsed = time.perf_counter() - start
    peak_kb = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return {"tokens": rows.stats.num_tokens, "seconds": elapsed, "peak_rss_mb": peak_kb / 1024}


def _subprocess(args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_data_prep", "--child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=400_000, help="budget of the throughput runs")
    parser.add_argument("--memory-tokens", type=int, default=100_000, help="budget of the 1× memory run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=6, metavar=("DATA", "WORK", "COPIES", "TOKENS", "WORKERS", "OUT"))
    args = parser.parse_args()
    if args.child:
        data_dir, work, copies, tokens, workers, out = args.child
        print(json.dumps(_build(data_dir, work, int(copies), int(tokens), int(workers), out)))
        return
    import torch

    from training.data import load_source
    from training.recipe import SourceConfig
    from training.tokenizer import save_tokenizer, train_bpe_tokenizer

    data_dir = Path(os.environ.get("REXBERT_DATA_DIR", ROOT.parent / "shared" / "data"))
    work = Path(tempfile.mkdtemp(prefix="bench_data_prep_"))
    try:
        wiki = load_source(
            SourceConfig(name="w", path=str(data_dir / "wikitext2_raw_test/wiki.test.raw"), max_docs=300)
        )
        save_tokenizer(train_bpe_tokenizer(wiki.texts, vocab_size=4096), work / "tokenizer")
        cpu = torch.backends.cpu.get_cpu_capability()
        print(f"load: {os.getloadavg()}, cpu: {cpu}, cores: {os.cpu_count()}")
        runs: dict[int, list[dict]] = {1: [], 2: []}
        order = [1, 2, 2, 1] * ((args.repeats + 1) // 2)
        for k, workers in enumerate(order[: 2 * args.repeats]):
            result = _subprocess(
                [str(data_dir), str(work), "1", str(args.tokens), str(workers), str(work / f"t{k}")]
            )
            runs[workers].append(result)
            print(f"workers={workers}: {result}", flush=True)
        rate = {w: statistics.median(r["tokens"] / r["seconds"] for r in rs) for w, rs in runs.items()}
        ratio = rate[2] / rate[1]
        print(f"throughput tokens/s: 1 worker {rate[1]:.0f}, 2 workers {rate[2]:.0f}, ratio {ratio:.2f}")
        memory = {}
        for copies in (1, 10, 1, 10):
            tokens = args.memory_tokens * copies
            result = _subprocess(
                [str(data_dir), str(work), str(copies), str(tokens), "1", str(work / f"m{copies}")]
            )
            shutil.rmtree(work / f"m{copies}", ignore_errors=True)
            memory.setdefault(copies, []).append(result)
            print(f"corpus ×{copies}, {tokens} tokens: {result}", flush=True)
        peak = {c: statistics.median(r["peak_rss_mb"] for r in rs) for c, rs in memory.items()}
        print(f"peak RSS MB: ×1 {peak[1]:.0f}, ×10 {peak[10]:.0f}, ratio {peak[10] / peak[1]:.2f}")
        print(f"per-core rate (1 worker): {rate[1]:.0f} tokens/s; load after: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
