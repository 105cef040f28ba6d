"""The ``rexbert`` console script: one subcommand per stage.

Each stage's package owns its subcommand in ``<package>/cli.py`` through a
``register(subparsers)`` function that adds its parser and sets ``func``; heavy
imports happen inside ``func`` so ``rexbert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, why it is optional) -- a stage whose module is missing is simply not offered.
STAGE_MODULES = (
    "curation.cli",
    "training.cli",
    "evaluation.cli",
    "model_cards.cli",
    "rexbert_cli.experiment",
    "rexbert_cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rexbert",
        description="Build, train, evaluate and publish domain-specialised ModernBERT-style encoders.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in STAGE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
