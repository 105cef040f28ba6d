import json

import pytest
from scipy import stats

from ablation.report import aggregate, summarize, write_report


def test_summary_is_the_t_interval_of_the_mean():
    values = [0.41, 0.47, 0.44, 0.52]
    got = summarize(values)
    mean, sem = sum(values) / 4, stats.sem(values)
    low, high = stats.t.interval(0.95, 3, loc=mean, scale=sem)
    assert got["n"] == 4 and got["mean"] == pytest.approx(mean)
    assert got["sd"] == pytest.approx(stats.tstd(values))
    assert got["ci"] == pytest.approx([low, high])
    assert high - low == pytest.approx(2 * 3.182446 * sem, rel=1e-5)  # t(0.975, 3) = 3.1824
    assert summarize([0.3]) == {"n": 1, "mean": 0.3, "sd": None, "ci": None}
    assert summarize([0.3, 0.3])["ci"] == [0.3, 0.3]


def _result(variant, seed, top1, loss):
    curve = [[0, 9.0], [1000, loss]]
    return {
        "variant": variant,
        "seed": seed,
        "tokens": {"budget": 1000, "consumed": 990},
        "metrics": {"product_title_span_top1": top1, "final_train_loss": loss},
        "loss_curve": curve,
    }


RESULTS = [
    _result("a", 0, 0.40, 3.0),
    _result("b", 0, 0.45, 2.9),
    _result("a", 1, 0.42, 3.1),
    _result("b", 1, 0.48, 2.95),
    _result("a", 2, 0.38, 3.2),
    _result("b", 2, 0.44, 3.1),
]


def test_differences_are_paired_by_seed():
    stats_ = aggregate(RESULTS, ["a", "b"], "a")
    diff = stats_["differences_to_reference"]["b"]["product_title_span_top1"]
    assert diff["mean"] == pytest.approx(0.17 / 3) and diff["n"] == 3
    assert diff["ci"] == pytest.approx(summarize([0.05, 0.06, 0.06])["ci"])
    assert diff["ci"][0] > 0  # paired: the seed-to-seed spread cancels
    unpaired = stats_["arms"]["a"]["product_title_span_top1"]
    assert unpaired["ci"][1] - unpaired["ci"][0] > diff["ci"][1] - diff["ci"][0]


def test_report_files(tmp_path):
    path = write_report(RESULTS, ["a", "b"], "a", tmp_path, "rexbert ablate --config x.yaml")
    text = path.read_text()
    assert "`rexbert ablate --config x.yaml`" in text
    assert "| a | 3 | – | – | – | – | 40.00 ± 2.00 [35.03, 44.97] |" in text
    assert "| b | – | – | – | – | 5.67 ± 0.58 [4.23, 7.10] * |" in text  # the difference excludes 0: marked
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["arms"]["b"]["product_title_span_top1"]["mean"] == pytest.approx(0.4566667)
    assert len(document["cells"]) == 6 and "loss_curve" not in document["cells"][0]
    for name in ("loss_curves.png", "accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size < 300_000


def test_report_shows_the_copy_floor_the_heldout_filter_and_the_lr_sweep(tmp_path):
    notes = {
        "scored_texts": {"product_title": 400, "product_description": 400, "general": 400},
        "entity_texts": 446,
        "validation_texts": {"product_title": 200, "product_description": 123, "general": 200},
        "heldout_filter": {
            "product_title": {
                "candidates": 1438,
                "verbatim": 37,
                "near_duplicate": 228,
                "near_duplicate_share": 0.1586,
            }
        },
        "copy_baseline": {"product_title_span_top1": 0.0168, "product_title_span_across_texts_top1": 0.0},
    }
    points = [{"lr": lr, "seed": 0, "score": s} for lr, s in ((3e-4, 0.1), (1e-3, 0.14), (3e-3, 0.12))]
    sweep = {"criterion": "mean validation top-1", "points": points, "chosen": 1e-3}
    path = write_report(RESULTS, ["a", "b"], "a", tmp_path, "rexbert ablate", notes, sweep)
    text = path.read_text()
    assert "| copy (model-free baseline) | – | – | – | – | – | 1.68 |" in text
    assert "| product_title | 1438 | 37 | 228 | 15.9% |" in text
    assert "| 0.001 | 14.00 | ✓ |" in text and "| 0.003 | 12.00 |  |" in text
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["lr_sweep"]["chosen"] == 1e-3 and document["evaluation_texts"] == notes
    assert "copy" not in document["arms"], "the baseline is no arm: no statistics, no difference"
