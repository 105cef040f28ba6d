"""The ``rexbert`` console script: one subcommand per stage.

Each stage's package owns its subcommand in ``<package>/cli.py`` through a
``register(subparsers)`` function that adds its parser and sets ``func``; heavy
imports happen inside ``func`` so ``rexbert --help`` stays fast.

Every subcommand shares one error handler: a mistake the user can fix (a
:class:`~rexbert_common.errors.UserError`, a missing file, malformed JSON/YAML)
prints one line naming the problem and exits with status 2; ``--debug`` keeps
the traceback. Library INFO logs are off unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from rexbert_cli.logs import quiet_libraries
from rexbert_common.data import use_data_dir
from rexbert_common.errors import UserError

STAGE_MODULES = (
    "curation.cli",
    "training.cli",
    "training.plan_cli",
    "evaluation.cli",
    "model_cards.cli",
    "rexbert_cli.experiment",
    "rexbert_cli.export",
    "ablation.cli",
)
USAGE_ERROR = 2


def _input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: reported in one line, exit status 2."""
    import yaml

    return (UserError, OSError, json.JSONDecodeError, UnicodeDecodeError, yaml.YAMLError)


def _add_global_options(parser: argparse.ArgumentParser, default=False) -> None:
    """``--debug`` / ``--verbose`` work before and after the subcommand (``SUPPRESS`` below keeps the
    top-level value when a subcommand's parser does not see the flag)."""
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show the full traceback of errors"
    )
    parser.add_argument(
        "--verbose", action="store_true", default=default, help="show the libraries' INFO logs"
    )


def _leaf_parsers(parser: argparse.ArgumentParser):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield parser
    for action in actions:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rexbert",
        description="Build, train, evaluate and publish domain-specialised ModernBERT-style encoders.",
    )
    _add_global_options(parser)
    parser.add_argument(
        "--data-dir",
        dest="rexbert_data_dir",
        default=None,
        help="local data folder (default: $REXBERT_DATA_DIR, else the embedded sample_data/)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in STAGE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # a stage whose module is missing is simply not offered
                continue
            raise
        module.register(subparsers)
    for leaf in _leaf_parsers(parser):
        if leaf is not parser and "--debug" not in leaf._option_string_actions:
            _add_global_options(leaf, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    try:
        use_data_dir(args.rexbert_data_dir)
        return int(args.func(args) or 0)
    except _input_errors() as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rexbert {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"rexbert {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
