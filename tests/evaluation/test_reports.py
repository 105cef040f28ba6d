import json

import pytest

from evaluation import reports
from evaluation.mlm_recovery import MLMRecoveryConfig


def _record(kind, model, rows):
    return reports.make_record(kind, model, MLMRecoveryConfig(), rows)


def test_write_read_roundtrip_and_validation(tmp_path):
    rows = [reports.result_row("mlm_title", "block128", "top1_accuracy", 0.5, 100)]
    path = reports.write_results(tmp_path / "r.json", [_record("mlm_recovery", "m", rows)])
    document = json.loads(path.read_text())
    assert document["schema"] == reports.SCHEMA
    assert document["records"][0]["config"]["block_sizes"] == [128, 256, 512]
    assert reports.read_results([path])[0]["results"] == rows
    assert not list(tmp_path.glob(".*tmp")), "no temp file left behind"
    with pytest.raises(ValueError, match=r"records\[0\].results\[0\]: missing field 'sd'"):
        reports.validate(
            {
                "schema": reports.SCHEMA,
                "records": [
                    {
                        **_record("glue", "m", []),
                        "results": [
                            {"task": "x", "setting": "y", "metric": "z", "value": 1, "n": 1, "runs": []}
                        ],
                    }
                ],
            }
        )
    with pytest.raises(ValueError, match="kind"):
        reports.make_record("ner", "m", {}, [])


def test_tables_and_chart(tmp_path):
    records = [
        _record(
            "mlm_recovery",
            name,
            [
                reports.result_row(f"mlm_{f}", f"block{b}", f"top{k}_accuracy", v, 10)
                for f in ("title", "description")
                for b in (128, 512)
                for k in (1, 5)
            ],
        )
        for name, v in (("rex", 0.7), ("modern", 0.6))
    ]
    table = reports.mlm_table(records)
    lines = table.splitlines()
    assert lines[0] == (
        "| model | metric | title block128 | title block512 | description block128 | description block512 |"
    ), "old results files (setting = block<N>) still read"
    assert "| rex | top1_accuracy | 70.00 | 70.00 | 70.00 | 70.00 |" in lines
    glue = [
        _record(
            "glue",
            "rex",
            [reports.result_row("sst2", "finetune", "accuracy", 0.9, 872, [0.89, 0.91], 0.01414)],
        )
    ]
    assert "| sst2 (accuracy) | 90.00 ± 1.41 |" in reports.glue_table(glue)
    sim = [
        _record(
            "esci_similarity", m, [reports.result_row("esci", "cosent", "spearman", v, 1281, [v, v], 0.0)]
        )
        for m, v in (("rex-mini", 0.55), ("minilm", 0.5))
    ]
    assert "0.5500 ± 0.0000" in reports.similarity_table(sim)
    png = reports.similarity_bar_chart(sim, tmp_path / "fig4.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = reports.markdown_report(records + glue + sim)
    assert report.count("## ") == 3
