"""Stopping cleanly: SIGTERM / SIGINT, and processes that must not outlive the one that started them.

* Outside a training loop, SIGTERM stops the stage like Ctrl-C does (:class:`Stopped` is raised in the
  main thread, ``finally`` blocks and atomic writes clean up); finished work is kept and the same command
  resumes it. The CLI prints one line and exits with 128 + the signal number (143 for SIGTERM), the status
  schedulers expect from a pre-empted job.
* Inside a training loop (:func:`deferred_stop`), SIGTERM and a first SIGINT only *request* a stop: the
  trainer checkpoints at the next step boundary, then stops with one line naming the checkpoint. A second
  SIGINT stops at once.
* :func:`exit_with_parent` makes a worker process die with its launcher (``accelerate launch`` ranks,
  datatrove's local workers): a launcher killed with SIGKILL cannot forward anything, and its orphans
  would go on writing into the folder a rerun is using.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Stopped(BaseException):
    """The process was asked to stop by a signal (a ``BaseException``, like ``KeyboardInterrupt``, so
    ``except Exception`` blocks do not swallow it). ``str()`` is the one line to print: what was kept and
    how to go on (a caller that knows better -- ``rexbert demo`` resumes by itself -- replaces ``resume``).
    """

    def __init__(
        self,
        signum: int,
        kept: str = "finished work is kept",
        resume: str = "rerun the same command to resume from it",
    ) -> None:
        super().__init__()
        self.signum, self.kept, self.resume = signum, kept, resume

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}; {self.kept}: {self.resume}"

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_requested: list[int] = []  # signals received while a stop is deferred (main thread only writes)


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


def _request_stop(signum, frame) -> None:
    if signum == signal.SIGINT and signal.SIGINT in _requested:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
    _requested.append(signum)


def install_stop_handlers() -> None:
    """SIGTERM raises :class:`Stopped` in the main thread (call once, early, from the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT set :func:`stop_requested` instead of interrupting; the
    previous handlers come back after it. Outside the main thread (no signal handlers there) it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _requested.clear()
    for signum in previous:
        signal.signal(signum, _request_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_requested() -> int | None:
    """The first signal received inside :func:`deferred_stop` (None = no stop requested)."""
    return _requested[0] if _requested else None


def exit_with_parent(pid: int | None = None) -> None:
    """SIGKILL this process as soon as ``pid`` (default: the parent) ends.

    The parent's death is not a request to save (SIGTERM to the launcher is: it forwards it): the rerun
    resumes from the last checkpoint, and a rank that lingered would hold the folder's lock and write
    beside the rerun. For the parent, Linux's ``PR_SET_PDEATHSIG`` has the kernel deliver the signal; for
    another ancestor (a datatrove worker's parent is the forkserver, not the job) a daemon thread waits on
    a pidfd (polls once a second where there is none).
    """
    parent = os.getppid()
    if pid is None or pid == parent:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the request was registered
                    os.kill(os.getpid(), signal.SIGKILL)
                return
        pid = parent
    _watch(pid)


_WATCHED: set[int] = set()


def _watch(pid: int) -> None:
    if pid in _WATCHED:  # a pool worker runs many tasks: one watcher is enough
        return
    _WATCHED.add(pid)
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (AttributeError, OSError):  # not Linux >= 5.3: poll
        handle = None

    def wait() -> None:
        if handle is not None:
            select.select([handle], [], [])  # readable when the process has ended
        else:
            import psutil

            while psutil.pid_exists(pid):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name=f"exit-with-{pid}", daemon=True).start()
