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


@pytest.mark.slow
def test_without_verbose_curate_prints_one_line_per_stage(small_corpus, tmp_path):
    """No datatrove INFO (pipelines, per-task stats, "k/N tasks completed") on the console: one line per
    stage, a closing line, and progress bars."""
    import subprocess
    import sys

    import yaml

    from curation.pipeline import STAGES
    from rexbert_common.config import config_to_dict
    from tests.console import console_lines
    from tests.curation.conftest import curation_config

    config = config_to_dict(
        curation_config(tmp_path / "out", [{"path": str(small_corpus), "format": "jsonl"}])
    )
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({**config, "executor": {"kind": "local", "tasks": 2}})
    )
    result = subprocess.run(
        [sys.executable, "-m", "rexbert_cli.main", "curate", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stdout, stderr = console_lines(result.stdout), console_lines(result.stderr)
    ran = [line.split(":")[0].removeprefix("[curation] ") for line in stdout[:-1]]
    assert ran == [stage for stage in STAGES if stage in ran] and len(ran) >= 8, stdout
    assert stdout[-1].startswith(f"wrote {tmp_path / 'out'}/dataset (")
    assert stderr == [], stderr[:10]
