"""What the processes of one training launch agree on: decisions taken once on the main process, the lock
on the output folder, and dying with the launcher.

Every process of an ``accelerate launch`` runs the same code; a decision that reads the disk (which
checkpoint is intact, whether the folder is free) is taken by the main process alone and broadcast, so the
processes cannot disagree and the expensive part (hashing a checkpoint) runs once. Membership of a launch
is the process group itself: a second launch of the same command has its own group and its own main
process, which finds the folder locked and makes every process of its group stop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from rexbert_common.errors import UserError
from rexbert_common.locks import Holder, output_lock

T = TypeVar("T")
# set by `accelerate launch` (every mode) and torchrun: the process is a rank its launcher started
_LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "ACCELERATE_MIXED_PRECISION")


def decide_on_main(decide: Callable[[], T]) -> T:
    """``decide()`` on the main process; every process returns its result, or raises its error (a user
    error on the main process stops all of them with the same line; any other error stops them too,
    instead of leaving them waiting in the broadcast)."""
    from training.phase_data import process_state

    state = process_state()
    outcome: tuple[bool, object] | None = None
    failure: BaseException | None = None
    if state.is_main_process:
        try:
            outcome = (True, decide())
        except UserError as error:
            outcome = (False, error)
        except Exception as error:  # the main process re-raises it; the others get its line
            failure, outcome = error, (False, RuntimeError(f"the main process failed: {error!r}"))
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        outcome = broadcast_object_list([outcome])[0]
    if failure is not None:
        raise failure
    ok, value = outcome
    if not ok:
        raise value
    return value


@contextlib.contextmanager
def launch_lock(folder: str | os.PathLike, log: Callable[[str], None]) -> Iterator[Holder | None]:
    """Hold the output folder's lock for the whole launch: the main process takes it (and keeps it until
    the ``with`` block ends); when it cannot, every process stops with the line naming the holder."""
    from training.phase_data import process_state

    state = process_state()
    with contextlib.ExitStack() as stack:

        def acquire() -> Holder:
            return stack.enter_context(output_lock(Path(folder), log=log))

        holder = decide_on_main(acquire)
        yield holder if state.is_main_process else None


def exit_with_launcher() -> bool:
    """When this process is a rank started by ``accelerate launch`` / torchrun, have it die with its
    launcher (a launcher killed with SIGKILL would leave it training and writing). Returns whether it
    was."""
    from rexbert_common.signals import exit_with_parent

    if not any(os.environ.get(name) for name in _LAUNCHER_VARIABLES):
        return False
    exit_with_parent()
    return True
