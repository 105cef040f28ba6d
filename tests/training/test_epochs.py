import pytest

from training.epochs import epoch_report, format_report
from training.mixture import MixturePlan, PlannedSource
from training.recipe import MixtureConfig


def test_epoch_report_counts_drawn_over_available_tokens():
    # 25 tokens a document: small = 10 documents = 250 tokens, big = 40 = 1000; the domain (small) gets 20%
    sources = [PlannedSource("big", False, 1.0, 25.0), PlannedSource("small", True, 1.0, 25.0)]
    plan = MixturePlan(sources, MixtureConfig(domain_start=0.2, domain_end=0.2), 5000, 100)
    measured = [
        {"name": "big", "documents": 40, "mean_tokens": 25.0},
        {"name": "small", "documents": 10, "mean_tokens": 25.0},
    ]
    report = {r["source"]: r for r in epoch_report(plan, measured)}
    assert report["small"]["source_tokens"] == pytest.approx(250)
    assert report["big"]["source_tokens"] == pytest.approx(1000)
    assert report["small"]["epochs"] == pytest.approx(1000 / 250) and report["big"][
        "epochs"
    ] == pytest.approx(4)
    assert format_report("phase1", list(report.values())).startswith(
        "phase1: big ≈4 epochs (≈4e+03 of ≈1e+03"
    )
