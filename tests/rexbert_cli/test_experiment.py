"""The experiment config (the main job as data), the product hold-out and the CLI wiring."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from curation.demo_data import is_heldout_product
from rexbert_cli.experiment import DEFAULT_CONFIG, ExperimentConfig, _domain_sources, load_experiment
from rexbert_cli.heldout import split_products
from rexbert_cli.main import build_parser, main
from rexbert_common.config import ConfigError


def test_embedded_default_loads_into_dataclasses():
    config = load_experiment(None)
    assert isinstance(config, ExperimentConfig)
    assert config.training.recipe == "training/recipes/demo.yaml" and config.training.anneal_on_curated
    assert config.evaluation.esci.folds == 2 and config.evaluation.mlm.block_sizes == [128]
    assert config.evaluation.products.mask_share == 0.15 and config.push_to is None


def test_unknown_field_is_named_with_its_path(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(DEFAULT_CONFIG.read_text().replace("max_pairs:", "max_pair:"))
    with pytest.raises(
        ConfigError, match=r"exp.yaml: unknown field evaluation.esci.max_pair -- did you mean .max_pairs.\?"
    ):
        load_experiment(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluation.esci.folds=1", "evaluation.esci.folds = 1 must be >= 2"),
        ("evaluation.products.mask_share=1.5", "evaluation.products.mask_share = 1.5 must be < 1"),
        ("evaluation.products.dtype=fp16", "evaluation.products.dtype = 'fp16' is not one of"),
        ("card.repo_id=noslash", "card.repo_id='noslash': expected 'owner/name'"),
        ("training.overrides.3=x", "training.overrides"),
    ],
)
def test_bad_values_are_one_line_exit_2(override, message, tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path / "out"), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("rexbert demo: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["experiment", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_heldout_products_never_reach_training(data_dir, tmp_path):
    split = split_products(data_dir, tmp_path)
    train = pq.read_table(split.icecat_train)["id"].to_pylist()
    heldout = pq.read_table(split.icecat_heldout)["id"].to_pylist()
    assert heldout and not set(train) & set(heldout)
    assert all(is_heldout_product(i) for i in heldout) and not any(is_heldout_product(i) for i in train)
    assert (
        len(train) + len(heldout)
        == pq.read_metadata(data_dir / "icecat_products_chorus/icecat_text.parquet").num_rows
    )
    esci = pq.read_table(split.esci_train).to_pandas()
    full = pq.read_table(data_dir / "esci_union_with_text/esci_union_with_text.parquet").to_pandas()
    test_products = set(full.loc[full["split"] == "test", "product_id"])
    assert len(esci) and not set(esci["product_id"]) & test_products
    # the curation input leaves the same products out
    from curation.demo_data import esci_pages, icecat_pages

    train_titles = set(pq.read_table(split.icecat_train)["title"].to_pylist())
    titles = (
        set(pq.read_table(split.icecat_heldout)["title"].to_pylist()) - train_titles
    )  # unique to held-out
    assert len(titles) > 100
    pages = "\n".join(icecat_pages(data_dir, 10_000))
    assert not any(f"\n{t}\n" in pages for t in titles)
    test_titles = set(full.loc[full["split"] == "test", "product_title"].dropna())
    assert not any(p.split("\n", 1)[0] in test_titles for p in esci_pages(data_dir, 10_000))


def test_recipe_sources_point_at_the_training_split(tmp_path, data_dir):
    import json

    from rexbert_cli.experiment import _recipe_path

    split = split_products(data_dir, tmp_path)
    recipe = _recipe_path("training/recipes/demo.yaml")
    phase1 = json.loads(_domain_sources(recipe, None, split).split("=", 1)[1])
    assert [s["path"] for s in phase1] == [str(split.icecat_train), str(split.esci_train)]
    phase3 = json.loads(_domain_sources(recipe, "/c/**/*.parquet", split).split("=", 1)[1])
    assert phase3[0]["name"] == "ecom_niverse" and phase3[1:] == phase1


def test_every_stage_is_a_subcommand():
    parser = build_parser()
    for argv in (
        ["curate", "--help"],
        ["train", "--help"],
        ["eval", "mlm", "--help"],
        ["card", "--help"],
        ["push", "--help"],
        ["experiment", "--help"],
        ["demo", "--help"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 0


def test_a_rerun_keeps_the_split_files_so_training_rows_stay_valid(data_dir, tmp_path):
    """The training rows' fingerprint includes their source files' modification times: a rerun of the demo
    must not rewrite unchanged splits (it would rebuild every phase's rows on every resume)."""
    split = split_products(data_dir, tmp_path)
    paths = (split.icecat_train, split.esci_train, split.icecat_heldout)
    before = [p.stat().st_mtime_ns for p in paths]
    split_products(data_dir, tmp_path)
    assert [p.stat().st_mtime_ns for p in paths] == before
