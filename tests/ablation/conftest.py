"""A tiny study: the shrunken tiny recipe of the training tests, a few thousand tokens per cell."""

from __future__ import annotations

import pytest
import yaml

from tests.training._tiny import RECIPE, TINY_OVERRIDES

TINY_STUDY = {
    "name": "tiny_study",
    "recipe": RECIPE,
    "recipe_overrides": TINY_OVERRIDES,
    "seeds": [0, 1],
    "budget": {"tokens": 12000, "phase1": 0.5, "phase2": 0.2, "tolerance": 0.1},
    "variants": [
        {"name": "a_phases12", "anneal": False},
        {"name": "b_anneal"},
        {"name": "c_guided", "guided_fraction": 0.2},
        {"name": "d_plain_mlm", "kind": "hf_mlm"},
    ],
    "evaluation": {"max_texts": 30, "entity_max_texts": 30, "esci": None},
    "baseline": {"lr_sweep": []},  # the sweep has its own tests (test_sweep.py)
}


@pytest.fixture
def write_study(tmp_path):
    """``write_study(**fields)``: the tiny study (fields replaced) as a YAML file; output under tmp_path."""

    def write(**fields) -> str:
        study = {**TINY_STUDY, "output_dir": str(tmp_path / "out"), **fields}
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(study), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def fake_cells(monkeypatch):
    """run_cell replaced by a recorder that writes a result (the grid logic without training)."""
    import ablation.grid as grid

    trained = []

    def fake_run_cell(study, cell):
        trained.append((cell.variant.name, cell.seed))
        result = {"variant": cell.variant.name, "seed": cell.seed, "tokens": {"consumed": 1}, "seconds": {}}
        grid.write_json_atomic(cell.result_path(study.config.output_dir), result)
        return result

    monkeypatch.setattr(grid.Study, "prepare", classmethod(lambda cls, config: cls(config, *[None] * 4)))
    monkeypatch.setattr(grid, "run_cell", fake_run_cell)
    return trained
