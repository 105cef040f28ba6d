import json

import pytest
import torch
from safetensors.torch import save_file

from training.checkpoints import (
    ResumeError,
    checkpoint_problem,
    keep_hub_files,
    refuse_or_clear_previous_run,
    resume_checkpoint,
)


def _checkpoint(folder, step, optimizer=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    save_file({"w": torch.randn(64, 64), "b": torch.randn(64)}, str(path / "model.safetensors"))
    if optimizer:
        torch.save({"state": {0: {"exp_avg": torch.randn(64, 64)}}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_intact_checkpoint_has_no_problem(tmp_path):
    assert checkpoint_problem(_checkpoint(tmp_path, 3)) is None


@pytest.mark.parametrize(
    "name, keep, message",
    [
        ("model.safetensors", 0.5, "model.safetensors is truncated"),
        ("model.safetensors", 0.0, "model.safetensors is truncated (0 bytes)"),
        ("trainer_state.json", 0.5, "trainer_state.json is truncated or not JSON"),
        ("optimizer.pt", 0.6, "optimizer.pt is truncated or not a torch archive"),
        ("scheduler.pt", 0.5, "scheduler.pt is truncated or not a torch archive"),
    ],
)
def test_truncated_files_are_named(tmp_path, name, keep, message):
    checkpoint = _checkpoint(tmp_path, 3)
    _truncate(checkpoint / name, keep)
    assert message in checkpoint_problem(checkpoint)


def test_resume_skips_a_damaged_latest_checkpoint_and_reports_its_path(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10)  # numeric order, not string order: 10 is newer than 2 and 4
    newest = _checkpoint(tmp_path, 12)
    _truncate(newest / "model.safetensors")
    messages = []
    chosen = resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=messages.append)
    assert chosen == tmp_path / "checkpoint-10"
    assert (
        len(messages) == 1 and str(newest) in messages[0] and "model.safetensors is truncated" in messages[0]
    )


def test_resume_without_optimizer_state_needs_the_flag(tmp_path):
    checkpoint = _checkpoint(tmp_path, 4, optimizer=False)
    with pytest.raises(ResumeError, match=f"{checkpoint} has no optimizer.pt.*--allow-fresh-optimizer"):
        resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=print)
    assert resume_checkpoint(tmp_path, allow_fresh_optimizer=True, log=print) == checkpoint


def test_resume_with_only_damaged_checkpoints_is_an_error(tmp_path):
    _truncate(_checkpoint(tmp_path, 4) / "trainer_state.json")
    with pytest.raises(
        ResumeError, match="no intact checkpoint.*checkpoint-4: trainer_state.json.*--overwrite"
    ):
        resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=lambda m: None)
    assert resume_checkpoint(tmp_path / "absent", allow_fresh_optimizer=False, log=print) is None


def test_a_previous_run_is_refused_or_cleared_but_the_rows_cache_is_kept(tmp_path):
    phase = tmp_path / "phase1"
    _checkpoint(phase, 3)
    (phase / "final").mkdir()
    (phase / "rows").mkdir()
    with pytest.raises(
        ResumeError, match=r"phase1 already holds a run \(checkpoint-3, final\).*--resume.*--overwrite"
    ):
        refuse_or_clear_previous_run(phase, overwrite=False, is_main_process=True)
    assert (phase / "checkpoint-3").exists()
    refuse_or_clear_previous_run(phase, overwrite=True, is_main_process=True)
    assert sorted(p.name for p in phase.iterdir()) == ["rows"]
    refuse_or_clear_previous_run(tmp_path / "new", overwrite=False, is_main_process=True)  # nothing there


def test_hub_folder_keeps_only_hub_files(tmp_path):
    names = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modeling_rexbert.py",
        "configuration_rexbert.py",
        "phase_summary.json",
        "README.md",
        "training_args.bin",
        "rng_state.pth",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "runs").mkdir()
    keep_hub_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[:-2])
