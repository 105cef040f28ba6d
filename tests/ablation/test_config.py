from pathlib import Path

import pytest

from ablation.config import AblationConfig, BudgetConfig, VariantConfig, load_ablation
from rexbert_common.config import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def test_shipped_studies_load_with_the_four_arms():
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        config = load_ablation(path)
        names = [arm.name for arm in config.arms()]
        assert names[:4] == ["a_phases12", "b_anneal", "c_guided", "d_plain_mlm"], path
        assert sum(config.budget.phase_tokens()) == config.budget.tokens


def test_phase_tokens_split_the_budget_exactly():
    assert BudgetConfig(tokens=1001, phase1=0.5, phase2=0.25).phase_tokens() == (500, 250, 251)


def test_sweep_adds_arms_and_drops_duplicates_of_existing_ones():
    config = AblationConfig(
        name="x",
        variants=[VariantConfig("b", guided_fraction=0.0), VariantConfig("c", guided_fraction=0.05)],
    )
    config.sweep.guided_fractions = [0.0, 0.05, 0.2]
    config.sweep.domain_shares = [0.5]
    arms = config.arms()
    assert [a.name for a in arms] == ["b", "c", "guided_20pct", "domain_50pct"]
    assert (arms[2].guided_fraction, arms[3].domain_end, arms[3].guided_fraction) == (0.2, 0.5, 0.05)


@pytest.mark.parametrize(
    "override, message",
    [
        ("budget.phse1=0.5", "unknown field budget.phse1 -- did you mean 'phase1'?"),
        ("budget.phase1=0.9", "budget.phase1 + budget.phase2 = 1.1 must leave phase 3 a share"),
        ("budget.tokens=0", "budget.tokens = 0 must be > 0"),
        ("seeds=[1, 1]", "seeds = [1, 1] repeats a seed"),
        ("variants.3.kind=hf", "variants.3.kind = 'hf' is not one of ['rexbert', 'hf_mlm']"),
        ("variants.0.guided_fraction=0.1", "variant 'a_phases12': guided_fraction / domain_end need anneal"),
        ("variants.1.name=a_phases12", "variant name 'a_phases12' is used by two different arms"),
        ("variants.1.name=b/x", "variant name 'b/x' must be letters"),
        ("reference=z", "reference = 'z' is not a variant"),
        ("evaluation.protocols=[span, word]", "evaluation.protocols = ['span', 'word'] must list distinct"),
    ],
)
def test_mistakes_are_one_line_naming_file_field_and_value(write_study, override, message):
    path = write_study()
    with pytest.raises(ConfigError) as error:
        load_ablation(path, [override])
    text = str(error.value)
    assert message in text and path in text and "\n" not in text
