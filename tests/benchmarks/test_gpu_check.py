"""The GPU check: its CPU dry run exercises every section, sections are guarded and written one by one, and
each check can fail (planted wrong window, wrong gradient, host sync, slow model)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check
from modeling_rexbert import attention_rexbert

CPU = torch.device("cpu")


def _dry_context(budget_s: float = 600.0) -> gpu_check.Context:
    return gpu_check.Context(CPU, dry_run=True, budget_s=budget_s)


def test_dry_run_writes_every_section_and_a_passing_verdict(tmp_path):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == [name for name, _ in gpu_check.SECTIONS]
    assert all(s["status"] == "ok" for s in sections.values()), {k: s["status"] for k, s in sections.items()}
    header = sections["header"]["result"]
    assert header["torch"] == torch.__version__ and "window_size" in header["varlen_attn_signature"]
    agreement = sections["agreement"]["result"]["rows"]
    assert {(r["backend"], r["window"].split()[0]) for r in agreement} == {
        (b, w) for b in ("varlen", "sdpa", "eager") for w in ("global", "local")
    }
    assert all(0 < r["forward_max_abs_delta"] < 0.02 and r["dv_relative_error"] < 0.05 for r in agreement)
    syncs = sections["syncs"]["result"]
    assert syncs["attention"] == "varlen" and syncs["syncs_per_step"] == 0
    assert set(syncs["phases"]) == {"copy", "forward", "backward", "optimizer"}
    trained = {
        (r["variant"], r.get("workload"))
        for r in sections["training"]["result"]["rows"]
        if "real_tokens_per_s" in r
    }
    for variant in ("rexbert varlen", "rexbert varlen compiled", "rexbert sdpa", "modernbert sdpa"):
        assert {(variant, "phase1_packs"), (variant, "long_docs")} <= trained, variant
    inference = sections["inference"]["result"]["rows"]
    assert {(r["model"], r["workload"]) for r in inference} == {
        (m, w) for m in ("rexbert", "modernbert") for w in ("fixed_512", "var_256", "fixed_8192", "var_4096")
    }
    verdict = {c["check"]: c["status"] for c in report["verdict"]}
    assert len(verdict) == 7
    judged = [s for s in verdict.values() if "not judged" not in s]
    assert judged and all(s == "pass" for s in judged), verdict
    assert "## verdict" in (tmp_path / "gpu_check.md").read_text()


def test_a_failing_section_is_recorded_and_the_json_rewritten_after_each(tmp_path, monkeypatch):
    seen = []

    def broken(ctx):
        raise RuntimeError("planted")

    sections = [
        ("first", lambda ctx: {"rows": [{"x": 1}]}),
        ("second", broken),
        ("third", lambda ctx: {"y": 2}),
    ]
    monkeypatch.setattr(gpu_check, "SECTIONS", sections)
    write = gpu_check.Report.write

    def spy(self):
        write(self)
        seen.append(
            {
                k: v["status"]
                for k, v in json.loads((tmp_path / "gpu_check.json").read_text())["sections"].items()
            }
        )

    monkeypatch.setattr(gpu_check.Report, "write", spy)
    assert (
        gpu_check.run(tmp_path, CPU, dry_run=True, budget_s=60) == 1
    )  # the broken section fails the verdict
    assert seen[0] == {"first": "ok"}
    assert seen[1] == {"first": "ok", "second": "error: RuntimeError: planted"}
    assert seen[2] == {**seen[1], "third": "ok"}
    final = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "planted" in final["sections"]["second"]["traceback"]
    assert {"check": "section second", "status": "FAIL"}.items() <= next(
        c for c in final["verdict"] if c["check"] == "section second"
    ).items()


def test_sections_past_the_budget_are_skipped_not_run(tmp_path, monkeypatch):
    ctx = _dry_context()
    ctx.sizes.estimates_s = {"eager": 1e9, "compiled": 1e9, "flex_attention": 1e9}
    rows = gpu_check.training(ctx)["rows"]
    assert len(rows) == len(gpu_check.VARIANTS) and all(r["skipped"].startswith("budget") for r in rows)
    monkeypatch.setattr(gpu_check, "SECTIONS", [("late", lambda ctx: {"ran": True})])
    assert gpu_check.run(tmp_path, CPU, dry_run=True, budget_s=0) == 1
    status = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["late"]["status"]
    assert status.startswith("error: TimeoutError")


def test_the_watchdog_stops_a_section_that_overruns_the_budget(tmp_path, monkeypatch):
    """A section that overruns (a compile slower than its estimate) is stopped at budget + grace; the run
    still skips the rest and writes its verdict."""
    import time

    monkeypatch.setattr(gpu_check, "GRACE_S", 0.0)
    sections = [("stuck", lambda ctx: time.sleep(30)), ("after", lambda ctx: {"ran": True})]
    monkeypatch.setattr(gpu_check, "SECTIONS", sections)
    start = time.monotonic()
    assert gpu_check.run(tmp_path, CPU, dry_run=True, budget_s=0.5) == 1
    assert time.monotonic() - start < 10
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"]["stuck"]["status"].startswith("error: TimeoutError: the budget")
    assert report["sections"]["after"]["status"].startswith("error: TimeoutError: budget spent")
    assert report["verdict"]


def test_agreement_catches_a_wrong_window_and_a_wrong_gradient(monkeypatch):
    sdpa, eager = (attention_rexbert.ATTENTION_BACKENDS[n] for n in ("sdpa", "eager"))

    def global_only(q, k, v, batch, *, window, **kw):  # ignores the local window
        return sdpa(q, k, v, batch, window=attention_rexbert.GLOBAL_WINDOW, **kw)

    def no_value_gradient(q, k, v, batch, **kw):  # right forward, dv = 0
        return eager(q, k, v.detach(), batch, **kw)

    monkeypatch.setitem(attention_rexbert.ATTENTION_BACKENDS, "sdpa", global_only)
    monkeypatch.setitem(attention_rexbert.ATTENTION_BACKENDS, "eager", no_value_gradient)
    with gpu_check._dry_run_varlen():
        rows = gpu_check.agreement(_dry_context())["rows"]
    by = {(r["backend"], r["window"].split()[0]): r for r in rows}
    assert (
        by["sdpa", "local"]["forward_max_abs_delta"] > 0.1
        and by["sdpa", "global"]["forward_max_abs_delta"] < 0.02
    )
    assert (
        by["eager", "global"]["forward_max_abs_delta"] < 0.02
        and by["eager", "global"]["dv_relative_error"] == 1.0
    )
    assert by["varlen", "local"]["dv_relative_error"] < 0.05
    checks = {
        c["check"]: c["status"]
        for c in gpu_check.verdict(
            {"sections": {"agreement": {"status": "ok", "result": {"rows": rows}}}}, True
        )
    }
    assert checks["attention forward max |delta|, bf16 vs fp32 eager"] == "FAIL"
    assert checks["attention dq / dk / dv relative error"] == "FAIL"


def test_syncs_are_counted_and_named_by_source_line(monkeypatch):
    """A host read planted in the loss (as a GPU sync would be) is counted in the forward phase and named
    by its line."""
    from modeling_rexbert import modeling_rexbert

    real = modeling_rexbert.masked_lm_loss

    def reads_targets(logits, targets, *args, **kwargs):
        targets.tolist()  # the planted sync
        return real(logits, targets, *args, **kwargs)

    monkeypatch.setattr(modeling_rexbert, "masked_lm_loss", reads_targets)
    with gpu_check._dry_run_varlen():
        result = gpu_check.syncs(_dry_context())
    forward = result["phases"]["forward"]["host_reads"]
    assert result["syncs_per_step"] >= 1 and sum(forward.values()) >= 1
    assert any(site.startswith("Tensor.tolist at ") and "reads_targets" in site for site in forward), forward
    assert not result["phases"]["optimizer"]["host_reads"]


def test_modernbert_is_built_with_sparse_prediction_on():
    """transformers' ModernBERT reads sparse_prediction in __init__ only (setting it later does nothing)."""
    model, runner = gpu_check.build(_dry_context(), "modernbert", "sdpa", compiled=False)
    assert model.sparse_prediction and runner is model and model.config._attn_implementation == "sdpa"


def _training_report(ours: float, theirs: float, mfu: float, mem: tuple[float, float]) -> dict:
    rows = [
        {
            "variant": "rexbert varlen",
            "workload": "phase1_packs",
            "real_tokens_per_s": ours,
            "mfu_datasheet": mfu,
        },
        {
            "variant": "modernbert sdpa",
            "workload": "phase1_packs",
            "real_tokens_per_s": theirs,
            "mfu_datasheet": 0.2,
        },
        {
            "variant": "rexbert varlen",
            "workload": "long_docs",
            "real_tokens_per_s": 1.0,
            "peak_mib_delta": mem[0],
        },
        {
            "variant": "modernbert sdpa",
            "workload": "long_docs",
            "real_tokens_per_s": 1.0,
            "peak_mib_delta": mem[1],
        },
    ]
    return {"sections": {"training": {"status": "ok", "result": {"rows": rows}}}}


@pytest.mark.parametrize(
    "ours,mfu,mem,expected",
    [
        (1.5, 0.35, (99, 100), ("pass", "pass", "pass")),
        (1.49, 0.34, (100, 100), ("FAIL", "FAIL", "FAIL")),
    ],
)
def test_performance_thresholds(ours, mfu, mem, expected):
    checks = {
        c["check"]: c["status"] for c in gpu_check.verdict(_training_report(ours, 1.0, mfu, mem), False)
    }
    got = tuple(checks[name] for name in (
        "training real tokens/s vs ModernBERT sdpa, phase-1 packs",
        "MFU at 64k tokens, best RexBERT variant",
        "8k-document peak memory, RexBERT / ModernBERT sdpa",
    ))  # fmt: skip
    assert got == expected
    assert checks["syncs in copy + forward + backward + optimizer step"] == "not measured"  # fails the run


def test_main_without_cuda_explains_the_dry_run(tmp_path, capsys):
    if torch.cuda.is_available():  # pragma: no cover - GPU machines run the real check
        pytest.skip("CUDA present")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
