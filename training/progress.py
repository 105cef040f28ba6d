"""The training progress bar without ``--verbose``: transformers' ``ProgressCallback`` writes every logged
dict as a line under its bar; here the latest loss and masked-token accuracy sit in the bar itself (every
logged value stays in the phase summary and the loss plot)."""

from __future__ import annotations

from transformers.trainer_callback import ProgressCallback


class LossInProgressBar(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: logs[k] for k in ("loss", "masked_accuracy") if k in logs}
            if shown:
                self.training_bar.set_postfix({k: f"{float(v):.4g}" for k, v in shown.items()}, refresh=False)
