"""Run every ``benchmarks/bench_*.py`` one after another (``make bench``).

Each benchmark prints its own Markdown table; this runner only sequences them (running them side by
side would make them compete for the same cores) and saves each output under ``outputs/benchmarks/``.
Pass ``--quick`` through to get the small smoke-sized variants.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark module names to run")
    parser.add_argument("--out", default="outputs/benchmarks", help="folder for the saved outputs")
    args = parser.parse_args(argv)

    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
        names = [n for n in names if n in args.only]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in names:
        command = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print(f"\n=== {' '.join(command)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
        print(result.stdout, end="")
        (out / f"{name}.md").write_text(result.stdout)
        if result.returncode != 0:
            failures.append(name)
            print(result.stderr[-4000:], file=sys.stderr)
        print(f"=== {name}: exit {result.returncode} in {time.perf_counter() - start:.0f} s", flush=True)
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
