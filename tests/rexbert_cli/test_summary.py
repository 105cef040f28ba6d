"""SUMMARY.md says where every artefact is and shows the unseen-product figures."""

from __future__ import annotations

from rexbert_cli.experiment import load_experiment
from rexbert_cli.summary import write_json, write_summary


def test_summary_lists_artefacts_scores_and_fill_mask(tmp_path):
    config = load_experiment(None, [f"output_dir={tmp_path}"])
    unseen = write_json(
        tmp_path / "eval" / "unseen_products.json",
        {
            "heldout_file": "data/icecat_heldout.parquet",
            "protocol": {
                "max_length": 128,
                "mask_share": 0.15,
                "one_mask_per_row": True,
                "precision": {"precision": "bf16", "reason": "auto: ..."},
            },
            "scores": {
                "phase 1 (general)": {"accuracy": 0.31, "masked_tokens": 900, "texts": 50},
                "phase 3 (annealed)": {"accuracy": 0.42, "masked_tokens": 900, "texts": 50},
            },
            "fill_mask": {
                "prompts": ["HP 305 ink [MASK] black"],
                "answers": {
                    "phase 1 (general)": [[("cartridge", 0.4), ("toner", 0.2)]],
                    "phase 3 (annealed)": [[("cartridge", 0.7), ("|", 0.1)]],
                },
            },
        },
    )
    models = {"phase 1 (general)": str(tmp_path / "p1"), "phase 3 (annealed)": str(tmp_path / "p3")}
    plots = {"loss curves": tmp_path / "plots" / "loss_curves.png"}
    text = write_summary(
        tmp_path, config, {"curate": 61.2, "train": 300.4}, models, [], unseen, plots
    ).read_text()
    for path in (
        tmp_path / "p1",
        tmp_path / "p3",
        tmp_path / "p3" / "README.md",
        tmp_path / "curation" / "dataset",
        plots["loss curves"],
        tmp_path / "eval",
    ):
        assert f"`{path}`" in text
    assert "top-1 = the model's first guess is the original token. Computed in bf16." in text
    assert "| phase 1 (general) | **31.0%** | 900 | 50 |" in text
    assert "| phase 3 (annealed) | **42.0%** | 900 | 50 |" in text
    assert (
        "| HP 305 ink [MASK] black | `cartridge` 0.40, `toner` 0.20 | `cartridge` 0.70, `\\|` 0.10 |" in text
    )
    assert "| **total** | **362** |" in text and "load average" in text
