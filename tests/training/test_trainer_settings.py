"""training.trainer_settings: the run's precision (bf16 autocast by capability) reaches the Trainer, and a
bf16 step keeps fp32 master weights and optimizer state."""

import json

import numpy as np
import pytest
import torch

from rexbert_common import precision as precision_module
from rexbert_common.precision import MatmulRace, Precision
from tests.training._tiny import args as tiny_args
from training.batch_plan import plan_batches
from training.collator import PackedMLMCollator, StepCollator
from training.masking import MaskingConfig, SpanMasker
from training.recipe import recipe_from_dict
from training.trainer import RexBertTrainer
from training.trainer_settings import training_arguments, training_precision


def _recipe(**trainer):
    return recipe_from_dict(
        {
            "name": "t",
            "data": {"general": [{"name": "g", "path": "/x.txt"}]},
            "trainer": trainer,
            "phase1": {"tokens": 512, "max_seq_len": 64, "batch_size": 4, "micro_batch_size": 2},
        }
    )


@pytest.fixture
def cpu(monkeypatch):
    """This process's CPU as one with native bf16 whose matmul race gave ``speedup`` (injected)."""

    def set_cpu(speedup: float, native: bool = True) -> None:
        monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
        monkeypatch.setattr(
            precision_module, "race_matmul", lambda device_type: MatmulRace(1e11, speedup * 1e11)
        )

    return set_cpu


@pytest.mark.parametrize(
    "speedup, native, expected", [(4.0, True, True), (1.1, True, False), (4.0, False, False)]
)
def test_auto_reaches_the_training_arguments_by_capability(tmp_path, cpu, speedup, native, expected):
    cpu(speedup, native)
    args = training_arguments(_recipe(mixed_precision="auto"), "phase1", tmp_path, steps=2)
    assert args.bf16 is expected and not args.fp16


@pytest.mark.parametrize("choice, expected", [("bf16", True), ("fp32", False)])
def test_bf16_and_fp32_force_the_training_arguments(tmp_path, cpu, choice, expected):
    cpu(4.0 if choice == "fp32" else 0.5)  # the race must not matter
    args = training_arguments(_recipe(mixed_precision=choice), "phase1", tmp_path, steps=2)
    assert args.bf16 is expected


def test_every_process_uses_rank_zeros_choice(monkeypatch, cpu):
    """A timed probe may land on both sides of its threshold on two ranks: rank 0's choice wins."""
    cpu(1.2)  # this rank alone would pick fp32
    sent = []

    def broadcast(objects, src):
        sent.append((list(objects), src))
        objects[0] = Precision(torch.bfloat16, "rank 0's")

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast)
    chosen = training_precision(_recipe().trainer, log=None)
    assert chosen == Precision(torch.bfloat16, "rank 0's")
    assert sent[0][1] == 0 and sent[0][0][0].dtype == torch.float32


def test_a_bf16_step_computes_in_bf16_but_keeps_fp32_weights_and_optimizer_state(tmp_path):
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM

    torch.manual_seed(0)
    config = RexBertConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=256, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2, mask_token_id=3, sparse_prediction=True,
    )  # fmt: skip
    model = RexBertForMaskedLM(config)
    recipe = _recipe(mixed_precision="bf16")
    args = training_arguments(recipe, "phase1", tmp_path, steps=2)
    args.save_strategy = "no"
    masker = SpanMasker(MaskingConfig(mlm_probability=0.3), 3, [0, 1, 2, 3], 97)
    from tests.training._ddp_step import packed_items

    items = packed_items([40, 30, 20, 50, 40, 30, 20, 50])
    plan = plan_batches(np.array([len(i["input_ids"]) for i in items]), recipe.phase1, world_size=1)
    trainer = RexBertTrainer(
        model=model,
        args=args,
        data_collator=StepCollator(PackedMLMCollator(masker, seed=0), recipe.phase1.micro_batch_size),
        train_dataset=items,
        phase=recipe.phase1,
        batch_plan=plan,
    )
    seen = set()
    hook = model.model.layers[0].mlp.Wi.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    hook.remove()
    assert seen == {torch.bfloat16}  # the matmuls really ran under bf16 autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it did train
    state = [t for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    assert state and {t.dtype for t in state if t.is_floating_point()} == {torch.float32}


def test_each_phase_summary_records_the_precision(tmp_path, data_dir, cpu):
    """A tiny phase 1 with ``auto`` on a CPU that wins the race: bf16, recorded, fp32 weights saved."""
    from safetensors import safe_open

    from training.run import main

    cpu(3.0)
    argv = tiny_args(tmp_path, "--phase", "1", "--set", "trainer.mixed_precision=auto")
    argv += ["--set", "phase1.tokens=600"]
    assert main(argv) == 0
    final = tmp_path / "phase1" / "final"
    summary = json.loads((final / "phase_summary.json").read_text())
    assert summary["precision"]["precision"] == "bf16"
    assert "native bf16, bf16 matmul 3.00x" in summary["precision"]["reason"]
    with safe_open(str(final / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118 (safe_open is no dict) == {torch.float32}
