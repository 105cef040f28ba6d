import argparse

import pytest

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
    assert args.overrides == ["sampling.per_domain=5", "cleaning.lid.languages=[en, de]"]


@pytest.mark.parametrize("tasks_flag", ["--num-tasks", "--tasks"])  # --tasks: the old spelling, hidden
def test_executor_flags_override_the_config(monkeypatch, tmp_path, capsys, tasks_flag):
    import curation.pipeline

    seen = {}
    monkeypatch.setattr(
        curation.pipeline, "run_pipeline", lambda config, stop_after=None: seen.update(c=config)
    )
    parser = argparse.ArgumentParser(prog="rexbert")
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["curate", "--executor", "ray", tasks_flag, "16", "--workers", "3", "--output-dir", str(tmp_path)]
    )
    args.func(args)
    assert (seen["c"].executor.kind, seen["c"].executor.tasks, seen["c"].executor.workers) == ("ray", 16, 3)
    note = capsys.readouterr().err
    assert note == (
        "" if tasks_flag == "--num-tasks" else "rexbert curate: note: --tasks is now --num-tasks\n"
    )


def test_rexbert_help_lists_curate(capsys):
    from rexbert_cli.main import build_parser

    assert "curate" in build_parser().format_help()
