"""RexBertTrainer: one optimizer step over a variable number of micro-batches, loss normalised per step."""

import math

import numpy as np
import pytest
import torch
import transformers
from transformers import TrainingArguments

from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
from rexbert_common.errors import UserError
from tests.training._ddp_step import packed_items
from training.batch_plan import plan_batches
from training.collator import MICRO_BATCHES_KEY, STATS_KEY, PackedMLMCollator, StepCollator
from training.masking import MaskingConfig, SpanMasker
from training.recipe import PhaseConfig, recipe_from_dict
from training.trainer import RexBertTrainer
from training.trainer_settings import training_arguments


@pytest.fixture
def trainer(tmp_path):
    torch.manual_seed(0)
    config = RexBertConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=256, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2, mask_token_id=3,
    )  # fmt: skip
    phase = PhaseConfig(batch_size=4, micro_batch_size=2, max_seq_len=64)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1)
    plan = plan_batches(np.full(8, 40), phase, world_size=1)
    return RexBertTrainer(model=RexBertForMaskedLM(config), args=args, phase=phase, batch_plan=plan)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_step_loss_is_normalised_over_all_labelled_tokens_of_the_step(trainer):
    """Two micro-batches with very different labelled counts: the accumulated gradient equals that of the
    mean CE over every labelled token of the step (not the mean of per-micro-batch means)."""
    masker = SpanMasker(MaskingConfig(mlm_probability=0.3), 3, [0, 1, 2, 3], 97)
    collate = PackedMLMCollator(masker, seed=0)
    items = packed_items([60, 50, 6, 8])  # micro-batch 1 has ~10x the labels of micro-batch 2
    step = StepCollator(collate, micro_batch_size=2)(items)
    counts = [mb[STATS_KEY]["labelled"] for mb in step[MICRO_BATCHES_KEY]]
    assert counts[0] > 4 * counts[1]
    model = trainer.model
    model.zero_grad()
    loss = trainer.training_step(model, step)
    accumulated = _grads(model)
    # reference: the whole step as one flattened micro-batch (documents are independent)
    model.zero_grad()
    whole = collate(items)
    whole.pop(STATS_KEY)
    reference = model(**whole).loss  # mean over all labelled tokens of the step
    reference.backward()
    expected = _grads(model)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert {k: trainer.totals[k] for k in ("rows", "row_id_sum", "steps")} == {
        "rows": 4,
        "row_id_sum": 6,
        "steps": 1,
    }


def test_masked_accuracy_counts_the_labelled_tokens_whose_top_prediction_is_the_target(trainer):
    """The logged masked accuracy: correct first guesses over labelled tokens, argmax's choice (the first
    maximum) against the targets of every micro-batch of the step."""
    masker = SpanMasker(MaskingConfig(mlm_probability=0.3), 3, [0, 1, 2, 3], 97)
    collate = PackedMLMCollator(masker, seed=0)
    step = StepCollator(collate, micro_batch_size=2)(packed_items([60, 50, 40, 30]))
    model = trainer.model
    expected = 0
    with torch.no_grad():
        for mb in step[MICRO_BATCHES_KEY]:
            inputs = {k: v for k, v in mb.items() if k != STATS_KEY}
            logits = model(**inputs).logits  # (M, V) at the labelled positions
            targets = inputs["labels"].reshape(-1).index_select(0, inputs["label_positions"])
            expected += int((logits.argmax(-1) == targets).sum())
    trainer._reset_counters()
    trainer.training_step(model, step)
    assert 0 < expected < sum(mb[STATS_KEY]["labelled"] for mb in step[MICRO_BATCHES_KEY])
    assert int(trainer._counters["correct"]) == expected


def test_gradient_accumulation_must_be_left_to_the_plan(tmp_path, trainer):
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_accumulation_steps=2
    )
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1"):
        RexBertTrainer(model=trainer.model, args=args, phase=trainer.phase, batch_plan=trainer.batch_plan)


# -- the recipe's trainer settings, FSDP refusal, optimizer hand-off --------------------------------------


def _tiny_model():
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM

    config = RexBertConfig.for_size(
        "micro",
        num_hidden_layers=1,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=1,
        vocab_size=64,
        pad_token_id=0,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
        bos_token_id=1,
        eos_token_id=2,
    )
    return RexBertForMaskedLM(config)


def _settings_trainer(tmp_path, **settings):
    recipe = recipe_from_dict(
        {
            "name": "t",
            "data": {"general": [{"name": "g", "path": "/x.txt"}]},
            "trainer": settings,
            "phase1": {
                "tokens": 512,
                "max_seq_len": 64,
                "batch_size": 2,
                "micro_batch_size": 1,
                "max_position_embeddings": 64,
            },
        }
    )
    args = training_arguments(recipe, "phase1", tmp_path, steps=2)
    rows = [{"input_ids": [1, 5, 6, 2]} for _ in range(4)]
    plan = plan_batches(np.full(4, 4), recipe.phase1, world_size=1)
    return RexBertTrainer(
        model=_tiny_model(),
        args=args,
        data_collator=lambda items: items,
        train_dataset=rows,
        phase=recipe.phase1,
        batch_plan=plan,
    )


def test_dataloader_honours_the_recipes_worker_settings(tmp_path):
    loader = _settings_trainer(
        tmp_path, dataloader_num_workers=2, dataloader_persistent_workers=True, dataloader_prefetch_factor=3
    ).get_train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 3)
    default = _settings_trainer(tmp_path).get_train_dataloader()
    assert (default.num_workers, default.persistent_workers) == (0, False)


def test_fsdp_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    original = transformers.Trainer.create_accelerator_and_postprocess

    def with_fsdp(self):
        original(self)
        self.is_fsdp_enabled = True  # what an `accelerate launch --use_fsdp` run sets

    monkeypatch.setattr(transformers.Trainer, "create_accelerator_and_postprocess", with_fsdp)
    with pytest.raises(UserError, match="FSDP is not supported .*per-shard update RMS.*use DDP"):
        _settings_trainer(tmp_path)


def test_a_phase_continues_from_the_previous_phases_optimizer_moments(tmp_path):
    previous = _settings_trainer(tmp_path / "previous")
    previous.create_optimizer()
    for p in previous.model.parameters():  # a non-trivial state: one step on random gradients
        p.grad = torch.randn_like(p)
    previous.optimizer.step()
    checkpoint = tmp_path / "phase1" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    torch.save(previous.optimizer.state_dict(), checkpoint / "optimizer.pt")

    trainer = _settings_trainer(tmp_path / "next")
    trainer.optimizer_state_from = checkpoint
    optimizer = trainer.create_optimizer()
    moments = [optimizer.state[p]["exp_avg"] for p in trainer.model.parameters()]
    expected = [previous.optimizer.state[p]["exp_avg"] for p in previous.model.parameters()]
    assert len(moments) == len(expected) > 0
    for got, want in zip(moments, expected):
        assert torch.equal(got, want)
    assert optimizer.param_groups[0]["lr"] == trainer.phase.lr


def test_training_step_never_syncs_the_device_with_the_host(trainer):
    """The collator computes every packing tensor on the host; the step (forward, backward, loss
    normalisation, accuracy counters) must not read a device value back (no .item()/nonzero())."""
    from torch.profiler import ProfilerActivity, profile

    masker = SpanMasker(MaskingConfig(mlm_probability=0.3), 3, [0, 1, 2, 3], 97)
    step = StepCollator(PackedMLMCollator(masker, seed=0), micro_batch_size=2)(packed_items([60, 50, 6, 8]))
    trainer.training_step(trainer.model, step)  # warm-up: lazy initialisation may sync once
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.training_step(trainer.model, step)
    names = {event.name for event in prof.events()}
    syncs = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::is_nonzero"} & names
    assert not syncs, syncs


# -- divergence: a non-finite loss or gradient norm stops the run, or is skipped a bounded number of times ---


@pytest.fixture
def spoil_steps(monkeypatch):
    """``spoil_steps({5: inf})`` adds ``inf`` (or NaN, or multiplies by 0·inf) to the training loss of
    optimizer step 5 -- as an overflow in one micro-batch would."""
    from training import trainer as module

    current = {"step": 0}
    original_step = module.RexBertTrainer.training_step
    original_forward = RexBertForMaskedLM.forward

    def training_step(self, model, inputs, num_items_in_batch=None):
        current["step"] = self.state.global_step + 1
        return original_step(self, model, inputs, num_items_in_batch)

    def install(values: dict[int, float]):
        def forward(self, *args, **kwargs):
            out = original_forward(self, *args, **kwargs)
            if self.training and out.loss is not None and current["step"] in values:
                out.loss = out.loss + values[current["step"]]
            return out

        monkeypatch.setattr(module.RexBertTrainer, "training_step", training_step)
        monkeypatch.setattr(RexBertForMaskedLM, "forward", forward)

    return install


def _tiny_phase1(out, *extra, save_steps=2):
    from tests.training._tiny import args

    return args(out, "--phase", "1", "--set", f"phase1.save_steps={save_steps}", *extra)


def test_an_infinite_loss_stops_the_run_before_anything_after_it_is_saved(tmp_path, spoil_steps, capsys):
    """An infinite loss has finite gradients (softmax - one-hot): only the loss check catches it. The run
    stops within two steps with one line naming the step and the checkpoint to resume from, saves nothing
    after the bad step, exports nothing, and the phase summary says why."""
    import json

    from training.checkpoints import MANIFEST
    from training.run import script_main

    spoil_steps({5: math.inf})
    out = tmp_path / "diverged"
    assert script_main(_tiny_phase1(out, save_steps=4)) == 2  # no save between step 5 and its detection
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1] == (
        "rexbert train: error: phase1: training diverged at step 5: a non-finite loss or gradient norm "
        f"(gradient norm nan); nothing after it was saved; resume from {out / 'phase1' / 'checkpoint-4'} "
        "with --resume -- "
        "lower the LR, or set trainer.skip_nonfinite_steps to skip a few such steps"
    )
    phase = out / "phase1"
    assert sorted(p.name for p in phase.glob("checkpoint-*")) == ["checkpoint-4"]
    assert (phase / "checkpoint-4" / MANIFEST).is_file()
    assert not (phase / "final").exists()
    summary = json.loads((phase / "phase_summary.json").read_text())
    assert summary["status"] == "diverged" and "step 5" in summary["error"]
    # seen two steps late, on the host, without a synchronisation of its own: during step 7
    assert max(e["step"] for e in summary["log_history"] if "loss" in e) == 6


def test_a_non_finite_last_step_is_never_exported(tmp_path, spoil_steps):
    from training.run import main
    from training.trainer import TrainingDiverged

    spoil_steps({9: math.nan})  # the tiny phase 1 has 9 steps: only the final save can catch it
    out = tmp_path / "last"
    with pytest.raises(TrainingDiverged, match="diverged at step 9: .* resume from .*checkpoint-8"):
        main(_tiny_phase1(out))
    assert not (out / "phase1" / "final").exists() and not (out / "phase1" / "checkpoint-9").exists()


def test_skipping_bounded_non_finite_steps(tmp_path, spoil_steps):
    """With trainer.skip_nonfinite_steps the bad steps do not update the model and are listed in the phase
    summary; one more than allowed stops the run."""
    import json

    from safetensors.torch import load_file

    from training.run import main
    from training.trainer import TrainingDiverged

    spoil_steps({4: math.nan, 6: math.inf})
    out = tmp_path / "skipped"
    assert main(_tiny_phase1(out, "--set", "trainer.skip_nonfinite_steps=2")) == 0
    summary = json.loads((out / "phase1" / "final" / "phase_summary.json").read_text())
    assert summary["status"] == "complete" and summary["skipped_nonfinite_steps"] == [4, 6]
    weights = load_file(out / "phase1" / "final" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    with pytest.raises(
        TrainingDiverged, match=r"diverged at step 6: 2 non-finite steps \(skip_nonfinite_steps: 1"
    ):
        main(_tiny_phase1(tmp_path / "one", "--set", "trainer.skip_nonfinite_steps=1"))


def test_each_process_trains_the_rows_of_its_global_rank_not_its_local_rank(tmp_path):
    """On the second GPU of the third node (global rank 5 of 8, local rank 1), the dataloader yields the
    rows the plan gives rank 5 -- over every rank, each planned row exactly once; rank 1's rows are others."""
    from unittest import mock

    phase = PhaseConfig(batch_size=16, micro_batch_size=2, max_seq_len=64)
    plan = plan_batches(np.full(96, 40), phase, world_size=8)
    trainer = _settings_trainer(tmp_path)
    trainer.batch_plan, trainer.train_dataset = plan, list(range(96))  # a row's item is its index
    trainer.data_collator = lambda items: items
    trained = {}
    for rank, local_rank in [(r, r % 2) for r in range(8)]:  # 4 nodes × 2 GPUs
        trainer.accelerator = mock.Mock(process_index=rank, local_process_index=local_rank, num_processes=8)
        trained[rank] = [list(step) for step in trainer.get_train_dataloader()]
    assert trained[5] == [list(plan.process_rows(s, 5)) for s in range(plan.steps)]
    assert trained[5] != trained[1], "global rank 5 and local rank 1 own different rows"
    every = sorted(row for rows in trained.values() for step in rows for row in step)
    assert every == list(range(plan.planned_rows)), "every planned row once over the 8 processes"


def test_two_gloo_processes_give_one_process_loss_and_gradient_on_the_same_global_batch(tmp_path):
    """Two ranks of a torch.distributed (gloo) group, spawned here, train one step of the same 8 rows as
    one process: the logged loss and the gradient the optimizer receives are the same (DDP averages the
    ranks' gradients, so each rank's loss carries the process count)."""
    import socket

    import torch.multiprocessing as mp

    from tests.training._ddp_step import one_step, rank_main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(rank_main, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    two = torch.load(tmp_path / "rank0.pt", weights_only=False)
    one = one_step(1, str(tmp_path / "single"))
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert set(two["grads"]) == set(one["grads"]) and len(one["grads"]) > 10
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
