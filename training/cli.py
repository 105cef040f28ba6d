"""``rexbert train``: the same options as ``training/run.py``."""

from __future__ import annotations


def register(subparsers) -> None:
    from training.run import add_arguments, run

    parser = subparsers.add_parser(
        "train",
        help="pre-train RexBERT with a three-phase recipe",
        description="Run a training recipe (single process; use `accelerate "
        "launch training/run.py` for several).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
