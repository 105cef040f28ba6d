"""``RexBertTrainer``: transformers' Trainer with RexBERT's optimizer, schedule, data order and logs.

Everything that makes training robust (checkpointing, resume, Accelerate/DDP/FSDP, mixed precision,
progress bars) is the Trainer's; this subclass only swaps in:
  * StableAdamW + a warmup–stable–decay schedule (``create_optimizer`` / ``create_scheduler``);
  * the phase's planned steps in order, each a variable number of full micro-batches per process
    (batch-size warmup by gradient accumulation, see ``batch_plan``; phase-3 annealing order);
  * a loss normalised over all labelled tokens of the optimizer step, across micro-batches and
    processes (not per micro-batch);
  * logs: masked-token accuracy, tokens/s, rows per step, packing efficiency, masking counts, MFU;
  * reliability: checkpoints carry a manifest of checksums (``checkpoints.MANIFEST``), a non-finite loss or
    gradient norm on any process stops the run (or skips a bounded number of steps) before anything it
    produced is saved, and SIGTERM / Ctrl-C checkpoint at the next step boundary, then stop.

Divergence and stop requests cost no host synchronisation of their own (``training.step_guard``): a
non-finite step t stops every process at the end of step t+2, and a save before then checks first; a stop
request (SIGTERM, Ctrl-C) checkpoints at the end of the step it arrives in -- with several processes, which
must agree on the step, at the end of the second step after it. Skipping bad steps
(``skip_nonfinite_steps`` > 0) must decide before the optimizer step: one extra synchronisation per step
on the gradient norm, only then.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import ProgressCallback, Trainer

from rexbert_common.errors import UserError
from rexbert_common.files import OutputError, write_json_atomic, writing
from rexbert_common.signals import Stopped, deferred_stop, stop_requested
from training.batch_plan import BatchPlan, StepSampler
from training.checkpoints import MANIFEST, OPTIMIZER_FILE, SCHEDULER_FILE, ChecksumWriter, checkpoints
from training.collator import MICRO_BATCHES_KEY, STATS_KEY
from training.mfu import MlmFlops
from training.optim import StableAdamW, carry_moments, param_groups
from training.recipe import PhaseConfig
from training.schedules import WSDSchedule, wsd_scheduler
from training.step_guard import Diverged, StepGuard, TrainingDiverged

_STAT_COUNTERS = (  # summed from the collator's host-side stats
    "real_tokens",
    "rows",
    "row_id_sum",
    "maskable",
    "selected",
    "spans",
    "guided_sequences",
    "guided_spans",
    "labelled",
)
_COUNTERS = (*_STAT_COUNTERS, "correct", "flops", "micro_batches", "steps")
SKIPPED_KEY = "skipped_nonfinite_step"  # a log_history entry per skipped step (survives resumes)
# what the phase trained up to a checkpoint (all processes) and where its optimizer moments came from
PHASE_RECORD = "rexbert_phase.json"


class RexBertTrainer(Trainer):
    """Trainer for one curriculum phase.

    Args (besides Trainer's):
        phase: the phase config (optimizer/schedule hyper-parameters).
        batch_plan: the phase's optimizer steps (``batch_plan.plan_batches``); this process trains its
            share of each (the training arguments' gradient_accumulation_steps must be 1).
        peak_flops: measured peak FLOP/s of one device (None = no MFU log).
        phase_packing_efficiency: real tokens / slots of the phase's packed rows (logged).
        optimizer_state_from: a checkpoint of the previous phase whose optimizer moments this phase continues
            from (its LR / weight decay / betas are this phase's); None = fresh moments.
        skip_nonfinite_steps: optimizer steps with a non-finite loss or gradient norm skipped (no update,
            logged as ``skipped_nonfinite_step``) before the run stops; 0 = stop at the first.
    """

    def __init__(
        self,
        *args,
        phase: PhaseConfig,
        batch_plan: BatchPlan,
        peak_flops: float | None = None,
        phase_packing_efficiency: float | None = None,
        optimizer_state_from: str | os.PathLike | None = None,
        skip_nonfinite_steps: int = 0,
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
        # where this phase's optimizer moments came from (kept across resumes by the phase record)
        self.optimizer_origin = f"carried from {optimizer_state_from}" if optimizer_state_from else "fresh"
        self.batch_plan = batch_plan
        self.peak_flops = peak_flops
        self.phase_packing_efficiency = phase_packing_efficiency
        self.flop_counter = MlmFlops(self.model.config)
        # We normalise the loss by the labelled tokens of the whole optimizer step ourselves.
        self.model_accepts_loss_kwargs = True
        # this train() call, this process: what was trained (row coverage, realised Guided MLM)
        self.totals = {k: 0 for k in ("rows", "row_id_sum", "steps", "guided_sequences", "guided_spans")}
        self._reset_counters()
        self.skip_nonfinite_steps = skip_nonfinite_steps
        self.stopped_by: int | None = None  # the signal that stopped training early
        self.guard = StepGuard(self.args.device)
        self._checksums = ChecksumWriter()
        # Old checkpoints are rotated after the new one's manifest exists, never before (a save killed
        # halfway must leave an intact checkpoint), so the Trainer's own rotation is off.
        self.keep_checkpoints = self.args.save_total_limit
        self.args.save_total_limit = None
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError(
                "RexBertTrainer accumulates the batch plan's micro-batches itself: "
                "set gradient_accumulation_steps=1"
            )

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
        """This process's share of every planned step, one item per optimizer step. Not passed through
        ``accelerator.prepare``: its ``BatchSamplerShard`` would drop every step of another size."""
        args = self.args
        workers = args.dataloader_num_workers
        return DataLoader(
            self.train_dataset,
            batch_sampler=StepSampler(self.batch_plan, self.accelerator.process_index),
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One optimizer step's micro-batches of this process: forward/backward each, gradients synced
        on the last only, the loss normalised by the labelled tokens of the whole step on all processes."""
        micro_batches = inputs[MICRO_BATCHES_KEY]
        local = sum(mb[STATS_KEY]["labelled"] for mb in micro_batches)  # Python int: no device sync
        # one collective: the step's labelled tokens and whether any process was asked to stop. torch.full
        # and an index fill write host scalars on the device; torch.tensor([...], device=...) would be a
        # blocking host-to-device copy on a GPU (the stream waits for every queued kernel)
        counts = torch.full((2,), local, dtype=torch.long, device=self.args.device)
        counts[1] = stop_requested() is not None
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")  # a collective, not a host sync
        total = counts[0]
        loss = torch.zeros((), device=self.args.device)
        for i, micro_batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = (
                contextlib.nullcontext if last else functools.partial(self.accelerator.no_sync, model=model)
            )
            with sync():
                loss += super().training_step(model, micro_batch, total)
        self._counters["steps"] += 1
        self.totals["steps"] += 1
        self._check_step(counts[1])
        return loss

    # -- reliability ---------------------------------------------------------------------------
    def _check_step(self, stop_votes: torch.Tensor) -> None:
        """Hand this step's guard values to the host and act on the previous step's: a non-finite step
        stops the run; a stop request checkpoints this step and stops."""
        votes = self.guard.exchange(stop_votes)
        if self.accelerator.num_processes == 1:  # nobody to agree with: stop at this step's end
            votes = stop_requested() is not None
        if votes and self.stopped_by is None:
            self.stopped_by = stop_requested() or signal.SIGTERM  # another process received it
            self.control.should_save = True  # at the end of this step, on every process
            self.control.should_training_stop = True

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm)
        step = self.state.global_step + 1
        if self.skip_nonfinite_steps and not math.isfinite(float(norm)):  # the one extra sync of skipping
            skipped = len(self.skipped_steps()) + 1
            if skipped > self.skip_nonfinite_steps:
                limit = self.skip_nonfinite_steps
                raise Diverged(
                    step, float(norm), f"{skipped} non-finite steps (skip_nonfinite_steps: {limit})"
                )
            model.zero_grad(set_to_none=True)  # the optimizer step that follows updates nothing
            self.log({SKIPPED_KEY: step, "grad_norm": float(norm)})
        else:
            self.guard.observe(step, norm)
        return norm

    def skipped_steps(self) -> list[int]:
        """Steps skipped for a non-finite loss or gradient norm, this phase (also before a resume)."""
        return [int(e[SKIPPED_KEY]) for e in self.state.log_history if SKIPPED_KEY in e]

    def _save_checkpoint(self, model, trial):
        """Save, then have the main process write the manifest of checksums (in the background) once
        every process has written its files. A step whose gradient norm is not finite is never saved."""
        self.guard.check_before_save()  # one synchronisation per save
        self._checksums.finish()  # the previous save's manifest, and its error if any
        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"checkpoint-{self.state.global_step}"
        then = "resume with --resume (the last complete checkpoint is kept)"
        try:
            with writing(folder, then):
                super()._save_checkpoint(model, trial)
        except RuntimeError as error:  # torch.save reports a failed write (disk full) as a RuntimeError
            if "write" not in str(error):
                raise
            message = " ".join(str(error).split())
            raise OutputError(f"cannot write the checkpoint {folder} ({message}): {then}") from None
        totals = self.reduced_totals()  # a collective: every process is here
        if self.args.should_save:
            record = {"totals": totals, "optimizer_state": self.optimizer_origin}
            write_json_atomic(folder / PHASE_RECORD, record)
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        if self.args.should_save:
            self._checksums.start(folder, self.keep_checkpoints)

    def reduced_totals(self) -> dict[str, int]:
        """What this phase trained so far on all processes (rows, Σ row ids, steps, guided MLM), also across
        resumes: checkpoints carry it (:data:`PHASE_RECORD`)."""
        values = torch.tensor(
            [float(v) for v in self.totals.values()], dtype=torch.float64, device=self.args.device
        )
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        return {k: int(v) for k, v in zip(self.totals, values.tolist())}

    def train(self, *args, **kwargs):
        """Trainer.train with SIGTERM / Ctrl-C deferred to the next step boundary (checkpoint, then
        :class:`~rexbert_common.signals.Stopped`) and divergence reported as :class:`TrainingDiverged`."""
        checkpoint = kwargs.get("resume_from_checkpoint") or (args[0] if args else None)
        if isinstance(checkpoint, str) and self.accelerator.is_main_process:  # counted once, on the main one
            saved = Path(checkpoint) / PHASE_RECORD
            if saved.is_file():
                record = json.loads(saved.read_text(encoding="utf-8"))
                self.totals.update(record["totals"])
                self.optimizer_origin = record["optimizer_state"]
        try:
            with deferred_stop():
                result = super().train(*args, **kwargs)
        except BaseException as error:
            self._close_progress_bars()  # else tqdm redraws its bar after the error line
            with contextlib.suppress(Exception):
                self._checksums.finish()
            if isinstance(error, Diverged):
                raise TrainingDiverged(self._divergence_message(error)) from None
            raise
        self._checksums.finish()
        if self.stopped_by is not None:
            step, steps = self.state.global_step, self.state.max_steps
            kept = f"saved {self._last_checkpoint()} at step {step} of {steps}"
            raise Stopped(self.stopped_by, kept, resume="resume with --resume")
        return result

    def _close_progress_bars(self) -> None:
        for callback in self.callback_handler.callbacks:
            bar = getattr(callback, "training_bar", None)
            if isinstance(callback, ProgressCallback) and bar is not None:
                bar.close()
                callback.training_bar = None

    def _last_checkpoint(self) -> str:
        done = [c for c in checkpoints(Path(self.args.output_dir)) if (c / MANIFEST).is_file()]
        return str(done[0]) if done else "no checkpoint yet"

    def _divergence_message(self, diverged: Diverged) -> str:
        last = self._last_checkpoint()
        resume = (
            f"resume from {last} with --resume" if last != "no checkpoint yet" else "no checkpoint to resume"
        )
        phase = Path(self.args.output_dir).name
        return (
            f"{phase}: training diverged at step {diverged.step}: {diverged.reason} "
            f"(gradient norm {diverged.norm}); nothing after it was saved; {resume} -- lower the LR, or set "
            "trainer.skip_nonfinite_steps to skip a few such steps"
        )

    def floating_point_ops(self, inputs) -> int:
        return sum(super(RexBertTrainer, self).floating_point_ops(mb) for mb in inputs[MICRO_BATCHES_KEY])

    # -- loss and metrics --------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """sum(CE) / ``num_items_in_batch`` (the step's labelled tokens on all processes) × processes:
        DDP averages gradients over processes, so the step's gradient is that of the mean CE over every
        labelled token of the step. Without ``num_items_in_batch``: the micro-batch's mean."""
        stats = inputs.pop(STATS_KEY, None)
        labels, label_positions = inputs["labels"], inputs["label_positions"]
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        if num_items_in_batch is not None and model.training:
            loss = loss * self.accelerator.num_processes
        if model.training:
            # A non-finite loss here makes this process's gradients NaN (x 1.0 when finite: exact), which
            # DDP's all-reduce hands to every process: the gradient norm is then the all-process flag.
            loss = loss * torch.where(
                torch.isfinite(loss), torch.ones_like(loss), torch.full_like(loss, math.nan)
            )
        with torch.no_grad():
            logits = outputs.logits
            if logits.dim() == 3:  # dense logits (1, N, V) → the labelled positions' (M, V)
                logits = logits.reshape(-1, logits.shape[-1]).index_select(0, label_positions)
            targets = labels.reshape(-1).index_select(0, label_positions)  # (M,)
            # max(-1).indices is argmax (the first maximum too) at a third of its CPU time on bf16 logits
            self._counters["correct"] += (logits.max(-1).indices == targets).sum()
        if stats is not None and model.training:
            for key in _STAT_COUNTERS:
                self._counters[key] += stats[key]
            for key in ("rows", "row_id_sum", "guided_sequences", "guided_spans"):
                self.totals[key] += stats[key]
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
        self._last_log_time = time.perf_counter()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._counters["micro_batches"] > 0:
            values = torch.tensor(
                [float(self._counters[k]) for k in _COUNTERS], dtype=torch.float64, device=self.args.device
            )
            values = self.accelerator.reduce(values, reduction="sum")  # every process logs at the same steps
            c = dict(zip(_COUNTERS, values.tolist()))
            elapsed = max(1e-9, time.perf_counter() - self._last_log_time)
            steps = c["steps"] / self.accelerator.num_processes
            logs["masked_accuracy"] = round(c["correct"] / max(1.0, c["labelled"]), 4)
            logs["tokens_per_second"] = round(c["real_tokens"] / elapsed, 1)
            logs["batch_rows"] = round(c["rows"] / max(1.0, steps), 2)
            logs["micro_batches_per_step"] = round(c["micro_batches"] / max(1.0, c["steps"]), 2)
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
