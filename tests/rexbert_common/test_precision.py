"""rexbert_common.precision: bf16 autocast only where the device computes bf16 natively and faster."""

import pytest
import torch

from rexbert_common import precision as precision_module
from rexbert_common.precision import (
    MIN_MATMUL_SPEEDUP,
    MatmulRace,
    Precision,
    race_matmul,
    resolve_precision,
    time_matmul,
)


def _race(speedup: float):
    calls = []

    def race(device_type: str) -> MatmulRace:
        calls.append(device_type)
        return MatmulRace(fp32_flops=100e9, bf16_flops=speedup * 100e9)

    race.calls = calls
    return race


@pytest.fixture
def native(monkeypatch):
    """A CPU with (True) or without (False) native bf16, whatever this machine has."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: value)

    return set_native


def test_auto_picks_bf16_on_a_cpu_with_native_bf16_that_wins_the_race(native):
    native(True)
    race = _race(5.0)
    chosen = resolve_precision("auto", "cpu", log=None, race=race)
    assert chosen.dtype == torch.bfloat16 and chosen.name == "bf16"
    assert race.calls == ["cpu"]
    assert "native bf16" in chosen.reason and "5.00x" in chosen.reason


@pytest.mark.parametrize("speedup", [0.05, 1.0, MIN_MATMUL_SPEEDUP - 0.01])
def test_auto_keeps_fp32_when_bf16_is_not_clearly_faster(native, speedup):
    native(True)
    chosen = resolve_precision("auto", "cpu", log=None, race=_race(speedup))
    assert chosen.dtype == torch.float32
    assert f"< {MIN_MATMUL_SPEEDUP}x" in chosen.reason


def test_auto_keeps_fp32_without_native_bf16_and_does_not_race(native):
    """An AVX2 CPU emulates bf16: fp32, decided without spending time on the probe."""
    native(False)
    race = _race(9.0)  # even a (bogus) winning race must not flip it
    chosen = resolve_precision("auto", "cpu", log=None, race=race)
    assert chosen.dtype == torch.float32 and race.calls == []
    assert "without native bf16" in chosen.reason


@pytest.mark.parametrize("supported, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cuda_follows_the_devices_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    race = _race(0.01)
    assert resolve_precision("auto", "cuda", log=None, race=race).dtype == expected
    assert race.calls == []  # the CPU probe is for CPUs only


@pytest.mark.parametrize("choice, expected", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
@pytest.mark.parametrize("has_native", [True, False])
def test_bf16_and_fp32_force_the_choice(native, choice, expected, has_native):
    native(has_native)
    race = _race(0.01 if choice == "bf16" else 9.0)
    chosen = resolve_precision(choice, "cpu", log=None, race=race)
    assert chosen.dtype == expected and chosen.reason.startswith("forced") and race.calls == []
    assert ("emulates bf16" in chosen.reason) == (choice == "bf16" and not has_native)


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="'fp16' is not one of auto, bf16, fp32"):
        resolve_precision("fp16", "cpu", log=None)


def test_the_choice_is_printed_once_per_process(native, monkeypatch):
    monkeypatch.setattr(precision_module, "_announced", set())
    native(True)
    lines = []
    for _ in range(3):
        resolve_precision("auto", "cpu", log=lines.append, race=_race(4.0))
    resolve_precision("fp32", "cpu", log=lines.append)
    assert lines == [
        f"precision: bf16 ({resolve_precision('auto', 'cpu', log=None, race=_race(4.0)).reason})",
        "precision: fp32 (forced: fp32)",
    ]


def test_autocast_runs_matmuls_in_the_chosen_dtype():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with Precision(torch.bfloat16, "x").autocast("cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with Precision(torch.float32, "x").autocast("cpu"):
        assert (a @ b).dtype == torch.float32
    assert Precision(torch.bfloat16, "why").as_dict() == {"precision": "bf16", "reason": "why"}


def test_the_probe_itself_races_both_dtypes_once_per_process():
    """The real probe on this machine: both sides measured, cached, and ``auto`` follows its verdict."""
    race_matmul.cache_clear()
    result = race_matmul("cpu")
    assert result.fp32_flops > 1e8 and result.bf16_flops > 1e6  # both sides really ran
    assert race_matmul("cpu") is result  # cached: the probe runs once per process
    chosen = resolve_precision("auto", "cpu", log=None)
    wins = precision_module.cpu_has_native_bf16() and result.speedup >= MIN_MATMUL_SPEEDUP
    assert chosen.bf16 == wins


def test_time_matmul_counts_two_flops_per_multiply_add(monkeypatch):
    """A fake clock advancing 1 s per burst: FLOP/s = 2·m·k·n·reps exactly."""
    ticks = iter(range(0, 1000))
    monkeypatch.setattr(precision_module.time, "perf_counter", lambda: float(next(ticks)))
    # deadline at t=0+3: bursts measured as [1,2] and [3,...) -> one full burst of 4 reps in 1 s
    assert time_matmul(8, 4, 2, seconds=3) == 2 * 8 * 4 * 2 * 4
