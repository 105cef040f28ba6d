"""Trainer output without ``--verbose``: transformers' ``ProgressCallback`` writes every logged dict as a line
under its bar (``PrinterCallback``, when bars are off, prints them); here the latest loss and masked-token
accuracy sit in the bar itself and nothing else is printed (every logged value stays in the Trainer's log
history: the phase summary, the loss plot, the evaluators' records)."""

from __future__ import annotations

import os

from transformers.trainer_callback import PrinterCallback, ProgressCallback


class LossInProgressBar(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: logs[k] for k in ("loss", "masked_accuracy") if k in logs}
            if shown:
                self.training_bar.set_postfix({k: f"{float(v):.4g}" for k, v in shown.items()}, refresh=False)


def verbose() -> bool:
    """The CLI's ``--verbose`` (``rexbert_cli.logs`` passes it on through the environment)."""
    from rexbert_common.executors import VERBOSE_ENV

    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_trainer(trainer):
    """Without ``--verbose``: no logged dicts on the console (the progress bar, if on, shows the loss)."""
    if verbose():
        return trainer
    trainer.remove_callback(PrinterCallback)
    if any(isinstance(c, ProgressCallback) for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LossInProgressBar)
    return trainer
