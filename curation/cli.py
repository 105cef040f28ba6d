"""``rexbert curate``: run (or resume) the Ecom-niverse curation pipeline from a YAML config."""

from __future__ import annotations

import argparse


def _parse_override(item: str) -> tuple[str, object]:
    import yaml

    if "=" not in item:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "curate",
        help="Curate an e-commerce corpus (Ecom-niverse pipeline) into an HF dataset + report.",
        description="Domain selection -> sampling -> LLM labels + QA audit -> per-domain fastText -> "
        "apply at "
        "scale -> LID / quality / adult / MinHash dedup -> HF parquet dataset + card + report. "
        "Rerunning the same command resumes an interrupted run.",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML config (default: the embedded offline demo config curation/configs/default.yaml)",
    )
    parser.add_argument("--output-dir", default=None, help="overrides output.dir")
    parser.add_argument(
        "--workers", type=int, default=None, help="overrides executor.workers (-1 = all cores)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="dotted config override, e.g. --set sampling.per_domain=500",
    )
    parser.add_argument(
        "--stop-after",
        default=None,
        help="stop after this stage (ingest, sample, label, train, clean, dedup, write, report)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from curation.config import load_config
    from curation.pipeline import run_pipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = dict(args.overrides)
    if args.output_dir:
        overrides["output.dir"] = args.output_dir
    if args.workers is not None:
        overrides["executor.workers"] = args.workers
    config = load_config(args.config, overrides)
    results = run_pipeline(config, stop_after=args.stop_after)
    report = results.get("report")
    if report:
        summary = {
            "totals": report["totals"],
            "planted_duplicates": report.get("planted_duplicates"),
            "classifiers_heldout": {d: c.get("heldout") for d, c in report["classifiers"].items()},
            "dataset": str(config.output.dir) + "/dataset",
            "report": str(config.output.dir) + "/report",
        }
        print(json.dumps(summary, indent=2))
    return 0
