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
