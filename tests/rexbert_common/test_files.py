"""Atomic outputs: a write that fails (disk full) or is killed leaves the previous file, never half a file."""

import errno
import json
import os
from pathlib import Path

import pytest

from rexbert_common.files import (
    OutputError,
    atomic_write,
    replace_folder,
    write_json_atomic,
    write_text_atomic,
    writing,
)


def _full_disk_after(half: bytes):
    """A writer that gets half its bytes out, then hits a full disk (as ``write(2)`` reports it)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(half)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def test_a_full_disk_keeps_the_previous_file_and_names_the_path(tmp_path):
    path = tmp_path / "results" / "esci.json"
    write_json_atomic(path, {"spearman": 0.5})
    with pytest.raises(OutputError) as error:
        atomic_write(path, _full_disk_after(b'{"spearman": 0.'))
    assert str(error.value) == (
        f"no space left on the device writing {path} (No space left on device): free space and rerun the "
        "same command; finished work is kept and resumed"
    )
    assert json.loads(path.read_text()) == {"spearman": 0.5}
    assert sorted(p.name for p in path.parent.iterdir()) == ["esci.json"]  # no temporary file left
    write_json_atomic(path, {"spearman": 0.6})  # space freed: the rerun writes it
    assert json.loads(path.read_text()) == {"spearman": 0.6}


def test_a_first_write_that_fails_leaves_nothing(tmp_path):
    path = tmp_path / "card" / "README.md"
    with pytest.raises(OutputError, match="no space left"):
        atomic_write(path, _full_disk_after(b"# half a card"))
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError), writing(tmp_path / "x"):
        open(tmp_path / "missing" / "x")  # noqa: SIM115 - the error is the point
    with (
        pytest.raises(OutputError, match=r"cannot write .*x \(Read-only file system\)"),
        writing(tmp_path / "x"),
    ):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def test_written_files_are_readable_by_others_and_end_with_a_newline(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "text")
    assert path.read_text() == "text" and oct(path.stat().st_mode & 0o777) == "0o644"
    assert write_json_atomic(tmp_path / "b.json", [1]).read_text() == "[\n 1\n]\n"


def test_replace_folder_swaps_in_a_complete_folder(tmp_path, monkeypatch):
    final = tmp_path / "final"
    for version in ("v1", "v2"):
        staged = tmp_path / "final.tmp"
        staged.mkdir()
        (staged / "model.safetensors").write_text(version)
        replace_folder(staged, final)
        assert (final / "model.safetensors").read_text() == version and not staged.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]

    # the disk fills while the new folder is moved in: the old one is kept aside, complete, not half-replaced
    staged = tmp_path / "final.tmp"
    staged.mkdir()
    (staged / "model.safetensors").write_text("v3")
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.rename(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match=f"writing {final}"):
        replace_folder(staged, final)
    assert (tmp_path / "final.old" / "model.safetensors").read_text() == "v2"
    assert (staged / "model.safetensors").read_text() == "v3"


def test_an_identical_rewrite_keeps_the_file_and_its_modification_time(tmp_path):
    path = write_text_atomic(tmp_path / "split.parquet", "rows")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    atomic_write(path, lambda tmp: Path(tmp).write_text("rows"), keep_identical=True)
    assert path.stat().st_mtime_ns == 1_000_000_000 and sorted(os.listdir(tmp_path)) == ["split.parquet"]
    atomic_write(path, lambda tmp: Path(tmp).write_text("other rows"), keep_identical=True)
    assert path.read_text() == "other rows"
