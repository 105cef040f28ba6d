"""``rexbert plan``: a recipe's tokens, steps, GPU-hours, memory, preparation cost and disk on N GPUs."""

from __future__ import annotations

import argparse

from rexbert_common.config import add_override_argument

GPU_CHOICES = ("h100", "h200", "a100")  # training.plan.GPUS (not imported here: `rexbert --help` stays light)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="estimate a recipe's time, memory, data preparation and disk on N GPUs before running it",
        description="Estimate, per phase and in total, a recipe's tokens, optimizer steps, FLOPs per token, "
        "GPU-hours and wall time at an MFU, the peak GPU memory of one training step (a fake-tensor dry run "
        "of the real step), whether it fits, data-preparation core-hours and disk. Nothing is downloaded, "
        "read or written.",
    )
    parser.add_argument("--recipe", required=True, help="YAML recipe (training/recipes/<name>.yaml)")
    parser.add_argument("--gpus", type=int, required=True, help="number of GPUs (= training processes)")
    parser.add_argument("--gpu", default="h100", choices=GPU_CHOICES, help="GPU model (default h100)")
    parser.add_argument(
        "--mfu",
        type=float,
        default=None,
        help="model FLOPs utilisation to assume (default 0.25, ModernBERT's pace; use your run's `mfu` log)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_override_argument(parser, "phase1.micro_batch_size=32")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from rexbert_common.errors import UserError
    from training.recipe import load_recipe

    if args.gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {args.gpus}")
    if args.mfu is not None and not 0 < args.mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {args.mfu}")
    recipe = load_recipe(args.recipe, args.overrides)

    from training.plan import DEFAULT_MFU, format_plan, plan_recipe

    plan = plan_recipe(recipe, args.gpus, args.gpu, DEFAULT_MFU if args.mfu is None else args.mfu)
    print(json.dumps(plan.as_dict(), indent=1) if args.json else format_plan(plan))
    return 0
