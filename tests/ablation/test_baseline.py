"""The plain-MLM arm is transformers' path (collator, AdamW, linear schedule, Trainer), not RexBERT's."""

import pytest
import torch
import transformers

from ablation.baseline import baseline_recipe, build_trainer, train_baseline
from ablation.config import load_ablation
from ablation.heldout import split_study_data
from ablation.variants import overall_domain_share, study_recipe


@pytest.fixture(scope="module")
def split(data_dir, tmp_path_factory):
    return split_study_data(data_dir, tmp_path_factory.mktemp("split"), general_share=8, min_chars=200)


@pytest.fixture
def plain(write_study, split, tmp_path):
    config = load_ablation(write_study())
    recipe = study_recipe(config, split, None)
    from ablation.variants import train_shared_tokenizer

    recipe.tokenizer.name_or_path = train_shared_tokenizer(recipe, tmp_path / "tok")
    return config, recipe, baseline_recipe(recipe, config.baseline, 0, tmp_path / "plain")


def test_plain_arm_is_transformers_trainer_collator_adamw_and_linear_schedule(plain, tmp_path):
    config, recipe, plain_recipe = plain
    trainer = build_trainer(plain_recipe, config.baseline, tmp_path / "plain")
    assert type(trainer) is transformers.Trainer
    assert type(trainer.model) is transformers.ModernBertForMaskedLM
    assert type(trainer.data_collator) is transformers.DataCollatorForLanguageModeling
    assert trainer.data_collator.mlm_probability == 0.15
    steps = trainer.args.max_steps
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is torch.optim.AdamW
    scheduler = trainer.create_scheduler(steps, optimizer)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    peak = recipe.phase1.lr
    top = rates.index(max(rates))
    assert max(rates) == pytest.approx(peak, rel=0.35)  # warmup ends at (about) the peak
    decay = rates[top:]
    assert all(x > y for x, y in zip(decay, decay[1:]))  # then decreases linearly toward 0
    assert decay[-1] < 0.2 * peak
    slopes = [x - y for x, y in zip(decay, decay[1:])]
    assert max(slopes) == pytest.approx(min(slopes), rel=1e-6)
    # the model is the RexBERT arms' architecture (converted config), the same size
    assert trainer.model.config.num_hidden_layers == recipe.model.overrides["num_hidden_layers"]
    assert trainer.model.config.hidden_size == recipe.model.overrides["hidden_size"]
    # one phase, the whole budget, at the recipe's overall domain share, no span masking
    assert plain_recipe.phase1.tokens == config.budget.tokens
    assert plain_recipe.phase1.mixture.domain_start == pytest.approx(overall_domain_share(recipe))


def _refuse(*args, **kwargs):
    raise AssertionError("the plain arm called RexBERT's training path")


def test_plain_arm_trains_without_any_rexbert_training_code(plain, monkeypatch):
    import training.collator
    import training.masking
    import training.optim
    import training.trainer

    for owner, name in (
        (training.optim.StableAdamW, "__init__"),
        (training.masking.SpanMasker, "mask_row"),
        (training.collator.PackedMLMCollator, "__call__"),
        (training.trainer.RexBertTrainer, "__init__"),
        (training.optim.StableAdamW, "step"),
    ):
        monkeypatch.setattr(owner, name, _refuse)
    config, _, plain_recipe = plain
    final, record = train_baseline(plain_recipe, config.baseline)
    assert record["optimizer"] == "torch.optim.adamw.AdamW"
    assert record["collator"].endswith("DataCollatorForLanguageModeling")
    assert record["model_class"].endswith("modeling_modernbert.ModernBertForMaskedLM")
    # the Trainer counted the real (non-pad) tokens it consumed: the budget, less than one batch short
    batch_tokens = plain_recipe.phase1.batch_size * plain_recipe.phase1.max_seq_len
    assert config.budget.tokens - batch_tokens < record["tokens"] <= config.budget.tokens + batch_tokens
    assert (final / "model.safetensors").is_file() and (final / "baseline_record.json").is_file()
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(final)  # a plain ModernBERT folder
    assert type(loaded) is transformers.ModernBertForMaskedLM
