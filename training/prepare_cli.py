"""``rexbert prepare``: build a recipe's packed training rows as datatrove tasks (local, Ray or Slurm), into
the output folder where ``rexbert train`` / ``training/run.py`` with the same recipe and ``--set`` finds them.

    rexbert prepare --recipe R [--phase 1|2|3|all] [--executor local|ray|slurm] [--tasks N] [--workers W]
                    [--output-dir D] [--set field.path=value ...]
"""

from __future__ import annotations

import argparse
import json

from rexbert_common.config import add_override_argument
from rexbert_common.executors import add_executor_arguments, executor_overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="build a recipe's packed training rows on a datatrove executor (local, Ray, Slurm)",
        description="Index the sources, train/load the tokenizer, fit the Guided-MLM miner, then tokenize, "
        "mine and pack each phase's shards as datatrove tasks. Rows do not depend on the executor or the "
        "task count; rerunning the command resumes (only missing shards are built). Training with the same "
        "recipe, --set overrides and output folder uses the prepared rows.",
    )
    parser.add_argument("--recipe", required=True, help="YAML recipe (training/recipes/<name>.yaml)")
    parser.add_argument("--phase", default="all", choices=["1", "2", "3", "all"], help="which phase(s)")
    parser.add_argument("--output-dir", default=None, help="overrides the recipe's output_dir")
    add_executor_arguments(parser, "data.executor")
    add_override_argument(parser, "data.executor.slurm={partition: cpu, time: '12:00:00'}")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.epochs import format_report
    from training.prepare import PrepareLayout, read_setup, run_prepare
    from training.recipe import PHASES, load_recipe

    overrides = [*args.overrides, *executor_overrides(args, "data.executor")]
    recipe = load_recipe(args.recipe, overrides)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    phases = list(PHASES) if args.phase == "all" else [PHASES[int(args.phase) - 1]]
    executor = recipe.data.executor
    if not run_prepare(recipe, phases, executor):
        print(f"submitted the preparation of {', '.join(phases)} to Slurm; logs under {recipe.output_dir}")
        return 0
    layout = PrepareLayout.of(recipe)
    setup = read_setup(layout.setup_dir)
    for name in phases:
        rows = layout.rows_dir(name)
        stats = json.loads((rows / "build.json").read_text())["stats"]
        print(f"{format_report(name, setup['epochs'][name])}")
        print(f"{name}: {stats['rows']} rows, {stats['tokens']} tokens in {rows}")
    return 0
