"""Run the three-phase curriculum: tokenizer → (phase 1 → phase 2 → phase 3), each with its own Trainer.

Phase hand-off: phase N+1 loads phase N's final weights (``<output_dir>/phaseN/final``) -- or any
checkpoint named by ``phaseN.init_from`` (RexBERT, ModernBERT, Ettin) -- in fp32 with the sparse MLM head,
applies its own context settings (max_position_embeddings, RoPE θ), continues from the optimizer moments
phase N ended with (``carry_optimizer``) under its own LR schedule, masking and sequence length. Each
phase's ``final`` folder is Hub-ready and plain ModernBERT (``ModernBertForMaskedLM`` config, safetensors
weights, a tokenizer whose ``model_max_length`` is the phase's context, ``phase_summary.json``; no code, no
Trainer pickles), so transformers alone loads it, and is written atomically (temp folder + rename).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from transformers import TrainerCallback

from rexbert_common.errors import UserError
from rexbert_common.files import replace_folder, write_json_atomic, writing
from training.phase_data import process_state
from training.progress import quiet_trainer, verbose
from training.recipe import PHASES, Recipe, recipe_to_dict

logger = logging.getLogger("training")


def _log(message: str, detail: bool = False) -> None:
    """One line per stage on the main process; ``detail`` lines only with ``--verbose``."""
    if process_state().is_main_process and (not detail or verbose()):
        print(f"[rexbert train] {message}", flush=True)


def _in_process(recipe: Recipe):
    """Training's own build: the recipe's tasks and workers, on this machine (``rexbert prepare`` runs the
    same stages on Ray or Slurm)."""
    from rexbert_common.executors import ExecutorConfig

    executor = recipe.data.executor
    return ExecutorConfig(kind="local", tasks=executor.tasks, workers=executor.workers)


def _prepared_tokenizer(layout, phases: list[str], poll_seconds: float = 2.0):
    """The tokenizer, the miner and the sources' sizes are prepared once -- by ``rexbert prepare`` or here
    by the main process -- and every rank loads the tokenizer from the output folder."""
    import time

    from training.epochs import format_report
    from training.prepare import load_prepared_tokenizer, read_setup, run_prepare

    state = process_state()
    if state.is_main_process and not layout.setup_done():
        _log("preparing the tokenizer, the attribute miner and the sources' document sizes")
        run_prepare(layout.recipe, [], _in_process(layout.recipe))
    while not layout.setup_done():  # the other ranks: the main process is preparing
        time.sleep(poll_seconds)
    setup = read_setup(layout.setup_dir)
    tokenizer = load_prepared_tokenizer(layout)
    miner, sources = setup["miner"], ", ".join(f"{s['name']} {s['documents']:,}" for s in setup["sources"])
    mined = "none"
    if miner is not None:
        mined = f"{len(miner['brands']):,} brands from {miner['documents']:,} documents"
    _log(f"sources (documents): {sources}; tokenizer: {len(tokenizer):,} tokens; attribute miner: {mined}")
    for name in phases:
        _log(f"source epochs, {format_report(name, setup['epochs'][name])}", detail=True)
    return tokenizer


def _refuse_unprepared(layout, phases: list[str], prepare_command) -> None:
    """A multi-process job does not build a large phase on its main process while the others idle."""
    processes = process_state().num_processes
    if processes == 1:
        return
    recipe = layout.recipe
    for name in phases:
        tokens = recipe.phase(name).tokens
        if tokens > recipe.data.in_process_max_tokens and not layout.phase_done(name):
            raise UserError(
                f"{name} is not prepared and has {tokens:,} tokens, more than data.in_process_max_tokens="
                f"{recipe.data.in_process_max_tokens:,} that a {processes}-process job builds on its main "
                f"process while the others wait: run `{prepare_command(name)}` first, then this job again"
            )


def _rope_change_message(config, context: dict, source: str) -> str | None:
    changed = [
        f"{key} {getattr(config, key)} → {context[key]}"
        for key in ("global_rope_theta", "local_rope_theta")
        if getattr(config, key, None) is not None and float(getattr(config, key)) != float(context[key])
    ]
    return f"the recipe changes {source}'s RoPE θ ({', '.join(changed)})" if changed else None


def _check_tokenizer_matches(config, tokenizer, source: str) -> None:
    """A checkpoint trained with another tokenizer would learn from scrambled ids: refuse it."""
    for name in ("mask_token_id", "pad_token_id", "cls_token_id", "sep_token_id"):
        expected, got = getattr(config, name, None), getattr(tokenizer, name, None)
        if expected is not None and got is not None and expected != got:
            raise UserError(
                f"{source} was trained with another tokenizer ({name} {expected}, the recipe's tokenizer "
                f"has {got}): set tokenizer.name_or_path to the checkpoint's tokenizer"
            )
    if len(tokenizer) > config.vocab_size:
        raise UserError(
            f"{source} has {config.vocab_size} embeddings but the recipe's tokenizer has "
            f"{len(tokenizer)} tokens: set tokenizer.name_or_path to the checkpoint's tokenizer"
        )


def phase_context(phase) -> dict:
    """The model-config fields a phase sets on whatever checkpoint it starts from."""
    return {
        "max_position_embeddings": phase.max_position_embeddings,
        "global_rope_theta": phase.global_rope_theta,
        "local_rope_theta": phase.local_rope_theta,
        "global_rope_scaling": phase.global_rope_scaling,
        "local_rope_scaling": phase.local_rope_scaling,
    }


def model_for_phase(recipe: Recipe, phase_name: str, tokenizer, out: Path):
    """The phase's starting model, always with fp32 master weights and the sparse MLM head.

    Phase N starts from ``phaseN.init_from`` when set (any RexBERT / ModernBERT / Ettin folder or Hub id),
    else from phase N-1's final folder, else (phase 1) from a fresh init. The phase's context settings
    (max_position_embeddings, RoPE θ and scaling) replace the checkpoint's.
    """
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM  # importing registers the Auto classes
    from training.tokenizer import padded_vocab_size, special_token_ids

    phase = recipe.phase(phase_name)
    context = phase_context(phase)
    index = PHASES.index(phase_name)
    external = recipe.init_source(phase_name)
    source = external or (str(out / PHASES[index - 1] / "final") if index > 0 else None)
    if source is not None:
        if external is None and not Path(source, "config.json").exists():
            raise UserError(
                f"{phase_name} starts from {source}, which does not exist: run {PHASES[index - 1]} first "
                f"(--phase {index} or --phase all) or set {phase_name}.init_from"
            )
        try:
            config = RexBertConfig.from_pretrained(source)  # converts ModernBERT / Ettin configs
        except (OSError, ValueError) as error:
            raise UserError(
                f"{phase_name}: cannot load a RexBERT/ModernBERT config from {source}: "
                f"{' '.join(str(error).split())}"
            ) from None
        _check_tokenizer_matches(config, tokenizer, source)
        rope_change = _rope_change_message(config, context, source)
        if rope_change and external:
            warnings.warn(f"{phase_name}: {rope_change}", UserWarning, stacklevel=2)
            _log(f"{phase_name}: warning: {rope_change}")
        elif rope_change:
            _log(f"{phase_name}: {rope_change} (phase hand-off)", detail=True)
        for name in ("mask_token_id", "pad_token_id", "cls_token_id", "sep_token_id"):
            if getattr(config, name, None) is None:  # a ModernBERT config has no mask_token_id
                setattr(config, name, getattr(tokenizer, name))
        for key, value in context.items():
            setattr(config, key, value)
        config.sparse_prediction = True  # training never needs the full (N, V) logits
        config.validate_rexbert()  # the phase's values get the same checks as a fresh config
        # fp32 master weights whatever the checkpoint's dtype: bf16 weights would lose small updates
        return RexBertForMaskedLM.from_pretrained(
            source, config=config, attn_implementation=recipe.model.attn_implementation, dtype=torch.float32
        )
    config = RexBertConfig.for_size(
        recipe.model.size,
        vocab_size=padded_vocab_size(tokenizer),
        attn_implementation=recipe.model.attn_implementation,
        **{**special_token_ids(tokenizer), **context, **recipe.model.overrides, "sparse_prediction": True},
    )
    torch.manual_seed(recipe.seed)
    return RexBertForMaskedLM(config)


def _optimizer_start(recipe: Recipe, phase_name: str, out: Path, allow_fresh_optimizer: bool) -> Path | None:
    """The previous phase's last checkpoint, whose optimizer moments this phase continues from (None =
    fresh moments: phase 1, an ``init_from`` start, or ``carry_optimizer: false``)."""
    from training.checkpoints import OPTIMIZER_FILE, checkpoint_problem, checkpoints

    phase, index = recipe.phase(phase_name), PHASES.index(phase_name)
    if index == 0 or recipe.init_source(phase_name) or not phase.carry_optimizer:
        if phase.warmup_fraction == 0 and (index > 0 or recipe.init_source(phase_name)):
            _log(
                f"{phase_name}: warning: fresh optimizer moments at the peak LR with no warmup "
                f"(set {phase_name}.warmup_fraction > 0)"
            )
        return None
    previous = out / PHASES[index - 1]
    for checkpoint in checkpoints(previous)[:1]:
        if (checkpoint / OPTIMIZER_FILE).is_file() and not checkpoint_problem(checkpoint):
            return checkpoint
    if allow_fresh_optimizer:
        _log(f"{phase_name}: no optimizer state in {previous}: fresh moments (--allow-fresh-optimizer)")
        return None
    raise UserError(
        f"{phase_name}.carry_optimizer is on but {previous} has no intact last checkpoint with "
        f"{OPTIMIZER_FILE}: pass --allow-fresh-optimizer, or set {phase_name}.carry_optimizer=false "
        "with a warmup"
    )


def _peak_flops(recipe: Recipe, out: Path, device: torch.device, dtype: torch.dtype) -> float | None:
    if not recipe.measure_peak_flops:
        return None
    from training.mfu import measure_peak_flops

    cache = out / f"peak_flops_{device.type}_{str(dtype).split('.')[-1]}.json"
    if cache.exists():
        return json.loads(cache.read_text())["peak_flops"]
    peak = measure_peak_flops(device, dtype)
    if process_state().is_main_process:
        write_json_atomic(cache, {"peak_flops": peak, "device": str(device), "dtype": str(dtype)})
    _log(f"measured peak {peak / 1e9:.1f} GFLOP/s ({device}, {dtype}) for MFU", detail=True)
    return peak


def prepare_phase(recipe: Recipe, phase_name: str, tokenizer, layout=None):
    """The phase's rows (prepared, or built here by the main process while the other ranks wait) and its
    step plan; returns ``(PhaseRows, BatchPlan)``."""
    from training.batch_plan import plan_batches
    from training.phase_build import wait_for_build
    from training.prepare import PrepareLayout, prepared_rows, run_prepare, tokenizer_digest

    layout = layout or PrepareLayout.of(recipe)
    phase, state = recipe.phase(phase_name), process_state()
    data = prepared_rows(layout, phase_name)
    if data is None and state.is_main_process:
        _log(
            f"{phase_name}: building {phase.tokens} tokens of packed rows into {layout.rows_dir(phase_name)}"
        )
        run_prepare(recipe, [phase_name], _in_process(recipe))
        data = prepared_rows(layout, phase_name)
    elif data is None:
        data = wait_for_build(layout.rows_dir(phase_name), layout.phase_fingerprint(phase_name))
    state.wait_for_everyone()
    if data.info.get("tokenizer") != tokenizer_digest(tokenizer):
        used = recipe.tokenizer.name_or_path or layout.out / "tokenizer"
        raise UserError(
            f"{phase_name}: {data.folder} was built with another tokenizer than {used}: delete it to rebuild"
        )
    plan = plan_batches(data.lengths, phase, state.num_processes)
    summary = data.summary()
    _log(
        f"{phase_name}: {summary['rows']:,} rows × {phase.max_seq_len} ({summary['tokens']:,} tokens), "
        f"{plan.steps} steps training {plan.planned_rows:,} rows"
    )
    _log(
        f"{phase_name}: packing efficiency {summary['packing_efficiency']:.3f}, "
        f"domain share {summary['domain_share'][0][1]:.2f}→{summary['domain_share'][-1][1]:.2f} "
        f"(realised per tenth: {summary['realised_domain_share']}), "
        f"mined spans {summary['mined_spans']} in {summary['rows_with_spans']} rows",
        detail=True,
    )
    return data, plan


def _phase_train_loss(log_history: list[dict], steps: int) -> float | None:
    """Mean training loss over the whole phase, also across resumes (the Trainer's own ``train_loss``
    covers only the steps since the last resume). Every checkpoint and the last step are logged (see
    :class:`_LogAtCheckpoints`), so the logged windows tile the phase exactly."""
    total, previous = 0.0, 0
    for entry in sorted((e for e in log_history if "loss" in e), key=lambda e: e["step"]):
        total += entry["loss"] * (entry["step"] - previous)
        previous = entry["step"]
    return total / previous if previous == steps else None


def _save_final(trainer, tokenizer, phase, phase_dir: Path, summary: dict) -> Path:
    """Write ``phase_dir/final`` atomically with only what belongs on the Hub, as plain ModernBERT; weights
    that are not all finite are never exported."""
    from modeling_rexbert.conversion import rewrite_as_modernbert
    from training.checkpoints import keep_hub_files
    from training.tokenizer import save_for_model

    state = process_state()
    bad = [name for name, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # the divergence guard stops a run first; this is the last line of defence
        raise UserError(
            f"{phase_dir.name}: not exporting {phase_dir / 'final'}: {len(bad)} weight tensors hold "
            f"non-finite values ({', '.join(bad[:3])}); resume from an earlier checkpoint"
        )
    final_dir, tmp = phase_dir / "final", phase_dir / "final.tmp"
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    with writing(tmp, "resume with --resume (the phase's checkpoints are kept)"):  # one line, named
        trainer.save_model(str(tmp))  # on every process: FSDP gathers the full state dict collectively
        if state.is_main_process:
            save_for_model(tokenizer, tmp, model_max_length=phase.max_position_embeddings)
            keep_hub_files(tmp)
            rewrite_as_modernbert(tmp)
            write_json_atomic(tmp / "phase_summary.json", summary, default=str)
            replace_folder(tmp, final_dir)
    trainer.accelerator.wait_for_everyone()
    return final_dir


def run_phase(
    recipe: Recipe,
    phase_name: str,
    tokenizer,
    out: Path,
    resume: bool,
    stop_after_steps: int | None = None,
    allow_fresh_optimizer: bool = False,
) -> Path | None:
    """Train one phase; returns its final folder (None when stopped early by ``stop_after_steps``)."""
    import pyarrow.compute as pc

    from training.checkpoints import resume_checkpoint
    from training.collator import PackedMLMCollator, StepCollator
    from training.launch import decide_on_main
    from training.masking import SpanMasker
    from training.phase_data import PackedDataset
    from training.trainer import RexBertTrainer, TrainingDiverged
    from training.trainer_settings import training_arguments, training_precision

    phase = recipe.phase(phase_name)
    index = PHASES.index(phase_name)
    phase_dir = out / phase_name
    state = process_state()
    # decided on the main process alone (it reads every byte of a checkpoint), shared with the others
    checkpoint = carried = None
    if resume:
        checkpoint = decide_on_main(lambda: resume_checkpoint(phase_dir, allow_fresh_optimizer, _log))
    if checkpoint is None:
        carried = decide_on_main(lambda: _optimizer_start(recipe, phase_name, out, allow_fresh_optimizer))
    model = model_for_phase(recipe, phase_name, tokenizer, out)
    data, plan = prepare_phase(recipe, phase_name, tokenizer)
    steps = plan.steps
    summary = data.summary()
    special = sorted(set(tokenizer.all_special_ids))  # never masked, never a random replacement
    masker = SpanMasker(phase.masking, tokenizer.mask_token_id, special, len(tokenizer))
    if phase.masking.guided_fraction > 0 and data.stats.rows_with_spans == 0:
        raise UserError(
            f"{phase_name}.masking.guided_fraction is {phase.masking.guided_fraction} but the miner found "
            "no span in the phase's rows: check the mine_attributes sources and the phase's mixture"
        )
    collator = PackedMLMCollator(
        masker,
        seed=recipe.seed,
        phase_index=index,
        local_window=getattr(model.config, "local_attention", 128),
        guided_probability=masker.guided_row_probability(data.stats.num_rows, data.stats.rows_with_spans),
    )
    precision = training_precision(recipe.trainer, log=_log)
    args = training_arguments(recipe, phase_name, phase_dir, steps, precision)
    peak = _peak_flops(recipe, out, args.device, precision.dtype)
    trainer = RexBertTrainer(
        model=model,
        args=args,
        data_collator=StepCollator(collator, phase.micro_batch_size),
        train_dataset=PackedDataset(data.table),
        processing_class=tokenizer,
        phase=phase,
        batch_plan=plan,
        peak_flops=peak,
        phase_packing_efficiency=data.packing_efficiency,
        optimizer_state_from=carried,
        skip_nonfinite_steps=recipe.trainer.skip_nonfinite_steps,
    )
    quiet_trainer(trainer)  # without --verbose: the loss in the progress bar, no dict per logging step
    if stop_after_steps is not None:
        trainer.add_callback(_StopAfter(stop_after_steps))
    trainer.add_callback(_LogAtCheckpoints())  # last: sees every other callback's should_save
    if checkpoint:
        _log(f"{phase_name}: resuming from {checkpoint}")
    if carried:
        _log(f"{phase_name}: optimizer moments carried over from {carried}", detail=True)
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except TrainingDiverged as diverged:
        if state.is_main_process:  # the phase summary says so (there is no final folder to hold it)
            write_json_atomic(
                phase_dir / "phase_summary.json",
                {"phase": phase_name, "status": "diverged", "error": str(diverged),
                 "log_history": trainer.state.log_history},
                default=str,
            )  # fmt: skip
        raise
    trained = trainer.reduced_totals()  # the whole phase, across resumes
    guided = {
        "target_share": phase.masking.guided_fraction,
        "share": round(trained["guided_sequences"] / max(1.0, trained["rows"]), 4),
        "spans_per_sequence": round(trained["guided_spans"] / max(1.0, trained["rows"]), 3),
        "spans_per_guided_sequence": round(
            trained["guided_spans"] / max(1.0, trained["guided_sequences"]), 3
        ),
    }
    _log(f"{phase_name}: guided MLM realised {guided}", detail=True)
    if stop_after_steps is not None and trainer.state.global_step < steps:
        _log(f"{phase_name}: stopped after step {trainer.state.global_step} of {steps} (--stop-after-steps)")
        trainer.accelerator.wait_for_everyone()
        return None
    metrics = dict(result.metrics)
    metrics["train_loss"] = _phase_train_loss(trainer.state.log_history, steps) or metrics.get("train_loss")
    summary = {
        "phase": phase_name,
        "status": "complete",
        "steps": steps,
        "global_step": trainer.state.global_step,
        "planned_rows": plan.planned_rows,
        # rows / Σ row index the phase trained (all processes, across resumes): every planned row
        # was trained once when they equal planned_rows and Σ range(planned_rows)
        "trained_rows": int(trained["rows"]),
        "trained_row_id_sum": int(trained["row_id_sum"]),
        # steps train rows [0, planned_rows) in order (BatchPlan): the tokens this phase trained on
        "trained_tokens": int(pc.sum(data.lengths.slice(0, plan.planned_rows)).as_py() or 0),
        "guided_mlm": guided,
        "num_processes": state.num_processes,
        "precision": precision.as_dict(),
        "data": summary,
        "train": metrics,
        "optimizer_state": trainer.optimizer_origin,  # also after a resume
        "resumed_from": str(checkpoint) if checkpoint else None,
        "skipped_nonfinite_steps": trainer.skipped_steps(),
        "phase_config": dataclasses.asdict(phase),
        "log_history": [e for e in trainer.state.log_history if "loss" in e],
    }
    final_dir = _save_final(trainer, tokenizer, phase, phase_dir, summary)
    if state.is_main_process:
        (phase_dir / "phase_summary.json").unlink(missing_ok=True)  # a diverged attempt's, now outdated
    plot = _plot_losses(out) if state.is_main_process else None
    loss = metrics.get("train_loss")
    _log(
        f"{phase_name}: done{f', mean training loss {loss:.3f}' if loss is not None else ''} → {final_dir}"
        + (f" (loss plot: {plot})" if plot else "")
    )
    return final_dir


def _plot_losses(out: Path) -> Path | None:
    """Redraw the run's loss figure with the phases finished so far; a plotting failure costs no training."""
    from training.loss_plot import LOSS_PLOT, loss_curves

    try:
        return loss_curves(out, out / LOSS_PLOT)
    except Exception as error:  # noqa: BLE001 - matplotlib problems must not fail a finished phase
        _log(f"warning: no loss plot ({type(error).__name__}: {error})")
        return None


class _StopAfter(TrainerCallback):
    """Simulate an interruption: checkpoint and stop after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


class _LogAtCheckpoints(TrainerCallback):
    """Log the loss at every checkpoint and at the last step, so the logged windows cover the whole phase
    and a resumed run can report the phase's mean loss (the running loss sum is not checkpointed)."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or state.global_step >= state.max_steps:
            control.should_log = True
        return control


def has_training_state(out: Path, phases: Iterable[str] = PHASES) -> bool:
    """Whether any of ``phases`` under ``out`` has a checkpoint or a final model (built rows do not count)."""
    found = (p.name for name in phases for p in out.glob(f"{name}/*"))
    return any(name == "final" or name.startswith("checkpoint-") for name in found)


def run_curriculum(
    recipe: Recipe,
    phases: list[str],
    resume: bool = False,
    stop_after_steps: int | None = None,
    overwrite: bool = False,
    allow_fresh_optimizer: bool = False,
    prepare_only: bool = False,
    prepare_command: Callable[[str], str] | None = None,
) -> dict[str, Path | None]:
    """Run ``phases`` (a subset of phase1..phase3, in order); returns their final folders.

    Everything that can be checked is checked before anything is written: the world size against the
    batch sizes, FSDP, a training step against the GPU's memory (``training.plan.check_launch``), Guided MLM
    against the sources, the sources' files, that a multi-process job has its large phases prepared (else
    the ``prepare_command(phase)`` to run is in the error), and -- without ``resume`` -- that no phase
    folder already holds a run (``overwrite`` deletes it). If a user error (bad data, bad settings) stops
    the run before any checkpoint exists, the folders this call created are removed. ``stop_after_steps``
    stops each phase after that many steps without writing its final folder (used to test resume: run
    again with ``resume=True``; with nothing to resume it starts the phases -- ``rexbert train --resume``
    refuses that, a mistyped folder must not start from scratch). ``prepare_only`` prepares the
    phases' rows in-process (``rexbert prepare`` does it on any executor) and trains nothing: a later run
    reuses them."""
    from training.checkpoints import refuse_or_clear_previous_run
    from training.plan import check_launch
    from training.prepare import PrepareLayout, check_guided_sources
    from training.trainer_settings import check_report_to

    # world size, FSDP and (on CUDA) GPU memory: before any source is read or row built
    check_launch(recipe, phases, process_state().num_processes)
    check_guided_sources(recipe, phases)
    check_report_to(recipe.trainer.report_to)
    out = Path(recipe.output_dir)
    state = process_state()
    layout = PrepareLayout.of(recipe)  # lists the sources' files: a missing one fails here
    to_train = [
        n for n in phases if prepare_only or not (resume and (out / n / "final" / "config.json").exists())
    ]
    _refuse_unprepared(layout, to_train, prepare_command or _default_prepare_command(recipe))
    if not resume and not prepare_only:
        for name in phases:
            refuse_or_clear_previous_run(out / name, overwrite, state.is_main_process)
        state.wait_for_everyone()
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if state.is_main_process:
            write_json_atomic(out / "recipe.json", recipe_to_dict(recipe))
        tokenizer = _prepared_tokenizer(layout, phases)
        finals = {}
        if prepare_only:
            for name in phases:
                prepare_phase(recipe, name, tokenizer, layout)
            return finals
        for name in phases:
            final_dir = out / name / "final"
            if resume and (final_dir / "config.json").exists():
                _log(f"{name}: already complete ({final_dir}), skipped")
                finals[name] = final_dir
                continue
            finals[name] = run_phase(
                recipe,
                name,
                tokenizer,
                out,
                resume,
                stop_after_steps,
                allow_fresh_optimizer=allow_fresh_optimizer,
            )
            if finals[name] is None:
                break
        return finals
    except Exception:  # bad input (a UserError, an unreachable Hub id...) before any checkpoint: no debris
        if created and state.is_main_process and not has_training_state(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _default_prepare_command(recipe: Recipe) -> Callable[[str], str]:
    from training.prepare import prepare_command

    return lambda name: prepare_command(
        "<recipe.yaml>", name[-1], recipe.output_dir, [], recipe.data.executor
    )
