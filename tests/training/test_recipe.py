from pathlib import Path

import pytest

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
    with pytest.raises(RecipeError, match="phase2.lr must be a float"):
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
    with pytest.raises(RecipeError, match="field.path=value"):
        apply_overrides({}, ["phase1.lr"])
