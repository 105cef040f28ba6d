import pytest

from curation.config import ConfigError, config_from_dict, load_config


def test_default_config_loads_with_finewebs_minhash_settings():
    config = load_config()
    assert config.input.demo and config.cleaning.boilerplate.enabled
    assert "hobby" in config.domains.filter_required and "fashion" in config.domains.directly_selected
    dedup = config.cleaning.dedup
    assert (dedup.n_grams, dedup.buckets, dedup.hashes_per_bucket) == (5, 14, 8)


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match=r"unknown field cleaning\.dedup\.bandz"):
        config_from_dict({"input": {"demo": True}, "cleaning": {"dedup": {"bandz": 3}}})


@pytest.mark.parametrize(
    "data, field",
    [
        ({"input": {"demo": True}, "labeler": {"kind": "gpt"}}, "labeler.kind"),
        ({"input": {"demo": True}, "classifier": {"kfold": 1}}, "classifier.kfold"),
        ({"input": {"demo": True}, "executor": {"kind": "spark"}}, "executor.kind"),
        ({"input": {"sources": [{"path": "x", "format": "csv"}]}}, "input.sources.0.format"),
        ({"input": {"sources": []}}, "input.sources is empty"),
        (
            {
                "input": {"demo": True},
                "domains": {"filter_required": ["news"], "directly_selected": ["news"]},
            },
            "both filter_required and directly_selected",
        ),
        ({"input": {"demo": True}, "audit": {"labeler": {}}}, "audit.labeler is the primary labeler"),
    ],
)
def test_invalid_values_are_rejected_with_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(data)


def test_overrides_and_env_expansion(monkeypatch):
    monkeypatch.setenv("REXBERT_TEST_DIR", "/tmp/somewhere")
    config = load_config(
        None, ["output.dir=${REXBERT_TEST_DIR}/out", "sampling.per_domain=7", "executor.tasks=3"]
    )
    assert config.output.dir == "/tmp/somewhere/out"
    assert (config.sampling.per_domain, config.executor.tasks) == (7, 3)


def test_a_bad_override_fails_at_load_before_anything_is_written(tmp_path):
    import argparse

    from curation.cli import register

    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    out = tmp_path / "out"
    args = subparsers.choices["curate"].parse_args(
        ["--output-dir", str(out), "--set", "sampling.per_domain=lots"]
    )
    with pytest.raises(ConfigError, match=r"sampling\.per_domain must be an integer, got 'lots'"):
        args.func(args)
    assert not out.exists()
