"""Entry point: ``accelerate launch training/run.py --recipe training/recipes/tiny.yaml [--phase 1|2|3|all]
[--output-dir DIR] [--resume | --overwrite] [--allow-fresh-optimizer] [--set field.path=value ...]``
(plain ``python training/run.py`` works too).

One launch at a time per output folder (a second one refuses, naming the holder); ranks die with their
launcher; SIGTERM / Ctrl-C checkpoint at the next step and stop with one line (exit status 128 + signal).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from rexbert_common.config import add_override_argument

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.recipe import PHASES  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--recipe", required=True, help="YAML recipe (training/recipes/<name>.yaml)")
    parser.add_argument(
        "--phase",
        default="all",
        choices=["1", "2", "3", "all"],
        help="which phase to run; phase N>1 starts from phase N-1's final checkpoint",
    )
    parser.add_argument("--output-dir", default=None, help="overrides the recipe's output_dir")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip finished phases and resume the current one from its last checkpoint (an error when the "
        "folder holds nothing to resume: a mistyped folder never starts over)",
    )
    parser.add_argument(
        "--resume-or-start",
        action="store_true",
        help="--resume when the folder holds a run, else start it: for requeued or retried jobs",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start the selected phases again, deleting their checkpoints and final folders",
    )
    parser.add_argument(
        "--allow-fresh-optimizer",
        action="store_true",
        help="resume (or hand a phase over) even when the optimizer state is missing: fresh moments",
    )
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop each phase after N steps, checkpointed (simulates an interruption)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the phases' packed rows here and train nothing (`rexbert prepare`: on any executor)",
    )
    add_override_argument(parser, "phase1.lr=1e-3")
    return parser


def run(args: argparse.Namespace) -> int:
    from rexbert_common.errors import UserError
    from rexbert_common.outputs import check_output_dir
    from training.recipe import load_recipe

    # every check on the command line and the recipe first: torch and transformers take seconds to import
    if (args.resume or args.resume_or_start) and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run, or start it again")
    overrides = list(args.overrides) + list(getattr(args, "extra_overrides", []) or [])
    recipe = load_recipe(args.recipe, overrides)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    check_output_dir(recipe.output_dir, "--output-dir" if args.output_dir else f"{args.recipe}: output_dir")
    phases = list(PHASES) if args.phase == "all" else [PHASES[int(args.phase) - 1]]

    from training.curriculum import has_training_state, run_curriculum
    from training.launch import launch_lock
    from training.prepare import prepare_command

    if args.resume and not args.prepare_only and not has_training_state(Path(recipe.output_dir), phases):
        raise UserError(  # a mistyped folder must not start from scratch
            f"--resume: nothing to resume in {recipe.output_dir} (no checkpoint or final model of "
            f"{', '.join(phases)}): check --output-dir, or run without --resume to start"
        )
    with launch_lock(recipe.output_dir, lambda message: print(f"[rexbert train] {message}", flush=True)):
        run_curriculum(
            recipe,
            phases,
            resume=args.resume or args.resume_or_start,
            stop_after_steps=args.stop_after_steps,
            prepare_only=args.prepare_only,
            overwrite=args.overwrite,
            allow_fresh_optimizer=args.allow_fresh_optimizer,
            prepare_command=lambda name: prepare_command(
                args.recipe, name[-1], recipe.output_dir, overrides, recipe.data.executor
            ),
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__))
    args, extra = parser.parse_known_args(argv)
    # bare `field.path=value` words are accepted as overrides too
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.extra_overrides = extra
    return run(args)


def script_main(argv: list[str] | None = None) -> int:
    """``python training/run.py`` / ``accelerate launch``: a user error is one line on stderr and exit
    status 2 (``--debug`` keeps the traceback), one line per stage unless ``--verbose``, like the ``rexbert``
    CLI."""
    from rexbert_cli.logs import quiet_libraries
    from rexbert_common.data import use_data_dir
    from rexbert_common.errors import UserError
    from rexbert_common.signals import Stopped, install_stop_handlers
    from training.launch import exit_with_launcher

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    exit_with_launcher()
    install_stop_handlers()
    quiet_libraries(verbose="--verbose" in argv)
    main_rank = os.environ.get("RANK", "0") == "0"  # one line per launch, not one per process
    try:
        use_data_dir()  # $REXBERT_DATA_DIR, else the embedded sample (as the `rexbert` CLI does)
        return main([a for a in argv if a not in ("--debug", "--verbose")])
    except UserError as error:
        if debug:
            raise
        if main_rank:
            print(f"rexbert train: error: {error}", file=sys.stderr)  # the `rexbert` CLI's prefix
        return 2
    except (Stopped, KeyboardInterrupt) as stop:
        if debug:
            raise
        if not isinstance(stop, Stopped):
            stop = Stopped(signal.SIGINT)
        if main_rank:
            print(f"{stop}", file=sys.stderr)
        return stop.exit_status


if __name__ == "__main__":
    sys.exit(script_main())
