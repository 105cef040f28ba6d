import math

import pytest
import torch

from training.schedules import BatchSizeWarmup, WSDSchedule, wsd_scheduler


def test_wsd_1_sqrt_shape():
    s = WSDSchedule(total_steps=100, warmup_steps=10, decay_steps=40, decay_shape="1-sqrt", alpha_f=0.1)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5) and s(10) == 1.0 and s(59) == 1.0
    assert s(60) == pytest.approx(1.0)
    assert s(70) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.25)))
    assert s(100) == pytest.approx(0.1)
    values = [s(i) for i in range(60, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    # 1-sqrt drops faster than linear early in the decay
    lin = WSDSchedule(total_steps=100, warmup_steps=10, decay_steps=40, decay_shape="linear", alpha_f=0.1)
    assert lin(70) == pytest.approx(0.1 + 0.9 * 0.75) and s(70) < lin(70)


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
