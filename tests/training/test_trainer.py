"""The recipe's data-loader settings reach the DataLoader; FSDP is refused (not run wrongly)."""

import pytest
import transformers

from rexbert_common.errors import UserError
from training.recipe import recipe_from_dict
from training.trainer import RexBertTrainer
from training.trainer_settings import training_arguments


def _model():
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


def _trainer(tmp_path, **settings):
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
    args = training_arguments(recipe, "phase1", tmp_path, steps=2, num_processes=1)
    rows = [{"input_ids": [1, 5, 6, 2]} for _ in range(4)]
    return RexBertTrainer(
        model=_model(),
        args=args,
        data_collator=lambda items: items,
        train_dataset=rows,
        phase=recipe.phase1,
        batch_plan=[[0], [1], [2], [3]],
    )


def test_dataloader_honours_the_recipes_worker_settings(tmp_path):
    loader = _trainer(
        tmp_path, dataloader_num_workers=2, dataloader_persistent_workers=True, dataloader_prefetch_factor=3
    ).get_train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 3)
    assert [list(b) for b in loader.batch_sampler] == [[0], [1], [2], [3]]  # the planned order
    default = _trainer(tmp_path).get_train_dataloader()
    assert (default.num_workers, default.persistent_workers) == (0, False)


def test_fsdp_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    original = transformers.Trainer.create_accelerator_and_postprocess

    def with_fsdp(self):
        original(self)
        self.is_fsdp_enabled = True  # what an `accelerate launch --use_fsdp` run sets

    monkeypatch.setattr(transformers.Trainer, "create_accelerator_and_postprocess", with_fsdp)
    with pytest.raises(UserError, match="FSDP is not supported .*per-shard update RMS.*use DDP"):
        _trainer(tmp_path)


def test_a_phase_continues_from_the_previous_phases_optimizer_moments(tmp_path):
    import torch

    previous = _trainer(tmp_path / "previous")
    previous.create_optimizer()
    for p in previous.model.parameters():  # a non-trivial state: one step on random gradients
        p.grad = torch.randn_like(p)
    previous.optimizer.step()
    checkpoint = tmp_path / "phase1" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    torch.save(previous.optimizer.state_dict(), checkpoint / "optimizer.pt")

    trainer = _trainer(tmp_path / "next")
    trainer.optimizer_state_from = checkpoint
    optimizer = trainer.create_optimizer()
    moments = [optimizer.state[p]["exp_avg"] for p in trainer.model.parameters()]
    expected = [previous.optimizer.state[p]["exp_avg"] for p in previous.model.parameters()]
    assert len(moments) == len(expected) > 0
    for got, want in zip(moments, expected):
        assert torch.equal(got, want)
    assert optimizer.param_groups[0]["lr"] == trainer.phase.lr
