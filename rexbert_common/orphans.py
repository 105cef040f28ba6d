"""Worker processes that do not outlive the process that launched them.

datatrove's ``LocalPipelineExecutor`` runs tasks in a ``multiprocess`` pool: the workers are forked by a
fork server, and a Manager process (forked from the launcher) hands out their ranks. SIGKILL the launcher
and none of them is told: the fork server stays up for as long as its workers hold their end of its pipe, and
each worker goes on with its task (measured: all five processes survived the launcher, reparented to init).
Two mechanisms, because the processes have different parents:

* :func:`kill_forks_with_parent`: every process the launcher's main thread forks from now on (the Manager)
  asks the kernel for SIGKILL when the launcher dies (``PR_SET_PDEATHSIG``);
* :class:`WatchLauncher`: the first step of each local pipeline; in a worker (any process other than the
  launcher) a daemon thread checks once a second that the launcher is alive and SIGKILLs the worker when it
  is not (the fork server is the worker's parent, so a parent-death signal would not fire).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
_forking_from_main = False  # set in the parent just before a fork; the child reads its copy
_installed = False


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that forked it exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_forks_with_parent() -> None:
    """From now on, children forked by this process's main thread die with it. (Forks from other threads
    are left alone: a parent-death signal follows the forking *thread*, which may end long before.)"""
    global _installed
    if _installed:
        return
    parent = os.getpid()

    def before() -> None:
        global _forking_from_main
        _forking_from_main = os.getpid() == parent and threading.current_thread() is threading.main_thread()

    def in_child() -> None:
        if _forking_from_main:
            die_with_parent()
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)

    os.register_at_fork(before=before, after_in_child=in_child)
    _installed = True


def _alive(pid: int, started: float) -> bool:
    import psutil

    try:
        return psutil.Process(pid).create_time() == started  # not a later process with the same id
    except psutil.NoSuchProcess:
        return False


class WatchLauncher:
    """A pipeline step (datatrove calls it with ``(data, rank, world_size)``) that ties a worker's life to
    the launcher's, then passes the data through. Created in the launcher: it records the launcher's pid and
    start time. Not a ``PipelineStep``: it keeps no stats and does not show in a stage's report."""

    def __init__(self) -> None:
        import psutil

        self.pid = os.getpid()
        self.started = psutil.Process(self.pid).create_time()

    def __repr__(self) -> str:
        return f"watch launcher {self.pid}"

    def __call__(self, data=None, rank: int = 0, world_size: int = 1):
        if os.getpid() != self.pid:
            threading.Thread(target=self._watch, name="watch-launcher", daemon=True).start()
        return data

    def _watch(self) -> None:
        import time

        while _alive(self.pid, self.started):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)
