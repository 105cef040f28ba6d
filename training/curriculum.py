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
import os
import shutil
import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback

from rexbert_common.errors import UserError
from training.phase_data import process_state
from training.recipe import PHASES, Recipe, recipe_to_dict

logger = logging.getLogger("training")


def _log(message: str) -> None:
    if process_state().is_main_process:
        print(f"[rexbert train] {message}", flush=True)


def _load_sources(recipe: Recipe):
    from training.data import load_source

    buffer = recipe.data.shuffle_buffer_docs
    general = [load_source(s, buffer) for s in recipe.data.general]
    domain = [load_source(s, buffer) for s in recipe.data.domain]
    for src in (*general, *domain):
        st = src.stats
        _log(
            f"source {src.config.name}: {st.documents} docs (dropped {st.dropped_whitespace} "
            f"whitespace-only, {st.dropped_missing_field} without text)"
            if src.texts is not None
            else f"source {src.config.name}: streaming from {src.config.path}"
        )
    return general, domain


def _miner(recipe: Recipe, general, domain):
    """The Guided-MLM attribute miner, its brand lexicon fitted on a bounded sample
    (``data.miner_sample_docs`` documents) of each ``mine_attributes`` source, streaming or not;
    None when no source is mined."""
    import numpy as np

    from training.attribute_miner import AttributeMiner

    mined = [s for s in (*general, *domain) if s.config.mine_attributes]
    if not mined:
        return None
    n = recipe.data.miner_sample_docs
    sample = (
        text for i, s in enumerate(mined) for text in s.sample(n, np.random.default_rng([recipe.seed, 11, i]))
    )
    miner = AttributeMiner().fit(sample)
    names = ", ".join(s.config.name for s in mined)
    _log(f"attribute miner: {len(miner.brands)} brands learned from ≤ {n} documents of each of {names}")
    return miner


def _check_guided_sources(recipe: Recipe, phases: list[str]) -> None:
    """Guided MLM asked for with no source to mine is a recipe error (it would silently do nothing)."""
    mined = [s.name for s in (*recipe.data.general, *recipe.data.domain) if s.mine_attributes]
    for name in phases:
        fraction = recipe.phase(name).masking.guided_fraction
        if fraction > 0 and not mined:
            raise UserError(
                f"{name}.masking.guided_fraction is {fraction} but no data source sets mine_attributes: true "
                "(set it on the product sources, or guided_fraction: 0)"
            )


def _tokenizer(recipe: Recipe, general, domain, out: Path):
    from training.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer

    if recipe.tokenizer.name_or_path:
        return load_tokenizer(recipe.tokenizer.name_or_path)
    folder = out / "tokenizer"
    state = process_state()
    with state.main_process_first():
        if not (folder / "tokenizer.json").exists() and state.is_main_process:
            import numpy as np

            # round-robin over sources so every corpus shapes the vocabulary
            sources = (*general, *domain)
            streams = [s.cycle(np.random.default_rng([recipe.seed, i])) for i, s in enumerate(sources)]
            texts = [next(streams[i % len(streams)]) for i in range(recipe.tokenizer.train_docs)]
            _log(f"training a {recipe.tokenizer.vocab_size}-token byte-level BPE on {len(texts)} documents")
            save_tokenizer(train_bpe_tokenizer(texts, vocab_size=recipe.tokenizer.vocab_size), folder)
    return load_tokenizer(str(folder))


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
            _log(f"{phase_name}: {rope_change} (phase hand-off)")
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
        _atomic_write(cache, json.dumps({"peak_flops": peak, "device": str(device), "dtype": str(dtype)}))
    _log(f"measured peak {peak / 1e9:.1f} GFLOP/s ({device}, {dtype}) for MFU")
    return peak


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare_phase(recipe: Recipe, phase_name: str, tokenizer, general, domain, miner, out: Path):
    """Build (or reuse) the phase's rows on disk and plan its steps; returns ``(PhaseRows, BatchPlan)``."""
    from training.batch_plan import plan_batches
    from training.phase_build import build_phase_rows

    phase = recipe.phase(phase_name)
    data = build_phase_rows(
        general,
        domain,
        recipe.data,
        phase,
        tokenizer,
        miner,
        seed=recipe.data.seed * 1000 + PHASES.index(phase_name),
        folder=out / phase_name / "rows",
        on_build=lambda message: _log(f"{phase_name}: {message}"),
    )
    plan = plan_batches(data.lengths, phase, process_state().num_processes)
    summary = data.summary()
    _log(
        f"{phase_name}: {summary['rows']} rows × {phase.max_seq_len}, {summary['tokens']} tokens, "
        f"packing efficiency {summary['packing_efficiency']:.3f}, {plan.steps} steps training "
        f"{plan.planned_rows} rows, "
        f"domain share {summary['domain_share'][0][1]:.2f}→{summary['domain_share'][-1][1]:.2f} "
        f"(realised per tenth: {summary['realised_domain_share']}), "
        f"mined spans {summary['mined_spans']} in {summary['rows_with_spans']} rows"
    )
    return data, plan


def _report_epochs(recipe: Recipe, phases: list[str], general, domain, tokenizer) -> None:
    from training.epochs import epoch_report, format_report
    from training.phase_data import chars_per_token

    ratio = chars_per_token(general, domain, tokenizer, recipe.data.seed)
    for name in phases:
        report = epoch_report(general, domain, recipe.phase(name), recipe.data.temperature, ratio)
        _log(f"source epochs, {format_report(name, report)}")


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
    """Write ``phase_dir/final`` atomically with only what belongs on the Hub, as plain ModernBERT."""
    from modeling_rexbert.conversion import rewrite_as_modernbert
    from training.checkpoints import keep_hub_files
    from training.tokenizer import save_for_model

    state = process_state()
    final_dir, tmp = phase_dir / "final", phase_dir / "final.tmp"
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # on every process: FSDP gathers the full state dict collectively
    if state.is_main_process:
        save_for_model(tokenizer, tmp, model_max_length=phase.max_position_embeddings)
        keep_hub_files(tmp)
        rewrite_as_modernbert(tmp)
        _atomic_write(tmp / "phase_summary.json", json.dumps(summary, indent=1, default=str))
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp, final_dir)
    trainer.accelerator.wait_for_everyone()
    return final_dir


def run_phase(
    recipe: Recipe,
    phase_name: str,
    tokenizer,
    general,
    domain,
    miner,
    out: Path,
    resume: bool,
    stop_after_steps: int | None = None,
    allow_fresh_optimizer: bool = False,
) -> Path | None:
    """Train one phase; returns its final folder (None when stopped early by ``stop_after_steps``)."""
    from training.checkpoints import resume_checkpoint
    from training.collator import PackedMLMCollator, StepCollator
    from training.masking import SpanMasker
    from training.phase_data import PackedDataset
    from training.trainer import RexBertTrainer
    from training.trainer_settings import training_arguments, training_precision

    phase = recipe.phase(phase_name)
    index = PHASES.index(phase_name)
    phase_dir = out / phase_name
    state = process_state()
    checkpoint = resume_checkpoint(phase_dir, allow_fresh_optimizer, _log) if resume else None
    carried = None if checkpoint else _optimizer_start(recipe, phase_name, out, allow_fresh_optimizer)
    model = model_for_phase(recipe, phase_name, tokenizer, out)
    data, plan = prepare_phase(recipe, phase_name, tokenizer, general, domain, miner, out)
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
    )
    if stop_after_steps is not None:
        trainer.add_callback(_StopAfter(stop_after_steps))
    trainer.add_callback(_LogAtCheckpoints())  # last: sees every other callback's should_save
    if checkpoint:
        _log(f"{phase_name}: resuming from {checkpoint}")
    if carried:
        _log(f"{phase_name}: optimizer moments carried over from {carried}")
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    totals = torch.tensor(
        [float(v) for v in trainer.totals.values()], dtype=torch.float64, device=args.device
    )
    trained = dict(zip(trainer.totals, trainer.accelerator.reduce(totals, reduction="sum").tolist()))
    guided = {
        "target_share": phase.masking.guided_fraction,
        "share": round(trained["guided_sequences"] / max(1.0, trained["rows"]), 4),
        "spans_per_sequence": round(trained["guided_spans"] / max(1.0, trained["rows"]), 3),
        "spans_per_guided_sequence": round(
            trained["guided_spans"] / max(1.0, trained["guided_sequences"]), 3
        ),
    }
    _log(f"{phase_name}: guided MLM realised {guided}")
    if stop_after_steps is not None and trainer.state.global_step < steps:
        _log(f"{phase_name}: stopped after step {trainer.state.global_step} of {steps} (--stop-after-steps)")
        trainer.accelerator.wait_for_everyone()
        return None
    metrics = dict(result.metrics)
    metrics["train_loss"] = _phase_train_loss(trainer.state.log_history, steps) or metrics.get("train_loss")
    summary = {
        "phase": phase_name,
        "steps": steps,
        "global_step": trainer.state.global_step,
        "planned_rows": plan.planned_rows,
        # rows / Σ row index trained by this run, summed over processes (checks every
        # planned row was trained once: compare with planned_rows, Σ range(planned_rows))
        "trained_rows": int(trained["rows"]),
        "trained_row_id_sum": int(trained["row_id_sum"]),
        "guided_mlm": guided,
        "num_processes": state.num_processes,
        "precision": precision.as_dict(),
        "data": summary,
        "train": metrics,
        "optimizer_state": f"carried from {carried}" if carried else "fresh",
        "resumed_from": str(checkpoint) if checkpoint else None,
        "phase_config": dataclasses.asdict(phase),
        "log_history": [e for e in trainer.state.log_history if "loss" in e],
    }
    final_dir = _save_final(trainer, tokenizer, phase, phase_dir, summary)
    _log(f"{phase_name}: final checkpoint → {final_dir}")
    return final_dir


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


def _has_training_state(out: Path) -> bool:
    return any(p.name == "final" or p.name.startswith("checkpoint-") for p in out.glob("phase*/*"))


def run_curriculum(
    recipe: Recipe,
    phases: list[str],
    resume: bool = False,
    stop_after_steps: int | None = None,
    overwrite: bool = False,
    allow_fresh_optimizer: bool = False,
    prepare_only: bool = False,
) -> dict[str, Path | None]:
    """Run ``phases`` (a subset of phase1..phase3, in order); returns their final folders.

    Everything that can be checked is checked before anything is written: the world size against the
    batch sizes, FSDP, a training step against the GPU's memory (``training.plan.check_launch``), Guided MLM
    against the sources, the sources, and -- without ``resume`` -- that no phase
    folder already holds a run (``overwrite`` deletes it). If a user error (bad data, bad settings) stops
    the run before any checkpoint exists, the folders this call created are removed. ``stop_after_steps``
    stops each phase after that many steps without writing its final folder (used to test resume: run
    again with ``resume=True``). ``prepare_only`` builds the phases' rows (restartable, parallel with
    ``data.workers``) and trains nothing: a later run reuses them."""
    from training.checkpoints import refuse_or_clear_previous_run
    from training.plan import check_launch
    from training.trainer_settings import check_report_to

    # world size, FSDP and (on CUDA) GPU memory: before any source is read or row built
    check_launch(recipe, phases, process_state().num_processes)
    _check_guided_sources(recipe, phases)
    check_report_to(recipe.trainer.report_to)
    out = Path(recipe.output_dir)
    state = process_state()
    general, domain = _load_sources(recipe)
    if not resume and not prepare_only:
        for name in phases:
            refuse_or_clear_previous_run(out / name, overwrite, state.is_main_process)
        state.wait_for_everyone()
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if state.is_main_process:
            _atomic_write(out / "recipe.json", json.dumps(recipe_to_dict(recipe), indent=1))
        tokenizer = _tokenizer(recipe, general, domain, out)
        miner = _miner(recipe, general, domain)
        _report_epochs(recipe, phases, general, domain, tokenizer)
        finals = {}
        if prepare_only:
            for name in phases:
                prepare_phase(recipe, name, tokenizer, general, domain, miner, out)
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
                general,
                domain,
                miner,
                out,
                resume,
                stop_after_steps,
                allow_fresh_optimizer=allow_fresh_optimizer,
            )
            if finals[name] is None:
                break
        return finals
    except UserError:
        if created and state.is_main_process and not _has_training_state(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
