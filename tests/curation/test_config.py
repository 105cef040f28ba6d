import pytest

from curation.config import ConfigError, config_from_dict, load_config


def test_default_config_loads_and_mirrors_table1():
    config = load_config()
    assert config.input.demo
    assert "hobby" in config.domains.filter_required and "fashion" in config.domains.directly_selected
    assert config.cleaning.dedup.bands * config.cleaning.dedup.rows == 100


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match=r"cleaning\.dedup: unknown key\(s\) \['bandz'\]"):
        config_from_dict({"input": {"demo": True}, "cleaning": {"dedup": {"bandz": 3}}})


@pytest.mark.parametrize(
    "data, field",
    [
        ({"input": {"demo": True}, "labeler": {"kind": "gpt"}}, "labeler.kind"),
        ({"input": {"demo": True}, "classifier": {"kfold": 1}}, "classifier.kfold"),
        ({"input": {"sources": []}}, "input.sources"),
        (
            {
                "input": {"demo": True},
                "domains": {"filter_required": ["news"], "directly_selected": ["news"]},
            },
            "domains",
        ),
    ],
)
def test_invalid_values_are_rejected_with_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(data)


def test_overrides_and_env_expansion(monkeypatch):
    monkeypatch.setenv("REXBERT_TEST_DIR", "/tmp/somewhere")
    config = load_config(None, {"output.dir": "${REXBERT_TEST_DIR}/out", "sampling.per_domain": 7})
    assert config.output.dir == "/tmp/somewhere/out"
    assert config.sampling.per_domain == 7
