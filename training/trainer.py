"""``RexBertTrainer``: transformers' Trainer with RexBERT's optimizer, schedule, data order and logs.

Everything that makes training robust (checkpointing, resume, Accelerate/DDP/FSDP, mixed precision,
progress bars) is the Trainer's; this subclass only swaps in:
  * StableAdamW + a warmup–stable–decay schedule (``create_optimizer`` / ``create_scheduler``);
  * the phase's planned micro-batches in order (batch-size warmup, phase-3 annealing order);
  * a loss normalised over all labelled tokens of the optimizer step (not per micro-batch);
  * logs: masked-token accuracy, tokens/s, rows per step, packing efficiency, masking counts, MFU.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from rexbert_common.errors import UserError
from training.checkpoints import OPTIMIZER_FILE, SCHEDULER_FILE
from training.collator import STATS_KEY
from training.mfu import MlmFlops
from training.optim import StableAdamW, carry_moments, param_groups
from training.phase_data import PlannedBatchSampler
from training.recipe import PhaseConfig
from training.schedules import WSDSchedule, wsd_scheduler

_COUNTERS = (
    "real_tokens",
    "slots",
    "rows",
    "maskable",
    "selected",
    "spans",
    "guided_sequences",
    "guided_spans",
    "labelled",
    "correct",
    "flops",
    "micro_batches",
)


class RexBertTrainer(Trainer):
    """Trainer for one curriculum phase.

    Args (besides Trainer's):
        phase: the phase config (optimizer/schedule hyper-parameters).
        batch_plan: micro-batches of row indices, consumed in order (see ``phase_data.plan_batches``).
        peak_flops: measured peak FLOP/s of one device (None = no MFU log).
        phase_packing_efficiency: real tokens / slots of the phase's packed rows (logged).
        optimizer_state_from: a checkpoint of the previous phase whose optimizer moments this phase continues
            from (its LR / weight decay / betas are this phase's); None = fresh moments.
    """

    def __init__(
        self,
        *args,
        phase: PhaseConfig,
        batch_plan: list[list[int]],
        peak_flops: float | None = None,
        phase_packing_efficiency: float | None = None,
        optimizer_state_from: str | os.PathLike | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.is_fsdp_enabled:
            # StableAdamW's per-tensor update RMS would be computed per shard under FSDP, and the
            # name-based no-decay groups need unflattened parameters: refuse rather than train wrongly.
            raise UserError(
                "FSDP is not supported by RexBERT's StableAdamW (per-shard update RMS); use DDP "
                "(accelerate launch without --use_fsdp), which fits every RexBERT size"
            )
        self.phase = phase
        self.optimizer_state_from = optimizer_state_from
        self.batch_plan = batch_plan
        self.peak_flops = peak_flops
        self.phase_packing_efficiency = phase_packing_efficiency
        self.flop_counter = MlmFlops(self.model.config)
        # We normalise the loss by the labelled tokens of the whole optimizer step ourselves.
        self.model_accepts_loss_kwargs = True
        self._reset_counters()

    # -- optimisation ------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = model or self.model
            self.optimizer = StableAdamW(
                param_groups(model, self.phase.weight_decay),
                lr=self.phase.lr,
                betas=tuple(self.phase.betas),
                eps=self.phase.eps,
                weight_decay=self.phase.weight_decay,
            )
            if self.optimizer_state_from is not None:
                path = Path(self.optimizer_state_from) / OPTIMIZER_FILE
                carry_moments(
                    self.optimizer, torch.load(path, map_location="cpu", weights_only=True), str(path)
                )
        return self.optimizer

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # transformers loads the scheduler only together with optimizer.pt; resuming with fresh moments
        # (--allow-fresh-optimizer) must still continue the LR schedule where it stopped
        if checkpoint and not os.path.isfile(os.path.join(checkpoint, OPTIMIZER_FILE)):
            scheduler = os.path.join(checkpoint, SCHEDULER_FILE)
            if os.path.isfile(scheduler):
                self.lr_scheduler.load_state_dict(torch.load(scheduler, weights_only=True))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            schedule = WSDSchedule(
                total_steps=num_training_steps,
                warmup_steps=round(self.phase.warmup_fraction * num_training_steps),
                decay_steps=round(self.phase.decay_fraction * num_training_steps),
                decay_shape=self.phase.decay_shape,
                alpha_f=self.phase.alpha_f,
            )
            self.lr_scheduler = wsd_scheduler(optimizer or self.optimizer, schedule)
        return self.lr_scheduler

    # -- data --------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        args = self.args
        workers = args.dataloader_num_workers
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=PlannedBatchSampler(self.batch_plan),
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        )
        return self.accelerator.prepare(loader)

    # -- loss and metrics --------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats = inputs.pop(STATS_KEY, None)
        labels = inputs["labels"]
        outputs = model(**inputs)
        labelled_mask = labels != -100
        n_local = labelled_mask.sum()
        loss = outputs.loss
        if num_items_in_batch is not None and model.training:
            # mean over this micro-batch → share of the mean over every labelled token of the step;
            # DDP averages gradients over processes, so scale back up by their number
            total = torch.as_tensor(num_items_in_batch, device=loss.device)
            loss = loss * n_local / torch.clamp(total, min=1)
            loss = loss * self.accelerator.num_processes
        with torch.no_grad():
            logits = outputs.logits
            if logits.dim() == 3:  # dense logits (B, S, V)
                logits = logits[labelled_mask]
            self._counters["correct"] += (logits.argmax(-1) == labels[labelled_mask]).sum()
            self._counters["labelled"] += n_local
        if stats is not None and model.training:
            for key in (
                "real_tokens",
                "slots",
                "rows",
                "maskable",
                "selected",
                "spans",
                "guided_sequences",
                "guided_spans",
            ):
                self._counters[key] += stats[key]
            self._counters["flops"] += self.flop_counter.step(
                stats["real_tokens"],
                stats["selected"],
                stats["global_pairs"],
                stats["local_pairs"],
                sparse_head=getattr(self.model.config, "sparse_prediction", True),
            )
            self._counters["micro_batches"] += 1
        return (loss, outputs) if return_outputs else loss

    def _reset_counters(self) -> None:
        self._counters = {k: 0 for k in _COUNTERS}
        self._counters["correct"] = torch.zeros((), dtype=torch.long, device=self.args.device)
        self._counters["labelled"] = torch.zeros((), dtype=torch.long, device=self.args.device)
        self._last_log_time = time.perf_counter()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._counters["micro_batches"] > 0:
            values = torch.tensor(
                [float(self._counters[k]) for k in _COUNTERS], dtype=torch.float64, device=self.args.device
            )
            values = self.accelerator.reduce(values, reduction="sum")  # every process logs at the same steps
            c = dict(zip(_COUNTERS, values.tolist()))
            elapsed = max(1e-9, time.perf_counter() - self._last_log_time)
            steps = c["micro_batches"] / max(
                1, self.args.gradient_accumulation_steps * self.accelerator.num_processes
            )
            logs["masked_accuracy"] = round(c["correct"] / max(1.0, c["labelled"]), 4)
            logs["tokens_per_second"] = round(c["real_tokens"] / elapsed, 1)
            logs["batch_rows"] = round(c["rows"] / max(1.0, steps), 2)
            logs["batch_packing_efficiency"] = round(c["real_tokens"] / max(1.0, c["slots"]), 4)
            if self.phase_packing_efficiency is not None:
                logs["packing_efficiency"] = round(self.phase_packing_efficiency, 4)
            logs["mask_ratio"] = round(c["selected"] / max(1.0, c["maskable"]), 4)
            logs["guided_sequences"] = int(c["guided_sequences"])
            logs["guided_spans"] = int(c["guided_spans"])
            if self.peak_flops:
                peak = self.peak_flops * self.accelerator.num_processes
                logs["mfu"] = round(c["flops"] / elapsed / peak, 4)
            self._reset_counters()
        super().log(logs, start_time)
