import pytest

from rexbert_cli.main import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config", "missing.yaml"], "cannot read config missing.yaml"),
        (["--config", "{study}", "--set", "budget.tokens=-1"], "budget.tokens = -1 must be > 0"),
        (["--config", "{study}", "--shard", "2/2"], "--shard '2/2': expected 0 <= I < N"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(write_study, capsys, argv, message):
    study = write_study()
    status = main(["ablate", *(a.format(study=study) for a in argv)])
    err = capsys.readouterr().err
    assert (
        status == 2 and message in err and err.count("\n") == 1 and err.startswith("rexbert ablate: error:")
    )


def test_help_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    assert "--config" in capsys.readouterr().out
