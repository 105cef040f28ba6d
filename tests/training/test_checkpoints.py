import json
import random

import pytest
import torch
from safetensors.torch import save_file

from rexbert_common.files import OutputError
from training.checkpoints import (
    MANIFEST,
    ChecksumWriter,
    ResumeError,
    checkpoint_problem,
    checkpoints,
    keep_hub_files,
    refuse_or_clear_previous_run,
    resume_checkpoint,
    rotate_checkpoints,
    write_manifest,
)


def _checkpoint(folder, step, optimizer=True, manifest=True):
    """A checkpoint as the Trainer leaves it, with the manifest RexBertTrainer writes last."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    save_file({"w": torch.randn(64, 64), "b": torch.randn(64)}, str(path / "model.safetensors"))
    if optimizer:
        torch.save({"state": {0: {"exp_avg": torch.randn(64, 64)}}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    for rank in (0, 1):
        torch.save({"cpu": torch.random.get_rng_state()}, path / f"rng_state_{rank}.pth")
    if manifest:
        write_manifest(path)
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _scramble(path, seed=0, length=4096):
    """Random bytes over the middle of the file, same length: only a checksum can tell."""
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    length = min(length, len(data) - start)
    data[start : start + length] = random.Random(seed).randbytes(length)
    path.write_bytes(bytes(data))


def test_intact_checkpoint_has_no_problem(tmp_path):
    checkpoint = _checkpoint(tmp_path, 3)
    listed = json.loads((checkpoint / MANIFEST).read_text())["files"]
    assert sorted(listed) == [
        "model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth", "scheduler.pt",
        "trainer_state.json",
    ]  # fmt: skip
    assert checkpoint_problem(checkpoint) is None


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_1.pth", "trainer_state.json"]
)
def test_random_bytes_inside_any_file_are_caught(tmp_path, name):
    checkpoint = _checkpoint(tmp_path, 3)
    size = (checkpoint / name).stat().st_size
    _scramble(checkpoint / name, length=16)
    assert (checkpoint / name).stat().st_size == size  # the size check alone would pass
    assert checkpoint_problem(checkpoint, verify_checksums=False) is None
    assert checkpoint_problem(checkpoint) == (
        f"{name} does not match its checksum: its bytes changed after it was saved"
    )


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng_state_0.pth"])
def test_truncated_or_missing_files_are_named_without_reading_them(tmp_path, name):
    checkpoint = _checkpoint(tmp_path, 3)
    size = (checkpoint / name).stat().st_size
    _truncate(checkpoint / name, 0.5)
    assert checkpoint_problem(checkpoint, verify_checksums=False) == (
        f"{name} has {size // 2} bytes, {size} were written (truncated or overwritten)"
    )
    (checkpoint / name).unlink()
    # a deleted optimizer state is the --allow-fresh-optimizer case (resume_checkpoint asks for the flag)
    missing = None if name == "optimizer.pt" else f"{name} is missing"
    assert checkpoint_problem(checkpoint, verify_checksums=False) == missing


def test_a_checkpoint_without_its_manifest_is_an_unfinished_save(tmp_path):
    checkpoint = _checkpoint(tmp_path, 3, manifest=False)
    assert checkpoint_problem(checkpoint) == f"no {MANIFEST}: the save did not finish"
    _checkpoint(tmp_path, 4)
    (tmp_path / "checkpoint-4" / MANIFEST).write_text('{"files": ')  # killed mid-write (not atomic)
    assert checkpoint_problem(tmp_path / "checkpoint-4") == f"{MANIFEST} is unreadable"


def test_resume_skips_damaged_checkpoints_and_clears_them(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10)  # numeric order, not string order: 10 is newer than 2
    corrupted = _checkpoint(tmp_path, 12)
    _scramble(corrupted / "optimizer.pt")
    unfinished = _checkpoint(tmp_path, 14, manifest=False)
    messages = []
    chosen = resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=messages.append)
    assert chosen == tmp_path / "checkpoint-10"
    assert messages[:2] == [
        f"checkpoint {unfinished} is damaged (no {MANIFEST}: the save did not finish); trying the previous "
        "one",
        f"checkpoint {corrupted} is damaged (optimizer.pt does not match its checksum: its bytes changed "
        "after it was saved); trying the previous one",
    ]
    # the resumed run writes its own checkpoint-12 and -14: the unfinished save is deleted, the corrupted
    # one set aside for inspection
    assert not unfinished.exists() and not corrupted.exists()
    assert (tmp_path / "checkpoint-12.damaged" / "optimizer.pt").is_file()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-2"]


def test_resume_without_optimizer_state_needs_the_flag(tmp_path):
    checkpoint = _checkpoint(tmp_path, 4, optimizer=False)
    with pytest.raises(ResumeError, match=f"{checkpoint} has no optimizer.pt.*--allow-fresh-optimizer"):
        resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=print)
    assert resume_checkpoint(tmp_path, allow_fresh_optimizer=True, log=print) == checkpoint


def test_a_phase_killed_while_saving_its_first_checkpoint_starts_again(tmp_path):
    unfinished = _checkpoint(tmp_path, 4, manifest=False)
    messages = []
    assert resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=messages.append) is None
    assert not unfinished.exists() and messages[-1] == f"deleted the unfinished {unfinished}"


def test_resume_with_only_damaged_checkpoints_is_an_error(tmp_path):
    _truncate(_checkpoint(tmp_path, 4) / "trainer_state.json")
    with pytest.raises(
        ResumeError, match="no intact checkpoint.*checkpoint-4: trainer_state.json has .*--overwrite"
    ):
        resume_checkpoint(tmp_path, allow_fresh_optimizer=False, log=lambda m: None)
    assert (tmp_path / "checkpoint-4").is_dir()  # nothing is cleared when there is nothing to resume from
    assert resume_checkpoint(tmp_path / "absent", allow_fresh_optimizer=False, log=print) is None


def test_rotation_keeps_the_newest_complete_checkpoints_and_never_counts_an_unfinished_one(tmp_path):
    for step in (3, 6, 9):
        _checkpoint(tmp_path, step)
    _checkpoint(tmp_path, 12, manifest=False)  # being written (or killed while it was)
    assert rotate_checkpoints(tmp_path, keep=2) == [tmp_path / "checkpoint-3"]
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-12", "checkpoint-9", "checkpoint-6"]
    write_manifest(tmp_path / "checkpoint-12")
    assert rotate_checkpoints(tmp_path, keep=1) == [tmp_path / "checkpoint-9", tmp_path / "checkpoint-6"]
    assert rotate_checkpoints(tmp_path, keep=None) == []


def test_checksum_writer_reports_a_failed_manifest_in_the_training_thread(tmp_path, monkeypatch):
    from training import checkpoints as module

    checkpoint = _checkpoint(tmp_path, 3, manifest=False)
    writer = ChecksumWriter()
    writer.start(checkpoint, keep=2)
    writer.finish()
    assert checkpoint_problem(checkpoint) is None

    def full_disk(path, obj, **kwargs):
        raise OutputError(f"no space left on the device writing {path}")

    monkeypatch.setattr(module, "write_json_atomic", full_disk)
    second = _checkpoint(tmp_path, 6, manifest=False)
    writer.start(second, keep=2)
    with pytest.raises(OutputError, match=f"writing {second / MANIFEST}"):
        writer.finish()
    writer.finish()  # reported once
    assert checkpoint_problem(second) == f"no {MANIFEST}: the save did not finish"


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
