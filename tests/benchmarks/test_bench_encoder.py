"""Smoke tests for the encoder benchmark and its shared helpers (tiny configs, seconds)."""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks import _common
from benchmarks import bench_encoder as be


def test_interleaved_timings_alternates_order():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = _common.interleaved_timings(fns, repeats=4, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}


def test_interleaved_timings_measures_time():
    times = _common.interleaved_timings({"sleep": lambda: time.sleep(0.02)}, repeats=3, warmup=0)
    assert 0.015 < _common.median(times["sleep"]) < 0.5


def test_peak_rss_delta_sees_a_transient_torch_allocation():
    def allocate() -> None:
        x = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, freed before fn returns
        del x

    assert 55 < _common.peak_rss_delta_mib(allocate) < 200
    assert _common.peak_rss_delta_mib(lambda: None) < 20


def test_markdown_table():
    table = _common.markdown_table(["a", "b"], [[1, 0.12345], ["x", "y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| x | y |"]


def test_esci_texts_and_mixed_batch(data_dir):
    texts = _common.esci_product_texts(data_dir)
    assert len(texts) > 100 and all(t.strip() for t in texts)
    tok = _common.bert_tokenizer()
    batch = be.mixed_length_batch(tok, n=16, max_len=256)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape == (16, int(lengths.max()))
    assert int(lengths.min()) <= 20 and int(lengths.max()) == 256
    assert float(lengths.float().std()) > 50  # spread, not one bucket


def test_packed_mlm_batch_masks_30_percent(data_dir):
    tok = _common.bert_tokenizer()
    batch = be.packed_mlm_batch(tok, rows=2, seq=128)
    labelled = batch["labels"] != -100
    assert batch["input_ids"].shape == (2, 128)
    assert 0.2 < float(labelled.float().mean()) < 0.4
    assert bool((batch["input_ids"][labelled] == tok.mask_token_id).all())


TINY = [
    "--sizes",
    "tiny",
    "--repeats",
    "1",
    "--max-len",
    "128",
    "--batch-texts",
    "8",
    "--mlm-batch",
    "2",
    "--threads",
    "1",
]


def _tiny_rows(out: str) -> list[str]:
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert rows and all("modernbert" in r or "rexbert" in r for r in rows)
    return rows


def test_bench_encoder_forward_and_mlm_on_tiny_config(data_dir, capsys):
    assert be.main([*TINY, "--scenarios", "forward,mlm"]) == 0
    out = capsys.readouterr().out
    assert "Forward, mixed-length" in out and "MLM forward+backward" in out
    rows = _tiny_rows(out)
    assert any("| 8x128 |" in r for r in rows) and any("| 2x128 |" in r for r in rows)


def test_memory_worker_measures_a_forward(tmp_path):
    folder = be.make_checkpoint("tiny", _common.bert_tokenizer(), tmp_path)
    res = be.memory_worker("modernbert", folder, seq=256)
    assert res["impl"] == "modernbert" and res["seq"] == 256
    assert res["peak_mib"] > 0 and res["seconds"] > 0


@pytest.mark.slow
def test_bench_encoder_all_scenarios_in_subprocesses(data_dir, capsys):
    assert be.main([*TINY, "--memory-seqs", "128"]) == 0
    out = capsys.readouterr().out
    assert "Peak RSS" in out
    assert any("| 128 |" in r for r in _tiny_rows(out))


def test_unknown_size_is_rejected():
    with pytest.raises(SystemExit, match="unknown size 'huge'"):
        be.main(["--sizes", "huge"])


def test_packing_contract_gives_rexbert_the_padded_batch_loss(data_dir):
    """The MLM scenario feeds RexBERT the training contract: same tokens, same targets, same loss."""
    from modeling_rexbert import RexBertForMaskedLM
    from modeling_rexbert.validation import check_packed_inputs
    from tests.modeling_rexbert.conftest import tiny_config

    tok = _common.bert_tokenizer()
    padded = be.padded_mlm_batch(tok, rows=3, seq=64)
    packed = be.packing_contract(padded)
    check_packed_inputs(**packed, vocab_size=tok.vocab_size)
    assert packed["input_ids"].shape[1] == int(padded["attention_mask"].sum())
    model = RexBertForMaskedLM(tiny_config(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id))
    with torch.no_grad():
        torch.testing.assert_close(model(**packed).loss, model(**padded).loss, atol=1e-5, rtol=0)


def test_baseline_revision_loads_beside_todays_encoder_and_computes_the_same(tmp_path):
    """`--baseline REV` imports the encoder as of a commit next to today's: same weights, same outputs.
    HEAD~3 rather than a fixed hash keeps the test valid in any clone with a little history."""
    folder = be.make_checkpoint("tiny", _common.bert_tokenizer(), tmp_path)
    before = be.load_model("rexbert@HEAD~3", folder, mlm=False).eval()
    now = be.load_model("rexbert", folder, mlm=False).eval()
    assert type(before).__module__ != type(now).__module__
    ids = torch.randint(1000, 20_000, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    with torch.no_grad():
        torch.testing.assert_close(
            before(input_ids=ids, attention_mask=mask).last_hidden_state,
            now(input_ids=ids, attention_mask=mask).last_hidden_state,
            atol=1e-5,
            rtol=0,
        )


def test_forward_with_onnx_times_int8_and_bf16_rows_against_fp32(data_dir, capsys, monkeypatch):
    """``--onnx`` adds the fp32 graph and its dynamic int8 quantization; a CPU that computes bf16 natively
    and faster (injected) adds RexBERT under bf16 autocast; every row carries its max abs difference vs
    the fp32 ModernBERT output, and the verdict compares the fastest RexBERT with the fastest ORT row."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(be, "bf16_forward_available", lambda: None)
    assert be.main([*TINY, "--scenarios", "forward", "--onnx"]) == 0
    out = capsys.readouterr().out
    rows = {r.split("|")[2].strip(): r.split("|") for r in out.splitlines() if r.startswith("| tiny")}
    assert set(rows) == {"modernbert", "rexbert", "onnxruntime", "onnxruntime-int8", "rexbert-bf16"}
    diff = {impl: cells[8].strip() for impl, cells in rows.items()}
    assert diff["modernbert"] == "-"
    assert float(diff["rexbert"]) < 1e-4 and float(diff["onnxruntime"]) < 1e-4  # fp32: summation order only
    for fp32, low in (("rexbert", "rexbert-bf16"), ("onnxruntime", "onnxruntime-int8")):
        assert float(diff[fp32]) < float(diff[low]) < 0.5, diff  # really ran in low precision, stayed close
    assert "tiny: fastest RexBERT (" in out and "the fastest ONNX Runtime (" in out


def test_the_bf16_row_computes_in_bf16_with_fp32_weights(tmp_path):
    folder = be.make_checkpoint("tiny", _common.bert_tokenizer(), tmp_path)
    model = be.load_model("rexbert-bf16", folder, mlm=False).eval()
    seen = set()
    model.model.layers[0].attn.Wqkv.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    ids = torch.randint(1000, 20_000, (2, 16))
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert seen == {torch.bfloat16} and {p.dtype for p in model.parameters()} == {torch.float32}


def test_no_bf16_row_where_auto_precision_is_fp32(data_dir, capsys, monkeypatch):
    from rexbert_common import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # an AVX2 CPU
    assert be.main([*TINY, "--scenarios", "forward"]) == 0
    captured = capsys.readouterr()
    assert "rexbert-bf16" not in captured.out and "no rexbert-bf16 row (auto: CPU" in captured.err


def test_serving_verdict_takes_the_fastest_row_of_each_side():
    rows = [
        ["micro", "modernbert", "32x512", 8352, "1.0", "8,000", "1.00x", "-"],
        ["micro", "rexbert", "32x512", 8352, "0.5", "16,000", "2.00x", "9.5e-07"],
        ["micro", "rexbert-bf16", "32x512", 8352, "0.25", "33,000", "4.00x", "5.0e-02"],
        ["micro", "onnxruntime", "32x512", 8352, "1.2", "7,000", "0.83x", "9.5e-07"],
        ["micro", "onnxruntime-int8", "32x512", 8352, "0.9", "9,300", "1.11x", "8.0e-02"],
    ]
    (line,) = be.serving_verdict(rows)
    assert line.startswith("micro: fastest RexBERT (rexbert-bf16, 33,000 real tok/s, max abs diff 5.0e-02)")
    assert (
        "**3.55x** the fastest ONNX Runtime (onnxruntime-int8, 9,300 real tok/s, max abs diff 8.0e-02)"
        in line
    )
    assert be.serving_verdict(rows[:3]) == []  # no ONNX Runtime row: nothing to compare
