"""The plain arm's peak LR is swept on validation text (not the scored text) before its cells train."""

import json
from pathlib import Path

import pytest

import ablation.grid as grid
import ablation.sweep as sweep
from ablation.config import load_ablation
from rexbert_common.config import ConfigError

SCORES = {3e-4: 0.10, 1e-3: 0.14, 3e-3: 0.12}


@pytest.fixture
def fake_study(fake_cells, monkeypatch):
    """The grid without training (``fake_cells``), sweep points recorded in the same list."""

    def fake_point(study, lr):
        fake_cells.append(("point", lr))
        point = {"lr": lr, "seed": study.config.seeds[0], "score": SCORES[lr]}
        grid.write_json_atomic(sweep.point_folder(study.config.output_dir, lr) / sweep.POINT_FILE, point)
        return point

    monkeypatch.setattr(sweep, "run_point", fake_point)
    return fake_cells


def test_sweep_points_run_first_and_plain_cells_wait_for_all_of_them(write_study, fake_study):
    config = load_ablation(write_study(baseline={"lr_sweep": list(SCORES)}))
    logs = []
    grid.run_grid(config, log=logs.append, shard=(1, 2))  # seed 1; sweep point 1 of 3
    assert fake_study[0] == ("point", 1e-3)
    assert ("d_plain_mlm", 1) not in fake_study and any("waits for the LR sweep" in line for line in logs)
    assert sweep.chosen_lr(config) is None and sweep.sweep_summary(config) is None
    grid.run_grid(config, log=logs.append, shard=(0, 2))  # seed 0; sweep points 0 and 2, then every cell
    assert {("point", 3e-4), ("point", 3e-3)} <= set(fake_study)
    assert fake_study.index(("point", 3e-3)) < fake_study.index(("d_plain_mlm", 0))
    assert sweep.chosen_lr(config) == 1e-3, "the best validation score"
    grid.run_grid(config, log=logs.append, shard=(1, 2))
    assert fake_study[-1] == ("d_plain_mlm", 1)
    summary = sweep.sweep_summary(config)
    assert [p["lr"] for p in summary["points"]] == sorted(SCORES) and summary["chosen"] == 1e-3


def test_a_study_without_a_plain_arm_sweeps_nothing(write_study, fake_study):
    config = load_ablation(write_study(variants=[{"name": "b_anneal"}], baseline={"lr_sweep": list(SCORES)}))
    grid.run_grid(config, log=lambda _: None)
    assert fake_study == [("b_anneal", 0), ("b_anneal", 1)] and sweep.sweep_done(config)


def test_plain_cells_train_at_the_chosen_rate_and_the_first_seed_reuses_the_sweep_run(
    write_study, fake_study, monkeypatch
):
    import ablation.baseline as baseline
    from ablation.variants import base_recipe

    config = load_ablation(write_study(baseline={"lr_sweep": list(SCORES)}))
    for lr in SCORES:
        point = {"lr": lr, "seed": 0, "score": SCORES[lr]}
        grid.write_json_atomic(sweep.point_folder(config.output_dir, lr) / sweep.POINT_FILE, point)
    trained = []

    def fake_train(recipe, settings):
        trained.append((Path(recipe.output_dir), settings.lr, recipe.seed))
        return Path(recipe.output_dir) / "final", {"tokens": 1}

    monkeypatch.setattr(baseline, "train_baseline", fake_train)
    study = grid.Study(config, None, base_recipe(config), None, None)
    plain = next(v for v in config.arms() if v.kind == "hf_mlm")
    for seed in (0, 1):
        _, phases, _ = grid.train_cell(study, grid.Cell(plain, seed))
        assert phases[0]["learning_rate"] == 1e-3
    assert trained[0] == (sweep.point_folder(config.output_dir, 1e-3) / "train", 1e-3, 0)
    assert trained[1] == (grid.Cell(plain, 1).folder(config.output_dir) / "train", 1e-3, 1)


def test_a_point_is_scored_on_the_validation_texts_only(write_study, monkeypatch, tmp_path):
    import ablation.baseline as baseline
    import ablation.scoring as scoring
    import evaluation.mlm_scoring as mlm_scoring
    from ablation.heldout import EvaluationTexts
    from ablation.variants import base_recipe

    config = load_ablation(write_study(baseline={"lr_sweep": [1e-3]}))
    texts = EvaluationTexts(
        fields={"product_title": ["scored title"]},
        products=[],
        validation={"product_title": ["validation title"], "general": ["validation passage"]},
    )
    seen = []
    monkeypatch.setattr(baseline, "train_baseline", lambda recipe, s: (tmp_path, {"tokens": 7}))
    monkeypatch.setattr(mlm_scoring, "load_mlm", lambda path: (None, None))

    def fake_recovery(model, tokenizer, evaluated, cfg):
        seen.append(evaluated.fields)
        return {"product_title_span_top1": 0.2, "general_span_top1": 0.4, "general_span_top3": 0.9}

    monkeypatch.setattr(scoring, "mlm_recovery", fake_recovery)
    point = sweep.run_point(grid.Study(config, None, base_recipe(config), texts, None), 1e-3)
    assert seen == [texts.validation]
    assert point["score"] == pytest.approx(0.3), "mean top-1 over fields and protocols"
    assert json.loads((sweep.point_folder(config.output_dir, 1e-3) / sweep.POINT_FILE).read_text()) == point


def test_a_fixed_rate_and_a_sweep_cannot_both_be_set(write_study):
    with pytest.raises(ConfigError, match="baseline.lr = 0.001 and baseline.lr_sweep"):
        load_ablation(write_study(baseline={"lr": 1e-3, "lr_sweep": [1e-3, 3e-3]}))
    assert sweep.chosen_lr(load_ablation(write_study(baseline={"lr": 1e-3, "lr_sweep": []}))) == 1e-3
    shipped = load_ablation("experiments/cpu_study.yaml")
    assert shipped.baseline.lr_sweep == [3e-4, 1e-3, 3e-3] and shipped.baseline.lr is None


@pytest.mark.slow  # a real tiny sweep: two plain-arm trainings, then a second seed at the chosen rate
def test_real_sweep_scores_validation_text_and_the_first_seed_reuses_its_run(write_study):
    config = load_ablation(
        write_study(
            variants=[{"name": "d_plain_mlm", "kind": "hf_mlm"}],
            baseline={"lr_sweep": [1e-4, 1e-2], "sweep_validation_texts": 20},
        )
    )
    results = grid.run_grid(config, log=lambda _: None)
    summary = sweep.sweep_summary(config)
    best = max(summary["points"], key=lambda p: p["score"])
    assert summary["chosen"] == best["lr"] and len({p["score"] for p in summary["points"]}) == 2
    for point in summary["points"]:
        assert set(point["validation_texts"].values()) == {20}
        assert abs(point["tokens"] - config.budget.tokens) <= config.budget.tolerance * config.budget.tokens
    first, second = sorted(results, key=lambda r: r["seed"])
    assert first["model"] == best["model"], "seed 0's cell is the sweep run of the chosen rate"
    assert second["phases"][0]["learning_rate"] == summary["chosen"]
    assert "/sweep/plain_lr/" not in second["model"] and "/sweep/plain_lr/" in first["model"]
    notes = grid.read_notes(config)
    assert notes["validation_texts"]["product_title"] == 20 and "copy_baseline" in notes
