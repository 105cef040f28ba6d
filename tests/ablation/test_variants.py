from dataclasses import asdict

import pytest

from ablation.config import VariantConfig, load_ablation
from ablation.heldout import split_study_data
from ablation.variants import arm_recipe, overall_domain_share, study_recipe


@pytest.fixture(scope="module")
def split(data_dir, tmp_path_factory):
    return split_study_data(data_dir, tmp_path_factory.mktemp("split"), general_share=8, min_chars=200)


@pytest.fixture
def recipe(write_study, split):
    return study_recipe(load_ablation(write_study()), split, None)


def _arms(recipe, seed=3):
    variants = [
        VariantConfig("a", anneal=False),
        VariantConfig("b"),
        VariantConfig("c", guided_fraction=0.05),
        VariantConfig("e", guided_fraction=0.2, domain_end=0.5),
    ]
    return {v.name: arm_recipe(recipe, v, seed, f"out/{v.name}") for v in variants}


def test_arms_of_a_seed_share_phases_1_2_so_one_trunk_serves_them(recipe):
    arms = list(_arms(recipe).values())
    for arm in arms[1:]:
        for part in ("phase1", "phase2", "data", "model", "tokenizer", "trainer"):
            assert asdict(getattr(arm, part)) == asdict(getattr(arms[0], part)), part
        assert arm.seed == arms[0].seed == 3 and arm.data.seed == 3


def test_arms_differ_only_in_phase_3_as_specified(recipe):
    arms = _arms(recipe)
    base3, base2 = recipe.phase3, recipe.phase2
    a, b, c, e = (arms[k].phase3 for k in "abce")
    # (a) no annealing: phase 2's mixture and masking continue; same tokens and LR schedule as the others
    assert (a.mixture.domain_start, a.mixture.domain_end) == (base2.mixture.domain_end,) * 2
    assert a.masking == base2.masking
    # (b) annealing toward the domain with phase 3's masking, no Guided MLM; (c) + Guided MLM
    assert asdict(b.mixture) == asdict(base3.mixture) and base3.mixture.domain_end > base2.mixture.domain_end
    assert b.masking.mlm_probability == base3.masking.mlm_probability and b.masking.guided_fraction == 0
    assert c.masking.guided_fraction == 0.05 and e.masking.guided_fraction == 0.2
    assert e.mixture.domain_end == 0.5
    for arm in (a, b, c, e):
        assert (arm.tokens, arm.lr, arm.decay_fraction, arm.max_seq_len) == (
            base3.tokens,
            base3.lr,
            base3.decay_fraction,
            base3.max_seq_len,
        )


def test_study_recipe_splits_the_budget_over_phases(recipe, write_study):
    config = load_ablation(write_study())
    assert [recipe.phase(p).tokens for p in ("phase1", "phase2", "phase3")] == [6000, 2400, 3600]
    assert sum(recipe.phase(p).tokens for p in ("phase1", "phase2", "phase3")) == config.budget.tokens


def test_overall_domain_share_is_token_weighted(recipe):
    # tiny recipe: 0.1 (6000 tokens), 0.1 (2400), 0.2 -> 0.9 linear (3600): (600 + 240 + 0.55 * 3600) / 12000
    assert overall_domain_share(recipe) == pytest.approx((600 + 240 + 0.55 * 3600) / 12000)
