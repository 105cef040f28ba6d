"""One run per output folder: a second run on the same folder refuses at once, naming the holder.

A retrying scheduler, a user who starts the same command twice, or a resumed job whose first attempt is
still shutting down would otherwise write the same checkpoints, shards and reports at the same time.
:func:`output_lock` takes an exclusive lock on ``<parent>/.<folder name>.lock`` for as long as the stage
runs and records who holds it in ``<parent>/.<folder name>.lock.json`` (pid, host, command, start).

The lock is a POSIX record lock (``fasteners.InterProcessLock``, ``fcntl.lockf``): the kernel drops it
when the holder exits, however it exits -- a SIGKILLed run never leaves a lock that blocks its rerun
(the next run takes it over and says whose it was). It is not inherited by forked children, and it is
kept beside the folder, not in it, so deleting or replacing the folder never drops it and no lock file
ends up in a dataset or a Hub folder.

Cluster filesystems: NFS (v3 with lockd, v4) and Lustre mounted with ``-o flock`` carry these locks
between machines. Lustre's ``-o localflock`` makes them machine-local (two runs on two nodes would both
get the lock) and ``-o noflock`` refuses them: the run then stops with a one-line error rather than run
unprotected. As a second line of defence, a lock whose record names a live process on this machine is
never taken over, even when the kernel grants it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rexbert_common.errors import UserError
from rexbert_common.files import write_json_atomic

# Environment variables that identify one launch of a job (printed in the holder's description).
_LAUNCH_IDS = ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "PBS_JOBID", "LSB_JOBID")


class FolderBusy(UserError):
    """Another run holds the output folder."""


@dataclass
class Holder:
    """Who holds a lock: enough to find the process and to tell a live holder from a recycled pid."""

    pid: int
    host: str
    command: str
    started: str  # UTC, when the lock was taken
    process_start: float | None = None  # the process's start time (psutil), None when unknown
    launch: str | None = None  # scheduler job / launch id

    def describe(self) -> str:
        launch = f", {self.launch}" if self.launch else ""
        return f"pid {self.pid} on {self.host} (`{self.command}`, since {self.started}{launch})"

    def is_alive_here(self) -> bool:
        """Whether the holder is a running process on this machine (not a recycled pid)."""
        if self.host != socket.gethostname():
            return False
        start = _process_start(self.pid)
        if start is None:
            return False
        return self.process_start is None or abs(start - self.process_start) < 1.0


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _me(command: str) -> Holder:
    launch = next((f"{k}={os.environ[k]}" for k in _LAUNCH_IDS if os.environ.get(k)), None)
    return Holder(
        pid=os.getpid(),
        host=socket.gethostname(),
        command=command,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        process_start=_process_start(os.getpid()),
        launch=launch,
    )


def lock_paths(folder: str | os.PathLike) -> tuple[Path, Path]:
    """The lock file and its holder record for ``folder``."""
    folder = Path(folder).resolve()
    return folder.with_name(f".{folder.name}.lock"), folder.with_name(f".{folder.name}.lock.json")


def read_holder(folder: str | os.PathLike) -> Holder | None:
    """The last recorded holder of ``folder``'s lock (None when none was recorded or it is unreadable)."""
    try:
        return Holder(**json.loads(lock_paths(folder)[1].read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


# Locks this process holds: POSIX locks belong to the process, so a nested acquisition of the same folder
# must not open (and on release close) a second descriptor -- closing it would drop the outer lock.
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def output_lock(
    folder: str | os.PathLike,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    what: str | None = None,
) -> Iterator[Holder]:
    """Hold ``folder``'s lock for the ``with`` block; raise :class:`FolderBusy` at once when another
    process holds it. Re-entrant within a process. ``log`` hears about a lock taken over from an ended
    run; ``what`` names the output in the refusal (default: the folder)."""
    import fasteners

    folder = Path(folder).resolve()
    command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
    with _HELD_GUARD:
        if folder in _HELD:
            _HELD[folder][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield _HELD[folder][2]
        finally:
            with _HELD_GUARD:
                _HELD[folder][1] -= 1
        return

    lock_file, info_file = lock_paths(folder)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = fasteners.InterProcessLock(str(lock_file))
    try:
        acquired = lock.acquire(blocking=False)
    except OSError as error:  # e.g. Lustre mounted with -o noflock
        raise UserError(
            f"cannot lock {lock_file} ({error.strerror}): the filesystem refuses file locks (Lustre: mount "
            "with -o flock); two runs on one folder could not be told apart"
        ) from None
    previous = read_holder(folder)
    if acquired and previous is not None and previous.pid != os.getpid() and previous.is_alive_here():
        lock.release()  # the kernel granted it, but its recorded holder still runs: locks do not work here
        acquired = False
    if not acquired:
        holder = previous.describe() if previous else "another process (no holder recorded)"
        raise FolderBusy(
            f"{what or folder} is in use by {holder}: wait for that run to end or stop it; its lock "
            f"({lock_file}) is released when it exits"
        )
    try:
        me = _me(command)
        if previous is not None and previous.pid != me.pid and log is not None:
            log(f"{folder}: took over the lock of {previous.describe()}, which is no longer running")
        write_json_atomic(info_file, asdict(me))
    except BaseException:
        lock.release()
        raise
    with _HELD_GUARD:
        _HELD[folder] = [lock, 1, me]
    try:
        yield me
    finally:
        with _HELD_GUARD:
            del _HELD[folder]
        info_file.unlink(missing_ok=True)  # before the release: a successor's record is never deleted
        lock.release()
