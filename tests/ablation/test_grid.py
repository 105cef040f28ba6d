"""The grid resumes without retraining finished cells, splits into shards, and trains equal budgets."""

import json
import shutil

import pytest

import ablation.grid as grid
from ablation.config import load_ablation
from rexbert_common.errors import UserError


def test_rerun_trains_only_unfinished_cells(write_study, fake_cells):
    config = load_ablation(write_study())
    everything = [(v.name, s) for s in config.seeds for v in config.arms()]
    assert len(grid.run_grid(config, log=lambda _: None)) == len(everything)
    assert fake_cells == everything
    fake_cells.clear()
    grid.run_grid(config, log=lambda _: None)
    assert fake_cells == []
    grid.Cell(config.arms()[1], 1).result_path(config.output_dir).unlink()
    results = grid.run_grid(config, log=lambda _: None)
    assert fake_cells == [("b_anneal", 1)] and len(results) == len(everything)


def test_shards_split_the_seeds(write_study, fake_cells):
    config = load_ablation(write_study(seeds=[0, 1, 2]))
    done = grid.run_grid(config, log=lambda _: None, shard=(1, 2))
    assert {seed for _, seed in fake_cells} == {1} and len(done) == 4
    grid.run_grid(config, log=lambda _: None, shard=(0, 2))
    assert sorted(fake_cells) == sorted((v.name, s) for s in (0, 1, 2) for v in config.arms())


def test_a_cell_off_budget_is_refused(write_study):
    budget = load_ablation(write_study()).budget  # 12,000 tokens, tolerance 10%
    cell = grid.Cell(load_ablation(write_study()).arms()[0], 0)
    grid.check_budget(cell, 11_000, budget)
    with pytest.raises(UserError, match="a_phases12 seed 0 trained 10500 tokens for a budget of 12000"):
        grid.check_budget(cell, 10_500, budget)


def _metrics(config, variant, seed):
    cell = next(c for c in grid.cells(config) if c.variant.name == variant and c.seed == seed)
    return json.loads(cell.result_path(config.output_dir).read_text())["metrics"]


@pytest.mark.slow  # a real tiny study: 4 cells, then two retrained, then one interrupted and resumed
def test_real_grid_equal_budgets_resume_and_reproduce(write_study, monkeypatch):
    config = load_ablation(
        write_study(variants=[{"name": "b_anneal"}, {"name": "d_plain_mlm", "kind": "hf_mlm"}])
    )
    results = grid.run_grid(config, log=lambda _: None)
    # equal budgets, counted as consumed: the rows each trainer reports it trained / the Trainer's own count
    budget = config.budget.tokens
    for result in results:
        consumed = result["tokens"]["consumed"]
        assert abs(consumed - budget) <= config.budget.tolerance * budget
        assert consumed == sum(p["tokens"] for p in result["phases"])
    metrics = results[0]["metrics"]
    for key in ("product_title_span_top1", "general_collator_top5", "entity_top1", "final_train_loss"):
        assert metrics[key] > 0, key
    first = {(r["variant"], r["seed"]): r["metrics"] for r in results}
    stamps = {
        (c.variant.name, c.seed): c.result_path(config.output_dir).stat().st_mtime_ns
        for c in grid.cells(config)
    }

    # delete two cells (and seed 1's trunk): a rerun retrains exactly them and reproduces their numbers
    trained = []
    real_train_cell = grid.train_cell
    monkeypatch.setattr(
        grid, "train_cell", lambda s, c: trained.append((c.variant.name, c.seed)) or real_train_cell(s, c)
    )
    out = config.output_dir
    for variant, seed in (("b_anneal", 1), ("d_plain_mlm", 0)):
        shutil.rmtree(f"{out}/cells/{variant}/seed{seed}")
    shutil.rmtree(f"{out}/trunks/seed1")
    grid.run_grid(config, log=lambda _: None)
    assert sorted(trained) == [("b_anneal", 1), ("d_plain_mlm", 0)]
    for cell in grid.cells(config):
        if (cell.variant.name, cell.seed) not in trained:
            assert cell.result_path(out).stat().st_mtime_ns == stamps[cell.variant.name, cell.seed]
    for key in trained:
        assert _metrics(config, *key) == first[key]

    # an interrupted phase 3 resumes from its checkpoint and gives the uninterrupted numbers
    import training.curriculum

    real_run_phase = training.curriculum.run_phase

    def interrupted(*args, **kwargs):
        return real_run_phase(*args[:5], stop_after_steps=3, allow_fresh_optimizer=False)

    shutil.rmtree(f"{out}/cells/b_anneal/seed0")
    monkeypatch.setattr(training.curriculum, "run_phase", interrupted)
    with pytest.raises(RuntimeError, match="phase 3 stopped before its last step"):
        grid.run_grid(config, log=lambda _: None)
    assert not grid.Cell(config.arms()[0], 0).result_path(out).exists()
    assert list((grid.Cell(config.arms()[0], 0).folder(out) / "train" / "phase3").glob("checkpoint-*"))
    monkeypatch.setattr(training.curriculum, "run_phase", real_run_phase)
    grid.run_grid(config, log=lambda _: None)
    assert _metrics(config, "b_anneal", 0) == first[("b_anneal", 0)]
