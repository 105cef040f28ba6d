"""One error handler and one logging policy for every ``rexbert`` subcommand."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from rexbert_cli.logs import quiet_libraries
from rexbert_cli.main import main
from rexbert_common.data import DATA_ENV, SAMPLE_DIR
from rexbert_common.errors import UserError


def test_input_error_is_one_line_exit_2_and_debug_keeps_the_traceback(tmp_path, capsys):
    missing = tmp_path / "no-model"
    argv = ["card", str(missing), "--repo-id", "acme/RexBERT-micro"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err == f"rexbert card: error: {missing}/config.json not found: is {missing} a saved model folder?\n"
    )
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):  # before or after the subcommand
        with pytest.raises(UserError):
            main(debug_argv)


def test_malformed_yaml_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("output_dir: [unclosed\n")
    assert main(["experiment", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and err.count("\n") == 1


def test_data_dir_option_sets_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(SAMPLE_DIR))
    assert main(["--data-dir", str(tmp_path / "nowhere"), "card", str(tmp_path), "--repo-id", "a/b"]) == 2
    assert f"--data-dir={tmp_path / 'nowhere'} is not a directory" in capsys.readouterr().err
    main(["--data-dir", str(tmp_path), "card", str(tmp_path), "--repo-id", "a/b"])
    assert os.environ[DATA_ENV] == str(tmp_path.resolve())
    monkeypatch.delenv(DATA_ENV)
    main(["card", str(tmp_path), "--repo-id", "a/b"])
    assert os.environ[DATA_ENV] == str(SAMPLE_DIR)  # unset: the embedded sample


def test_verbose_turns_library_info_logs_on(tmp_path):
    """Through each library's own switch: set_verbosity_* once imported (here)..."""
    import datasets
    import huggingface_hub
    import transformers

    argv = ["card", str(tmp_path), "--repo-id", "a/b"]
    main(argv)
    switches = (transformers.logging, datasets.logging, huggingface_hub.logging)
    assert [switch.get_verbosity() for switch in switches] == [logging.WARNING] * 3
    assert logging.getLogger("sentence_transformers").getEffectiveLevel() == logging.WARNING
    main(["--verbose", *argv])
    assert [switch.get_verbosity() for switch in switches] == [logging.INFO] * 3
    assert logging.getLogger("sentence_transformers").getEffectiveLevel() == logging.INFO
    quiet_libraries(verbose=False)


@pytest.mark.parametrize("verbose,level", [(True, logging.INFO), (False, logging.WARNING)])
def test_libraries_imported_later_start_at_the_chosen_verbosity(verbose, level):
    """...and their environment variables before they are imported (the CLI imports them only when needed)."""
    import subprocess

    code = (
        "import sys\n"
        "from rexbert_cli.logs import quiet_libraries\n"
        "quiet_libraries(verbose=sys.argv[1] == 'True')\n"
        "assert 'transformers' not in sys.modules and 'datasets' not in sys.modules\n"
        "import datasets, huggingface_hub, transformers\n"
        "print(transformers.logging.get_verbosity(), datasets.logging.get_verbosity(), "
        "huggingface_hub.logging.get_verbosity())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("VERBOSITY")}
    out = subprocess.run([sys.executable, "-c", code, str(verbose)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(level)] * 3


def _saved_mlm(folder):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
    )
    ModernBertForMaskedLM(config).save_pretrained(folder)
    return config


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def take(self) -> str:
        text, self.messages = "\n".join(self.messages), []
        return text


def test_dropped_head_report_is_hidden_but_missing_weights_are_reported(tmp_path):
    """Loading an MLM checkpoint into a bare encoder drops the head on purpose: no LOAD REPORT (unless
    --verbose). Loading a bare encoder into an MLM model leaves the head freshly initialised: reported."""
    from transformers import ModernBertForMaskedLM, ModernBertModel

    _saved_mlm(tmp_path / "mlm")
    records = _Records()
    library_logger = logging.getLogger("transformers")  # every transformers logger propagates to it
    library_logger.addHandler(records)
    try:
        quiet_libraries(verbose=True)
        ModernBertModel.from_pretrained(tmp_path / "mlm")
        assert "head.dense.weight | UNEXPECTED" in records.take()
        quiet_libraries(verbose=False)
        encoder = ModernBertModel.from_pretrained(tmp_path / "mlm")
        assert "LOAD REPORT" not in records.take()
        encoder.save_pretrained(tmp_path / "bare")
        ModernBertForMaskedLM.from_pretrained(tmp_path / "bare")
        report = records.take()
        assert "LOAD REPORT" in report and "head.dense.weight | MISSING" in report
    finally:
        library_logger.removeHandler(records)
        quiet_libraries(verbose=False)


def test_datatrove_info_logs_follow_verbose(capfd):
    from loguru import logger

    def log_from_datatrove(message: str) -> None:
        exec("logger.info(message)", {"__name__": "datatrove.pipeline", "logger": logger, "message": message})

    handler = logger.add(sys.stderr, level="INFO")
    try:
        quiet_libraries(verbose=False)
        log_from_datatrove("hidden line")
        quiet_libraries(verbose=True)
        log_from_datatrove("shown line")
    finally:
        logger.remove(handler)
        quiet_libraries(verbose=False)
    err = capfd.readouterr().err
    assert "shown line" in err and "hidden line" not in err


def test_demo_stages_inherit_verbose_and_report_a_failed_stage(tmp_path, capsys):
    from rexbert_cli.experiment import _cli
    from rexbert_common.errors import UserError

    try:
        with pytest.raises(UserError, match=r"stage `rexbert card` failed \(exit status 2\)"):
            _cli(["card", str(tmp_path), "--repo-id", "a/b"], ("--verbose",))
        assert logging.getLogger("transformers").getEffectiveLevel() == logging.INFO
        assert "rexbert card: error: " in capsys.readouterr().err
    finally:
        quiet_libraries(verbose=False)


def test_curate_bad_override_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "curated"
    assert main(["curate", "--output-dir", str(out), "--set", "sampling.per_domain=lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rexbert curate: error: ") and "sampling.per_domain" in err and "lots" in err
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []  # no output folder, no work/ left behind


@pytest.fixture
def restore_sigterm():
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_stop_by_signal_is_one_line_with_the_signal_exit_status(
    tmp_path, capsys, monkeypatch, restore_sigterm
):
    """SIGTERM / Ctrl-C in any stage: one line saying what is kept and how to resume, exit 128 + signal; a
    stage the demo runs reports nothing itself -- the demo's line is the one line."""
    import signal

    from rexbert_common.signals import Stopped
    from training import run

    def stopped(args):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(run, "run", stopped)
    assert main(["train", "--recipe", "r.yaml"]) == 143
    assert capsys.readouterr().err == (
        "rexbert train: stopped by SIGTERM; finished work is kept: rerun the same command to resume from it\n"
    )

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run", interrupted)
    assert main(["train", "--recipe", "r.yaml"]) == 130
    assert capsys.readouterr().err.startswith("rexbert train: stopped by SIGINT; finished work is kept")

    from curation import cli as curation_cli

    monkeypatch.setattr(run, "run", stopped)
    monkeypatch.setattr(curation_cli, "run", lambda args: 0)  # the demo's first stage: done
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--set", "training.hold_out_products=false"]) == 143
    line = "rexbert demo: stopped by SIGTERM; finished work is kept: rerun the same command to resume"
    assert capsys.readouterr().err == line + "\n"  # once: the train stage inside it printed nothing
