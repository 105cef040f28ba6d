"""Output locations checked before any work: a bad ``--output-dir`` fails in one line at once, not after an
hour of training or evaluation with a ``NotADirectoryError`` traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rexbert_common.errors import UserError


def _creatable(target: Path, flag: str) -> None:
    """The nearest existing ancestor of ``target`` must be a folder this process can write into."""
    existing = target.parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {target} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {target} cannot be written: no write permission on {existing}")


def check_output_dir(path: str | os.PathLike, flag: str = "--output-dir") -> Path:
    """``path`` as a folder this process can create or write into, else a :class:`UserError` naming it.
    Creates nothing."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{flag} {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {folder} cannot be written: no write permission")
        return folder
    _creatable(folder, flag)
    return folder


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """``path`` as a file this process can create or replace, else a :class:`UserError` naming it."""
    file = Path(path)
    if file.is_dir():
        raise UserError(f"{flag} {file} is a folder, not a file")
    _creatable(file, flag)
    return file


class _OldSpelling(argparse.Action):
    """An old option spelling, hidden from ``--help``: still works for one release, with a one-line note."""

    def __init__(self, *args, new: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is now {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_old_spelling(parser: argparse.ArgumentParser, old: str, new: str, dest: str, type=None) -> None:
    """Accept ``old`` (hidden) as a spelling of the option ``new`` for one release."""
    parser.add_argument(
        old,
        dest=dest,
        type=type,
        action=_OldSpelling,
        new=new,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def add_output_dir_argument(parser: argparse.ArgumentParser, help: str, default=None, old=()) -> None:
    """``--output-dir``, the one spelling of "where this command writes" across commands; ``old`` spellings
    (e.g. ``--out``) keep working, hidden, for one release."""
    parser.add_argument("--output-dir", dest="output_dir", default=default, metavar="DIR", help=help)
    for spelling in old:
        add_old_spelling(parser, spelling, "--output-dir", "output_dir")
