import math

import pytest
import torch

from training.schedules import BatchSizeWarmup, WSDSchedule, wsd_scheduler


def _multipliers(schedule: WSDSchedule, steps: range) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    (multiplier,) = wsd_scheduler(optimizer, schedule).lr_lambdas
    return [multiplier(step) for step in steps]


def test_wsd_1_sqrt_is_modernberts_trapezoid():
    """The paper's shape: linear warmup from 0, flat, then alpha_f + (1 - alpha_f)(1 - sqrt(progress))."""
    s = WSDSchedule(total_steps=100, warmup_steps=10, decay_steps=40, decay_shape="1-sqrt", alpha_f=0.1)
    got = _multipliers(s, range(101))
    assert got[10:61] == [1.0] * 51
    for step in (60, 70, 85, 99, 100):
        assert got[step] == pytest.approx(0.1 + 0.9 * (1 - math.sqrt((step - 60) / 40)))
    assert all(a >= b for a, b in zip(got[60:], got[61:]))
    # 1-sqrt drops faster than linear early in the decay
    lin = _multipliers(WSDSchedule(100, 10, 40, decay_shape="linear", alpha_f=0.1), range(101))
    assert lin[70] == pytest.approx(0.1 + 0.9 * 0.75) and got[70] < lin[70]
    no_floor = _multipliers(WSDSchedule(100, 10, 40), range(11))
    assert no_floor[0] == 0.0 and no_floor[5] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "total,warmup,decay,shape,alpha_f",
    [
        (100, 10, 40, "1-sqrt", 0.0),
        (100, 0, 25, "1-sqrt", 0.1),
        (57, 5, 0, "linear", 0.0),
        (30, 3, 30 - 3, "linear", 0.2),
    ],
)
def test_our_schedule_is_transformers_get_wsd_schedule(total, warmup, decay, shape, alpha_f):
    """Pinned to transformers' own schedule for the same settings, at every step of the phase."""
    from transformers import get_wsd_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    theirs = get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup,
        num_decay_steps=decay,
        num_training_steps=total,
        decay_type=shape,
        min_lr_ratio=alpha_f,
    ).lr_lambdas[0]
    ours = _multipliers(WSDSchedule(total, warmup, decay, decay_shape=shape, alpha_f=alpha_f), range(total))
    assert ours == [theirs(step) for step in range(total)]


def test_scheduler_drives_optimizer_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=2.0)
    shape = WSDSchedule(total_steps=4, warmup_steps=2, decay_steps=2, decay_shape="linear")
    sched = wsd_scheduler(opt, shape)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 1.0, 2.0, 1.0, 0.0])


def test_invalid_schedule():
    with pytest.raises(ValueError, match="exceed"):
        WSDSchedule(total_steps=10, warmup_steps=6, decay_steps=6)
    with pytest.raises(ValueError, match="decay_shape"):
        WSDSchedule(total_steps=10, decay_shape="cosine")


def test_batch_size_warmup_by_tokens():
    w = BatchSizeWarmup(full_batch=32, warmup_tokens=1000, start=4, increment=4)
    sizes = [w(t) for t in range(0, 1200, 50)]
    assert sizes[0] == 4 and w(1000) == 32 and w(10**9) == 32
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert all((s - 4) % 4 == 0 for s in sizes)
    assert BatchSizeWarmup(full_batch=8)(0) == 8
