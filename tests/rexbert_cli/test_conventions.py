"""One convention across every ``rexbert`` command: the same output flag, ``--set`` wherever a config is
read, help text on every option, one error prefix, config errors before any heavy import."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from rexbert_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _leaves():
    return [p for p in _parsers(build_parser()) if not p._subparsers]


def _visible(parser):
    return [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def test_every_option_has_help_text():
    missing = [
        f"{p.prog} {a.option_strings or a.dest}"
        for p in _parsers(build_parser())
        for a in _visible(p)
        if not a.help
    ]
    assert missing == []


def test_where_a_command_writes_is_spelled_output_dir():
    """Old spellings (--out) stay accepted for one release, hidden from --help."""
    wrong = [
        f"{p.prog} {option}"
        for p in _leaves()
        for a in _visible(p)
        for option in a.option_strings
        if option.startswith("--out") and option != "--output-dir"
    ]
    assert wrong == []


def test_every_command_with_a_config_takes_set():
    config_flags = {"--config", "--recipe"}
    without = [
        p.prog
        for p in _leaves()
        if config_flags & {o for a in p._actions for o in a.option_strings}
        and "--set" not in {o for a in p._actions for o in a.option_strings}
    ]
    assert without == []


# one bad invocation per command: (argv, text the one-line error contains)
BAD_INPUT = [
    (["train", "--recipe", "training/recipes/tiny.yaml", "--set", "phase1.lr=fast"], "phase1.lr"),
    (
        ["train", "--recipe", "training/recipes/tiny.yaml", "--output-dir", "README.md/run"],
        "README.md is a file",
    ),
    (
        ["plan", "--recipe", "training/recipes/tiny.yaml", "--gpus", "8", "--set", "phase1.lr=fast"],
        "phase1.lr",
    ),
    (["curate", "--set", "sampling.per_domain=lots"], "sampling.per_domain"),
    (["demo", "--set", "card.repo_id=nope"], "card.repo_id"),
    (["ablate", "--config", "experiments/cpu_study.yaml", "--set", "budget.tokens=many"], "budget.tokens"),
    (["export", "onnx", "no/such/folder", "--output-dir", "x"], "no/such/folder"),
    (["card", "no-such-folder", "--repo-id", "acme/m"], "no-such-folder"),
    (["push", "README.md", "--repo-id", "acme"], "repo id 'acme'"),
    (["eval", "mlm", "all-MiniLM-L6-v2", "--output-dir", "README.md/x"], "README.md is a file"),
    (["eval", "glue", "no/such/model", "--tasks", "sst2"], "no/such/model: no such folder"),
    (["eval", "report", "README.md", "--output-dir", "README.md/x"], "README.md is a file"),
]


@pytest.mark.parametrize("argv,expected", BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_is_one_line_with_the_commands_prefix_before_any_heavy_import(argv, expected, tmp_path):
    """Validate, then import: the error comes before torch / transformers / datasets are imported (they take
    seconds), so a mistyped value is reported at once."""
    code = (
        "import sys\n"
        "from rexbert_cli.main import main\n"
        "status = main(sys.argv[1:])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'datatrove') if m in sys.modules)\n"
        "print('heavy:', ','.join(heavy))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 2, result.stderr
    prefix = build_parser().parse_known_args(argv)[0].error_prefix  # "rexbert export onnx: error:"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prefix} ") and expected in lines[0], lines
    assert result.stdout.strip() == "heavy:", "imported before the check: " + result.stdout


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["eval", "esci", "all-MiniLM-L6-v2", "--device", "cuda"], "--device cuda: no usable CUDA GPU here"),
        (["eval", "mlm", "all-MiniLM-L6-v2", "--set", "mask_probability=lots"], "mask_probability must be"),
        (["eval", "glue", "all-MiniLM-L6-v2", "--set", "hparams.sst2.epoch=1"], "did you mean 'epochs'"),
    ],
)
def test_eval_settings_are_checked_before_any_data_or_model_is_loaded(argv, expected, tmp_path, capsys):
    """Checks that need torch or the evaluator's config class: after those imports, before any work."""
    import torch

    from rexbert_cli.main import main

    if torch.cuda.is_available() and "cuda" in argv:
        pytest.skip("a CUDA machine accepts --device cuda")
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and err.startswith("rexbert eval ")
    assert not (tmp_path / "out").exists()
