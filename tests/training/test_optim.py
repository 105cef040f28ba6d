import math

import pytest
import torch

from training.optim import StableAdamW, param_groups


def _reference(params, grads_seq, lrs, betas=(0.9, 0.98), eps=1e-6, wd=0.1, max_lr=1e-2):
    """Textbook StableAdamW in float64, one tensor at a time, plain Python arithmetic over elements."""
    params = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, (grads, lr) in enumerate(zip(grads_seq, lrs), start=1):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g.double()
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            m_hat = m[i] / (1 - betas[0] ** t)
            v_hat = v[i] / (1 - betas[1] ** t)
            rms = math.sqrt(float((g * g / torch.clamp(v_hat, min=eps**2)).mean()))
            lr_t = lr / max(1.0, rms)
            decay = wd if p.ndim > 1 else 0.0
            p = p * (1 - lr_t * decay / max_lr)
            params[i] = p - lr_t * m_hat / (v_hat.sqrt() + eps)
    return params


def test_matches_reference_for_a_few_steps_with_clipping_and_lr_changes():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5, 4))
    bias = torch.nn.Parameter(torch.randn(4))
    opt = StableAdamW([weight, bias], lr=1e-2, weight_decay=0.1)
    start = [weight.detach().clone(), bias.detach().clone()]
    # gradient scale jumps at step 4 so update clipping (rms > 1) is exercised
    grads_seq = [[torch.randn(5, 4) * (50 if t == 3 else 1), torch.randn(4)] for t in range(6)]
    lrs = [1e-2, 8e-3, 6e-3, 6e-3, 4e-3, 1e-3]
    for grads, lr in zip(grads_seq, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        weight.grad, bias.grad = grads[0].clone(), grads[1].clone()
        opt.step()
    ref = _reference(start, grads_seq, lrs)
    torch.testing.assert_close(weight.detach().double(), ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias.detach().double(), ref[1], rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_first_step_and_bias_is_not_decayed():
    p = torch.nn.Parameter(torch.ones(3, 3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = StableAdamW([p, b], lr=0.1, weight_decay=0.01)
    p.grad = torch.full((3, 3), 1e6)
    b.grad = torch.zeros(3)
    opt.step()
    # first step: |m_hat/sqrt(v_hat)| = 1: the change is lr_t + wd·(lr/max_lr), never a 1e6-sized jump
    torch.testing.assert_close(p.detach(), torch.full((3, 3), 1 * (1 - 0.01) - 0.1), rtol=0, atol=1e-4)
    assert torch.equal(b.detach(), torch.ones(3))


def test_param_groups_split_by_ndim():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.01)
    assert [p.ndim for p in decay["params"]] == [2]
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="lr"):
        StableAdamW([torch.nn.Parameter(torch.ones(1))], lr=0)
