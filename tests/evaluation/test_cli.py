import json
import re

import pytest

from rexbert_cli.main import build_parser, main


def test_eval_subcommands_registered():
    parser = build_parser()
    args = parser.parse_args(["eval", "mlm", "a", "b", "--block-sizes", "128,512", "--protocol", "word"])
    assert args.models == ["a", "b"] and args.block_sizes == (128, 512) and callable(args.func)
    assert parser.parse_args(["eval", "glue", "m", "--tasks", "sst2,stsb"]).tasks == ("sst2", "stsb")
    assert parser.parse_args(["eval", "esci", "m", "--task", "stsb", "--epochs", "0"]).epochs == 0.0


def test_eval_mlm_end_to_end(data_dir, tiny_bert_dir, tmp_path, capsys):
    code = main(
        [
            "eval",
            "mlm",
            str(tiny_bert_dir),
            "--fields",
            "title",
            "--block-sizes",
            "64",
            "--max-texts",
            "20",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    document = json.loads((tmp_path / "mlm.json").read_text())
    assert document["records"][0]["config"]["block_sizes"] == [64]
    table = (tmp_path / "mlm.md").read_text()
    assert "title span-truncate-64" in table and "| copy (baseline) | top1_accuracy |" in table
    assert document["records"][1]["config"]["baseline"] == "copy"
    assert main(["eval", "report", str(tmp_path / "mlm.json"), "--output-dir", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Masked-token recovery" in report and "copy (baseline)" in report
    old = tmp_path / "old" / "r.md"  # the old spelling, which named the file, still works
    assert main(["eval", "report", str(tmp_path / "mlm.json"), "--out", str(old)]) == 0
    assert old.read_text() == report
    argv = ["eval", "mlm", str(tiny_bert_dir), "--fields", "title", "--block-sizes", "64", "--max-texts", "9"]
    assert main([*argv, "--baselines", "none", "--output-dir", str(tmp_path / "plain"), "--no-progress"]) == 0
    assert "copy" not in (tmp_path / "plain" / "mlm.md").read_text()


def test_eval_esci_zero_shot_writes_chart(data_dir, tmp_path, capsys):
    """...and prints one line naming what it wrote, then the results table (nothing else without
    --verbose: no library INFO, no load reports)."""
    from evaluation.reports import markdown_report, read_results
    from tests.console import console_lines

    code = main(
        [
            "eval",
            "esci",
            "all-MiniLM-L6-v2",
            "--epochs",
            "0",
            "--folds",
            "2",
            "--max-pairs",
            "120",
            "--max-seq-length",
            "32",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    assert (tmp_path / "esci.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "esci.json").read_text())["records"][0]["kind"] == "esci_similarity"
    captured = capsys.readouterr()
    table = console_lines(markdown_report(read_results([tmp_path / "esci.json"])))
    assert console_lines(captured.out) == [f"wrote esci.json, esci.md, esci.png in {tmp_path}", *table]
    assert console_lines(captured.err) == []


def test_model_without_mlm_head_exits_2_with_one_line(data_dir, minilm_dir, tmp_path, capsys):
    code = main(
        ["eval", "mlm", str(minilm_dir), "--max-texts", "5", "--output-dir", str(tmp_path), "--no-progress"]
    )
    assert code == 2
    assert "has no trained MLM head" in capsys.readouterr().err
    assert not (tmp_path / "mlm.json").exists()


@pytest.mark.parametrize(
    ("make_model", "extra", "message"),
    [
        (lambda tmp: tmp / "missing", [], "missing: no such folder"),
        (lambda tmp: tmp, [], r"not a model folder \(no config.json"),
        (None, ["--block-sizes", "1024"], r"\[1024\] exceed the context of"),
        (None, ["--block-sizes", ""], r"block_sizes=\(\): expected one or more sizes"),
    ],
    ids=["missing-path", "not-a-model", "block-over-context", "no-block-sizes"],
)
def test_eval_mlm_bad_input_is_one_line_exit_2(
    data_dir, tiny_bert_dir, tmp_path, capsys, make_model, extra, message
):
    model = make_model(tmp_path) if make_model else tiny_bert_dir
    out = tmp_path / "out"
    code = main(
        ["eval", "mlm", str(model), "--max-texts", "5", "--output-dir", str(out), "--no-progress", *extra]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(message, err), err
    assert "Repo id" not in err and "sentencepiece" not in err
    assert not out.exists(), "nothing written on bad input"


def test_eval_esci_without_query_column_names_file_and_column(data_dir, tmp_path, capsys):
    import pandas as pd

    path = tmp_path / "no_query.parquet"
    pd.read_parquet(data_dir / "esci_union_with_text" / "esci_union_with_text.parquet").drop(
        columns="query"
    ).to_parquet(path)
    code = main(
        [
            "eval",
            "esci",
            "all-MiniLM-L6-v2",
            "--data",
            str(path),
            "--epochs",
            "0",
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no_query.parquet" in err and "missing column(s) ['query']" in err
    assert not (tmp_path / "o").exists()


def test_eval_similarity_is_the_general_name(data_dir):
    args = build_parser().parse_args(
        ["eval", "similarity", "m", "--task", "stsb", "--split", "test", "--seeds", "0,1"]
    )
    assert (args.task, args.split, args.seeds) == ("stsb", "test", (0, 1))


def test_eval_mteb_offline_tasks_write_records(data_dir, tiny_rexbert_dir, tmp_path):
    argv = ["eval", "mteb", str(tiny_rexbert_dir), "--trust-remote-code", "--max-seq-length", "32"]
    assert main([*argv, "--output-dir", str(tmp_path), "--no-progress"]) == 0
    (record,) = json.loads((tmp_path / "mteb.json").read_text())["records"]
    assert record["kind"] == "mteb" and record["config"]["tasks"] == ["STSBenchmark", "ESCIReranking"]
    rows = {(r["task"], r["metric"]): r for r in record["results"]}
    assert {"main_score", "ndcg_at_10", "map_at_1000", "mrr_at_1000"} <= {
        m for t, m in rows if t == "ESCIReranking"
    }
    assert rows[("ESCIReranking", "main_score")]["value"] == rows[("ESCIReranking", "map_at_1000")]["value"]
    assert (
        rows[("ESCIReranking", "ndcg_at_10")]["n"] == 101
        and rows[("STSBenchmark", "cosine_spearman")]["n"] == 1379
    )
    assert "dataset_id" not in rows[("ESCIReranking", "ndcg_at_10")], "local data is no Hub dataset"
    assert "## MTEB" in (tmp_path / "mteb.md").read_text()
    assert list((tmp_path / "mteb_results").rglob("ESCIReranking.json")), "MTEB's own result files kept"


def test_eval_mteb_task_without_local_data_is_one_line_exit_2(tiny_rexbert_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "mteb", str(tiny_rexbert_dir), "--tasks", "SciDocsRR", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert (
        code == 2
        and len(err.splitlines()) == 1
        and "['SciDocsRR'] cannot run offline" in err
        and "--hub" in err
    )
    assert not out.exists(), "nothing written on bad input"


@pytest.mark.parametrize(
    "dtype, speedup, expected",
    [("auto", 4.0, "bf16"), ("auto", 1.1, "fp32"), ("fp32", 4.0, "fp32"), ("bf16", 0.5, "bf16")],
)
def test_evaluators_run_under_the_chosen_precision_and_record_it(
    monkeypatch, tmp_path, dtype, speedup, expected
):
    """``--dtype auto`` follows the CPU probe (injected: native bf16, bf16 matmul ``speedup``x fp32)."""
    import torch

    import evaluation.mlm_recovery as mlm_recovery
    from evaluation import reports
    from rexbert_common import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(
        precision, "race_matmul", lambda device_type: precision.MatmulRace(1e11, speedup * 1e11)
    )
    seen = []

    def fake_run_mlm(models, cfg, *args):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return [reports.make_record("mlm_recovery", "m", cfg, [])]

    monkeypatch.setattr(mlm_recovery, "run_mlm", fake_run_mlm)
    assert main(["eval", "mlm", "m", "--dtype", dtype, "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen == [torch.bfloat16 if expected == "bf16" else torch.float32]
    record = json.loads((tmp_path / "mlm.json").read_text())["records"][0]
    assert record["config"]["precision"]["precision"] == expected
