import argparse

from curation.cli import register


def test_register_adds_curate_with_overrides():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(
        [
            "curate",
            "--output-dir",
            "/tmp/x",
            "--set",
            "sampling.per_domain=5",
            "--set",
            "cleaning.lid.languages=[en, de]",
        ]
    )
    assert args.command == "curate" and callable(args.func)
    assert dict(args.overrides) == {"sampling.per_domain": 5, "cleaning.lid.languages": ["en", "de"]}


def test_rexbert_help_lists_curate(capsys):
    from rexbert_cli.main import build_parser

    assert "curate" in build_parser().format_help()
