from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from rexbert_common import ConfigError, UserError, checked, config_from_dict, load_config
from rexbert_common.config import apply_overrides


@dataclass
class Inner:
    rate: float = checked(0.5, ge=0, le=1)
    betas: list[float] = checked(default_factory=lambda: [0.9, 0.98], gt=0, lt=1)


@dataclass
class Outer:
    name: str
    batch: int = checked(8, ge=1)
    shape: str = checked("1-sqrt", choices=("1-sqrt", "linear"))
    path: str | None = None
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch == 7:
            raise ValueError("batch must not be 7")


def build(data: dict) -> Outer:
    return config_from_dict(Outer, data, "cfg.yaml")


def test_valid_mapping_builds_nested_dataclasses_and_coerces_numbers():
    cfg = build({"name": "x", "batch": "16", "inner": {"rate": "1e-1"}, "items": [{"rate": 1}]})
    assert cfg.batch == 16 and cfg.inner.rate == pytest.approx(0.1) and cfg.items[0].rate == 1.0
    assert cfg.inner.betas == [0.9, 0.98]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "bach": 3}, "cfg.yaml: unknown field bach -- did you mean 'batch'?"),
        ({"name": "x", "batch": 0}, "cfg.yaml: batch = 0 must be >= 1"),
        ({"name": "x", "batch": 2.5}, "cfg.yaml: batch must be an integer, got 2.5"),
        ({"name": "x", "batch": "lots"}, "cfg.yaml: batch must be an integer, got 'lots'"),
        (
            {"name": "x", "shape": "linaer"},
            "cfg.yaml: shape = 'linaer' is not one of ['1-sqrt', 'linear'] -- did you mean 'linear'?",
        ),
        ({"name": "x", "inner": {"rate": 2}}, "cfg.yaml: inner.rate = 2.0 must be <= 1"),
        ({"name": "x", "inner": {"betas": [0.9, 1.0]}}, "cfg.yaml: inner.betas = 1.0 must be < 1"),
        ({"name": "x", "items": [{}, {"rate": -1}]}, "cfg.yaml: items.1.rate = -1.0 must be >= 0"),
        ({"name": "x", "inner": 3}, "cfg.yaml: inner must be a mapping, got 3"),
        ({"batch": 3}, "cfg.yaml: missing required field name"),
        ({"name": "x", "batch": 7}, "cfg.yaml: Outer: batch must not be 7"),
        ({"name": "x", "batch": None}, "cfg.yaml: batch must not be empty"),
    ],
)
def test_every_invalid_value_is_one_config_error_naming_file_field_and_value(data, message):
    with pytest.raises(ConfigError) as info:
        build(data)
    assert str(info.value) == message
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


def test_environment_variables_expand_and_unset_ones_are_named(monkeypatch):
    monkeypatch.setenv("REXBERT_TEST_ROOT", "/data")
    assert build({"name": "x", "path": "${REXBERT_TEST_ROOT}/a"}).path == "/data/a"
    monkeypatch.delenv("REXBERT_TEST_ROOT")
    with pytest.raises(ConfigError, match=r"path references \$\{REXBERT_TEST_ROOT\}, an unset"):
        build({"name": "x", "path": "${REXBERT_TEST_ROOT}/a"})


def test_overrides_set_nested_and_list_fields_and_reject_bad_indexes():
    data = {"name": "x", "items": [{"rate": 0.1}]}
    apply_overrides(data, ["batch=4", "inner.rate=0.25", "items.0.rate=0.5"])
    cfg = build(data)
    assert (cfg.batch, cfg.inner.rate, cfg.items[0].rate) == (4, 0.25, 0.5)
    with pytest.raises(ConfigError, match=r"--set items\.3\.rate: items\.3 is not an index of a 1-item list"):
        apply_overrides(data, ["items.3.rate=1"])
    with pytest.raises(ConfigError, match="must look like field.path=value"):
        apply_overrides(data, ["batch"])
    with pytest.raises(ConfigError, match=r"--set name\.first: name is not a mapping"):
        apply_overrides(data, ["name.first=1"])


def test_load_config_reports_missing_files_bad_yaml_and_non_mappings(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml", Outer)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbatch: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML \(line \d+, column \d+\)"):
        load_config(bad, Outer)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping of fields, got list"):
        load_config(listed, Outer)


def test_load_config_runs_the_cross_field_validator_with_the_source(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: x\nbatch: 4\n")

    def validate(cfg: Outer, source: str) -> None:
        if cfg.batch % 3:
            raise ConfigError(f"{source}: batch ({cfg.batch}) must be a multiple of 3")

    with pytest.raises(ConfigError, match=r"ok\.yaml: batch \(4\) must be a multiple of 3"):
        load_config(path, Outer, validate=validate)
    assert load_config(path, Outer, overrides=["batch=6"], validate=validate).batch == 6


def test_override_config_checks_set_values_like_a_config_file():
    """--set on a config built from command-line options: YAML values, tuples kept tuples, the field
    checks and the dataclass's own validation as one-line ConfigErrors."""
    import dataclasses

    from rexbert_common.config import ConfigError, override_config

    @dataclasses.dataclass
    class Settings:
        sizes: tuple[int, ...] = (128, 256)
        betas: tuple[float, float] = (0.9, 0.98)
        rate: float = 0.15

        def __post_init__(self):
            if not 0 < self.rate < 1:
                raise ValueError(f"rate={self.rate}: must be in (0, 1)")

    base = Settings()
    assert override_config(base, []) is base
    assert override_config(base, ["sizes=[64]", "betas=[0.8, 0.9]"]) == Settings((64,), (0.8, 0.9), 0.15)
    for overrides, message in (
        (["sizes=7"], "sizes must be a list"),
        (["betas=[0.9]"], "betas must be a list of 2"),
        (["rate=2"], "rate=2.0: must be in (0, 1)"),
        (["rat=0.2"], "did you mean 'rate'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            override_config(base, overrides)
