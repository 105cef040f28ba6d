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


def _stsb_only_record():
    row = {
        **reports.result_row("stsb", "zero_shot-test", "spearman", 0.82, 1379),
        **reports.dataset_fields("sentence-transformers/stsb", "default", "test"),
    }
    return reports.make_record("esci_similarity", "minilm", {}, [row])


def test_report_of_stsb_only_results_does_not_crash(tmp_path, capsys):
    from rexbert_cli.main import main

    path = reports.write_results(tmp_path / "stsb.json", [_stsb_only_record()])
    assert main(["eval", "report", str(path), "--out", str(tmp_path / "report.md")]) == 0
    assert "0.8200" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_row_dataset_fields_round_trip_through_huggingface_hub_card_metadata():
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    row = _stsb_only_record()["results"][0]
    result = EvalResult(
        task_type="sentence-similarity",
        dataset_type=row["dataset_id"],
        dataset_name="STS Benchmark",
        dataset_config=row["dataset_config"],
        dataset_split=row["dataset_split"],
        metric_type="spearman",
        metric_value=row["value"],
    )
    card = ModelCard(f"---\n{ModelCardData(model_name='m', eval_results=[result]).to_yaml()}\n---\n# m\n")
    back = ModelCard(str(card)).data.eval_results[0]
    assert (back.dataset_type, back.dataset_config, back.dataset_split, back.metric_value) == (
        "sentence-transformers/stsb",
        "default",
        "test",
        0.82,
    )


def _glue_record(model, size, rows):
    from evaluation.glue import GlueConfig

    return reports.make_record("glue", model, GlueConfig(tasks=("sst2", "stsb"), size=size), rows)


def test_glue_table_puts_published_figures_in_their_own_labelled_columns():
    rows = [
        reports.result_row("sst2", "finetune", "accuracy", 0.5123, 872),
        reports.result_row("stsb", "finetune", "pearson", 0.3, 1500),
        reports.result_row("stsb", "finetune", "spearman", 0.25, 1500),
    ]
    table = reports.glue_table([_glue_record("RexBERT-micro", "micro", rows)])
    lines = table.splitlines()
    assert lines[0] == "| task | RexBERT-micro | RexBERT-micro (published) | ettin-17m (published) |"
    # RexBERT paper Table 4, micro columns; the measured value stays in the measured column
    assert "| sst2 (accuracy) | 51.23 | 90.37 | 88.42 |" in lines
    assert "| stsb (pearson) | 30.00 | – | – |" in lines
    assert "| stsb (correlation) | – | 83.00 | 82.62 |" in lines, "unspecified metric: own row"
    assert "Published: RexBERT paper (Bajaj & Garg), Table 4" in table
    assert "qnli" not in table, "only tasks that were measured"
    base = reports.glue_table([_glue_record("m", "base", rows)])
    assert "ModernBERT-base (published)" in base and "ettin-17m" not in base
    assert "| sst2 (accuracy) | 51.23 | 94.27 | 94.72 |" in base.splitlines()
    assert "(published)" not in reports.glue_table([_glue_record("m", "base", rows)], published=[])


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"schema": "rexbert-eval/1", "records": [', "not valid JSON"),
        ("[1, 2]", "expected a `rexbert eval` results object, got a JSON list"),
        ('{"schema": "rexbert-eval/1", "records": [{"kind": "glue"}]}', "not a `rexbert eval` results file"),
        ('{"schema": "other/2"}', "not a `rexbert eval` results file (schema='other/2'"),
    ],
)
def test_report_on_a_file_that_is_not_results_is_one_line_naming_it(tmp_path, capsys, text, expected):
    from rexbert_cli.main import main

    path = tmp_path / "results.json"
    path.write_text(text)
    assert main(["eval", "report", str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: {expected}" in err and err.count("\n") == 1
    assert not (tmp_path / "report.md").exists()
