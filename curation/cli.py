"""``rexbert curate``: run (or resume) the Ecom-niverse curation pipeline on a datatrove executor."""

from __future__ import annotations

import argparse

from rexbert_common.config import add_override_argument
from rexbert_common.outputs import add_old_spelling, add_output_dir_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "curate",
        help="Curate an e-commerce corpus (Ecom-niverse pipeline) into an HF dataset + report.",
        description="Domain selection, language ID, quality, boilerplate/ads and adult filters -> LLM "
        "labels + QA audit on a bounded sample -> calibrated per-domain fastText -> global MinHash dedup -> "
        "HF parquet dataset + card + report, as datatrove pipelines. Rerunning the same command resumes a "
        "run; a changed "
        "config recomputes the stages it affects.",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML config (default: the offline demo, curation/configs/default.yaml)",
    )
    add_output_dir_argument(parser, "overrides output.dir")
    parser.add_argument(
        "--executor",
        choices=("local", "ray", "slurm"),
        default=None,
        help="overrides executor.kind (slurm submits dependent jobs and returns)",
    )
    parser.add_argument(
        "--num-tasks",
        dest="tasks",
        type=int,
        default=None,
        metavar="N",
        help="overrides executor.tasks: how many units of work each stage's input is split into",
    )
    add_old_spelling(parser, "--tasks", "--num-tasks", "tasks", type=int)  # --tasks names tasks in eval
    parser.add_argument(
        "--workers", type=int, default=None, help="overrides executor.workers (-1 = all cores)"
    )
    add_override_argument(parser, "sampling.per_domain=500")
    parser.add_argument(
        "--stop-after",
        default=None,
        help="stop after this stage (prepare, label, buckets, cluster, select, finalize)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from curation.config import load_config
    from curation.pipeline import run_pipeline
    from rexbert_common.files import writing
    from rexbert_common.locks import output_lock

    overrides = list(args.overrides)
    for flag, key in (
        ("output_dir", "output.dir"),
        ("executor", "executor.kind"),
        ("tasks", "executor.tasks"),
        ("workers", "executor.workers"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    config = load_config(args.config, overrides)
    # one run per output folder (a Slurm chain is submitted under the lock, then runs on its own)
    with output_lock(config.output.dir, log=print), writing(config.output.dir):
        report = run_pipeline(config, stop_after=args.stop_after)
    if report:
        totals = report["totals"]
        print(
            f"wrote {config.output.dir}/dataset ({totals['docs_out']:,} of {totals['docs_in']:,} documents, "
            f"{totals['words_out']:,} words) and {config.output.dir}/report/report.md"
        )
    elif config.executor.kind == "slurm":
        print(f"submitted the curation stages to Slurm; logs under {config.output.dir}/work/*/logs")
    return 0
