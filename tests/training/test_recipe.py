from pathlib import Path

import pytest

from rexbert_common.config import ConfigError
from training.recipe import RecipeError, apply_overrides, load_recipe, recipe_from_dict

RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"


def _minimal(**extra):
    data = {"name": "t", "data": {"general": [{"name": "g", "path": "/x.txt"}]}}
    data.update(extra)
    return data


@pytest.mark.parametrize("name", ["tiny", "micro", "mini", "base", "large"])
def test_shipped_recipes_validate(name, monkeypatch):
    monkeypatch.setenv("REXBERT_DATA_DIR", "/data")
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.phase2.global_rope_theta == 160_000
    assert recipe.phase3.mixture.domain_end > recipe.phase3.mixture.domain_start
    assert recipe.phase3.masking.guided_fraction > 0 and recipe.phase3.masking.mlm_probability <= 0.15
    assert recipe.phase1.masking.mlm_probability == 0.30
    for phase in (recipe.phase2, recipe.phase3):  # a phase restart at the peak LR needs its moments
        assert phase.carry_optimizer or phase.warmup_fraction > 0
    if name != "tiny":  # the paper recipes run for weeks: they report to a tracker
        assert recipe.trainer.report_to and recipe.trainer.dataloader_num_workers > 0


def test_paper_hyperparameters():
    for name, lr, wd, size in (
        ("micro", 3e-3, 3e-4, "micro"),
        ("mini", 3e-3, 3e-4, "mini"),
        ("base", 8e-4, 1e-5, "base"),
        ("large", 5e-4, 1e-5, "large"),
    ):
        recipe = load_recipe(RECIPES / f"{name}.yaml")
        assert recipe.model.size == size and recipe.phase1.lr == lr and recipe.phase1.weight_decay == wd
        assert recipe.phase1.max_seq_len == 512 and recipe.phase2.max_seq_len == 8192
        assert (recipe.phase1.tokens, recipe.phase2.tokens, recipe.phase3.tokens) == (1.7e12, 2.5e11, 3.5e11)


def test_unknown_field_names_file_path_and_suggestion(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nphase1:\n  lerning_rate: 1\n  lr: 2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "phase1.lerning_rate" in message
    with pytest.raises(RecipeError, match="did you mean 'masking'"):
        recipe_from_dict(_minimal(phase1={"maskin": {}}))


def test_invalid_values_are_named():
    with pytest.raises(RecipeError, match="phase2.lr must be a number"):
        recipe_from_dict(_minimal(phase2={"lr": "fast"}))
    with pytest.raises(RecipeError, match="decay_shape"):
        recipe_from_dict(_minimal(phase1={"decay_shape": "cosine"}))
    with pytest.raises(RecipeError, match="mlm_probability"):
        recipe_from_dict(_minimal(phase1={"masking": {"mlm_probability": 2}}))
    with pytest.raises(RecipeError, match="multiple of"):
        recipe_from_dict(_minimal(phase1={"batch_size": 10, "micro_batch_size": 4}))
    with pytest.raises(RecipeError, match="data.domain has no sources"):
        recipe_from_dict(_minimal(phase3={"mixture": {"domain_end": 0.5}}))
    with pytest.raises(RecipeError, match="missing required field name"):
        recipe_from_dict({})


def test_overrides_and_env_expansion(monkeypatch):
    monkeypatch.setenv("MY_DATA", "/srv/data")
    data = _minimal(data={"general": [{"name": "g", "path": "${MY_DATA}/a.txt"}]})
    apply_overrides(data, ["phase1.lr=1e-4", "data.general.0.weight=2", "phase3.masking.guided_fraction=0.1"])
    recipe = recipe_from_dict(data)
    assert recipe.phase1.lr == 1e-4 and recipe.data.general[0].weight == 2.0
    assert recipe.data.general[0].path == "/srv/data/a.txt"
    assert recipe.phase3.masking.guided_fraction == 0.1
    monkeypatch.delenv("MY_DATA")
    with pytest.raises(RecipeError, match="MY_DATA"):
        recipe_from_dict(_minimal(data={"general": [{"name": "g", "path": "${MY_DATA}/a.txt"}]}))
    with pytest.raises(ConfigError, match="field.path=value"):
        apply_overrides({}, ["phase1.lr"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("phase1.micro_batch_size=0", "phase1.micro_batch_size = 0 must be >= 1"),
        ("phase2.batch_size=10", "phase2.batch_size (10) must be a multiple of micro_batch_size (4)"),
        ("phase1.tokens=0", "phase1.tokens = 0 must be > 0"),
        ("phase3.tokens=-5", "phase3.tokens = -5 must be > 0"),
        (
            "phase1.tokens=100000",
            "phase1.tokens = 100000 is less than one optimizer step of batch_size × max_seq_len = 4194304",
        ),
        ("phase1.lr=-1e-3", "phase1.lr = -0.001 must be > 0"),
        ("phase1.betas=[0.9, 1.0]", "phase1.betas = 1.0 must be < 1"),
        ("phase2.betas=[0, 0.98]", "phase2.betas = 0.0 must be > 0"),
        ("phase1.warmup_fraction=1.5", "phase1.warmup_fraction = 1.5 must be <= 1"),
        ("phase3.decay_fraction=-0.1", "phase3.decay_fraction = -0.1 must be >= 0"),
        ("phase3.mixture.domain_end=1.2", "phase3.mixture.domain_end = 1.2 must be <= 1"),
        ("phase3.masking.guided_fraction=2", "guided_fraction must be in [0, 1], got 2"),
        ("phase3.warmup_fraction=0.2", "phase3.warmup_fraction + decay_fraction = 1.2 must be <= 1"),
        (
            "data.general.5.weight=2",
            "--set data.general.5.weight: data.general.5 is not an index of a 4-item list",
        ),
        ("data.general.0.weight=0", "data.general.0.weight = 0.0 must be > 0"),
        ("data.general.0.text_fields=[]", "data.general.0.text_fields = [] needs at least one"),
        ("data.general.1.name=fineweb_edu", "data.general.1.name = 'fineweb_edu' is used by another source"),
        ("trainer.dataloader_num_workers=-1", "trainer.dataloader_num_workers = -1 must be >= 0"),
        ("trainer.dataloader_num_workers=0", "need trainer.dataloader_num_workers > 0"),
        ("trainer.extra={max_steps: 5}", "trainer.extra.max_steps is set by the phase"),
        ("trainer.extra={dataloader_num_workers: 2}", "trainer.extra.dataloader_num_workers: use trainer."),
        (
            "trainer.extra={not_an_argument: 1}",
            "trainer.extra.not_an_argument is not a TrainingArguments field",
        ),
        ("trainer.mixed_precision=fp16", "trainer.mixed_precision = 'fp16' is not one of"),
        ("phase1.init_from=a", "phase1.init_from = 'a' and model.init_from = 'b' disagree"),
    ],
)
def test_bad_values_fail_at_load_naming_file_field_and_value(override, message, monkeypatch):
    monkeypatch.setenv("REXBERT_DATA_DIR", "/data")
    recipe = RECIPES / "micro.yaml"
    overrides = [override] + (["model.init_from=b"] if "init_from" in override else [])
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, overrides)
    text = str(info.value)
    assert text.startswith(str(recipe)) and message in text and "\n" not in text, text


def test_empty_recipe_file_names_the_missing_field(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(RecipeError, match=f"{empty}: missing required field name"):
        load_recipe(empty)
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        (tmp_path / "list.yaml").write_text("- a\n- b\n")
        load_recipe(tmp_path / "list.yaml")


def test_trainer_settings_reach_training_arguments(tmp_path, monkeypatch):
    from training.trainer_settings import training_arguments

    monkeypatch.setenv("REXBERT_DATA_DIR", "/data")
    recipe = load_recipe(
        RECIPES / "micro.yaml",
        [
            "trainer.report_to=[]",
            "trainer.run_name=exp7",
            "trainer.dataloader_num_workers=3",
            "trainer.dataloader_persistent_workers=true",
            "trainer.dataloader_prefetch_factor=4",
            "trainer.ddp_timeout=123",
            "trainer.activation_checkpointing=true",
            "trainer.dataloader_pin_memory=false",
            "trainer.extra={logging_nan_inf_filter: false, logging_first_step: true}",
        ],
    )
    args = training_arguments(recipe, "phase2", tmp_path, steps=7)
    assert args.report_to == [] and args.run_name == "exp7"
    assert (
        args.dataloader_num_workers,
        args.dataloader_persistent_workers,
        args.dataloader_prefetch_factor,
    ) == (3, True, 4)
    assert args.ddp_timeout == 123 and args.activation_checkpointing and not args.dataloader_pin_memory
    assert args.logging_first_step and not args.logging_nan_inf_filter
    phase = recipe.phase2
    assert args.max_steps == 7 and args.learning_rate == phase.lr
    assert args.gradient_accumulation_steps == 1  # RexBertTrainer accumulates a planned step itself
    assert training_arguments(
        load_recipe(RECIPES / "micro.yaml", ["trainer.report_to=[]"]), "phase1", tmp_path, 1
    ).run_name == ("rexbert-micro-phase1")
    bad = load_recipe(RECIPES / "micro.yaml", ["trainer.report_to=[wandbb]"])
    with pytest.raises(RecipeError, match="trainer.report_to: 'wandbb' is not a tracker"):
        training_arguments(bad, "phase1", tmp_path, 1)


def test_report_to_must_name_an_installed_tracker(monkeypatch):
    import transformers.integrations.integration_utils as integrations

    from training.trainer_settings import check_report_to

    monkeypatch.setattr(integrations, "get_available_reporting_integrations", lambda: ["tensorboard"])
    check_report_to(["tensorboard"])
    with pytest.raises(
        RecipeError, match=r"trainer.report_to: 'wandb' is not installed \(pip install wandb\)"
    ):
        check_report_to(["wandb"])
