"""The GPU check's CPU dry run: every part runs at tiny sizes and the report says what it measured."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.slow
def test_dry_run_writes_a_complete_report(tmp_path):
    assert gpu_check.main(["--dry-run", "--device", "cpu", "--out", str(tmp_path), "--repeats", "1"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    agreement = {(r["layout"], r["window"], r["backend"]): r for r in report["backend_agreement"]}
    assert {k[0] for k in agreement} == {"packed", "padded"} and len({k[1] for k in agreement}) == 2
    for (_, _, backend), row in agreement.items():
        if backend in ("sdpa", "eager"):  # bf16 rounding of the inputs, not a wrong mask (that is O(1))
            assert 0 < row["max_abs_delta"] < 0.05, row
        else:
            assert row["max_abs_delta"] is None and row["note"], row
    assert [r["input"] for r in report["training_steps"]] == ["packed 4x64", "1x256"]
    assert all(
        r["tokens_per_s"] > 0 and r["sync_check"] == "not checked (CPU)" for r in report["training_steps"]
    )
    modes = {(r["mode"], r["model"]) for r in report["versus_modernbert"]}
    assert ("training", "modernbert") in modes and ("inference", "rexbert (packed)") in modes
    assert "(c) vs transformers" in (tmp_path / "gpu_check.md").read_text()


def test_backend_agreement_detects_a_wrong_window(monkeypatch):
    """The check must be able to fail: a backend ignoring the window shows an O(1) delta on local layers."""
    from modeling_rexbert import attention_rexbert

    sdpa = attention_rexbert.ATTENTION_BACKENDS["sdpa"]

    def global_only(q, k, v, batch, *, window_size, **kw):
        return sdpa(q, k, v, batch, window_size=attention_rexbert.GLOBAL_WINDOW, **kw)

    monkeypatch.setitem(attention_rexbert.ATTENTION_BACKENDS, "sdpa", global_only)
    rows = gpu_check.backend_agreement(torch.device("cpu"), heads=2, head_dim=16, half_window=8)
    local = [r for r in rows if r["backend"] == "sdpa" and r["window"].startswith("local")]
    assert local and all(r["max_abs_delta"] > 0.1 for r in local)


def test_main_without_cuda_explains_the_dry_run(tmp_path, capsys):
    if torch.cuda.is_available():  # pragma: no cover - GPU machines run the real check
        pytest.skip("CUDA present")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
