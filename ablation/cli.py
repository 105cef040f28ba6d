"""``rexbert ablate --config experiments/<name>.yaml``: run (or resume) a study and write its report."""

from __future__ import annotations

import argparse
import shlex

from rexbert_common.config import add_override_argument


def _run(args: argparse.Namespace) -> int:
    from ablation.config import load_ablation
    from ablation.grid import cells, read_notes, run_grid
    from ablation.report import write_report
    from ablation.sweep import sweep_summary

    config = load_ablation(args.config, args.overrides)
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.report_dir:
        config.report_dir = args.report_dir
    results = run_grid(config, shard=_shard(args.shard))
    expected = len(cells(config))
    if len(results) < expected:
        print(f"[ablate] {len(results)} of {expected} cells finished: the report is written once all are")
        return 0
    arms = [v.name for v in config.arms()]
    command = shlex.join(
        ["rexbert", "ablate", "--config", args.config, *(f"--set={o}" for o in args.overrides)]
    )
    reference = config.reference or arms[0]
    notes, sweep = read_notes(config), sweep_summary(config)
    path = write_report(results, arms, reference, config.report_path, command, notes, sweep)
    print(f"[ablate] report: {path}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    from rexbert_common.errors import UserError

    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 0/3") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {text!r}: expected 0 <= I < N")
    return index, count


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="ablation study: RexBERT curriculum arms vs plain MLM at an equal token budget, seeds repeated",
        description="Train every (variant, seed) cell of a study file that has not finished yet, score "
        "each on held-out text, and write report.md / report.json / PNG plots. Rerunning resumes: finished "
        "cells are kept, an interrupted one continues from its last checkpoint.",
    )
    parser.add_argument("--config", required=True, help="study YAML (experiments/<name>.yaml)")
    parser.add_argument("--output-dir", default=None, help="overrides output_dir (cells, trunks, data split)")
    parser.add_argument("--report-dir", default=None, help="overrides report_dir")
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="train only the seeds at positions I, I+N, ... (one shard per GPU or node; default: all)",
    )
    add_override_argument(parser, "budget.tokens=2000000")
    parser.set_defaults(func=_run)
