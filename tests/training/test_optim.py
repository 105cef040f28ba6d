import math

import pytest
import torch

from rexbert_common.errors import UserError
from training.optim import StableAdamW, carry_moments, param_groups


def _reference(params, grads_seq, lrs, decays, betas=(0.9, 0.98), eps=1e-6, max_lr=1e-2):
    """Textbook StableAdamW in float64, one tensor at a time (the former per-parameter implementation)."""
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
            p = p * (1 - lr_t * decays[i] / max_lr)
            params[i] = p - lr_t * m_hat / (v_hat.sqrt() + eps)
    return params


def _run(opt, params, grads_seq, lrs):
    for grads, lr in zip(grads_seq, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = g.clone().to(p.dtype)
        opt.step()


def _problem(seed=0):
    torch.manual_seed(seed)
    weight = torch.nn.Parameter(torch.randn(5, 4))
    other = torch.nn.Parameter(torch.randn(3, 7))
    bias = torch.nn.Parameter(torch.randn(4))
    # the gradient scale jumps at step 4 so update clipping (rms > 1) is exercised on one tensor only
    grads_seq = [
        [torch.randn(5, 4) * (50 if t == 3 else 1), torch.randn(3, 7), torch.randn(4)] for t in range(6)
    ]
    lrs = [1e-2, 8e-3, 6e-3, 6e-3, 4e-3, 1e-3]
    return [weight, other, bias], grads_seq, lrs


def test_matches_the_textbook_reference_with_clipping_lr_changes_and_groups():
    params, grads_seq, lrs = _problem()
    start = [p.detach().clone() for p in params]
    groups = [{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "weight_decay": 0.0}]
    _run(StableAdamW(groups, lr=1e-2), params, grads_seq, lrs)
    for got, want in zip(params, _reference(start, grads_seq, lrs, decays=[0.1, 0.1, 0.0])):
        torch.testing.assert_close(got.detach().double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:You are using weight_decay")
def test_matches_optimi_stableadamw():
    optimi = pytest.importorskip("optimi")  # torch-optimi is a test dependency (setup.cfg [test])
    ours, grads_seq, lrs = _problem(1)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]

    def groups(ps):
        return [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "weight_decay": 0.0}]

    _run(StableAdamW(groups(ours), lr=1e-2, betas=(0.9, 0.98), eps=1e-6), ours, grads_seq, lrs)
    reference = optimi.StableAdamW(
        groups(theirs),
        lr=1e-2,
        betas=(0.9, 0.98),
        eps=1e-6,
        decouple_lr=True,
        max_lr=1e-2,
        foreach=False,
        kahan_sum=False,
    )
    _run(reference, theirs, grads_seq, lrs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=2e-7)


def test_a_tensor_that_skips_steps_keeps_its_own_bias_correction():
    params, grads_seq, lrs = _problem(4)
    start = [p.detach().clone() for p in params]
    opt = StableAdamW([{"params": params, "weight_decay": 0.1}], lr=1e-2)
    seen = {0: [], 1: [], 2: []}
    for t, (grads, lr) in enumerate(zip(grads_seq, lrs)):
        opt.param_groups[0]["lr"] = lr
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if (i == 2 and t % 2) else g.clone()  # the bias gets a gradient every other step
            if p.grad is not None:
                seen[i].append((g, lr))
        opt.step()
    for i, p in enumerate(params):
        (want,) = _reference([start[i]], [[g] for g, _ in seen[i]], [lr for _, lr in seen[i]], decays=[0.1])
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_first_step_and_the_no_decay_group_is_not_decayed():
    p = torch.nn.Parameter(torch.ones(3, 3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = StableAdamW([{"params": [p], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], lr=0.1)
    p.grad = torch.full((3, 3), 1e6)
    b.grad = torch.zeros(3)
    opt.step()
    # first step: |m_hat/sqrt(v_hat)| = 1: the change is lr_t + wd·(lr/max_lr), never a 1e6-sized jump
    torch.testing.assert_close(p.detach(), torch.full((3, 3), 1 * (1 - 0.01) - 0.1), rtol=0, atol=1e-4)
    assert torch.equal(b.detach(), torch.ones(3))


def test_bf16_parameters_keep_fp32_moments_and_get_the_fp32_update():
    params, grads_seq, lrs = _problem(2)
    low = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in params]
    high = [torch.nn.Parameter(p.detach().to(torch.bfloat16).float()) for p in params]
    _run(StableAdamW(low, lr=1e-2, weight_decay=0.1), low, grads_seq[:1], lrs[:1])
    _run(StableAdamW(high, lr=1e-2, weight_decay=0.1), high, grads_seq[:1], lrs[:1])
    for a, b in zip(low, high):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.detach(), b.detach().to(torch.bfloat16), rtol=0, atol=0)


def test_param_groups_by_name_and_module_type_not_ndim():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(5, 4))
    decay, no_decay = param_groups(model, 0.01)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    # a flattened (1-D) weight, as FSDP presents them, is still decayed; a 2-D norm weight is not
    flat = torch.nn.Linear(4, 4)
    flat.weight = torch.nn.Parameter(flat.weight.detach().flatten())
    decay, _ = param_groups(flat, 0.01)
    assert any(p is flat.weight for p in decay["params"])


def test_param_groups_of_rexbert_exclude_every_norm_and_bias():
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM

    config = RexBertConfig.for_size(
        "micro",
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=1,
        vocab_size=128,
        pad_token_id=0,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = RexBertForMaskedLM(config)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n in names.values() if "norm" in n or n.endswith("bias")
    }
    assert "model.embeddings.tok_embeddings.weight" in {names[id(p)] for p in decay["params"]}


def test_carry_moments_keeps_the_new_hyperparameters():
    params, grads_seq, lrs = _problem(3)
    groups = [{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "weight_decay": 0.0}]
    old = StableAdamW(groups, lr=1e-2)
    _run(old, params, grads_seq[:3], lrs[:3])
    new = StableAdamW(
        [{"params": params[:2], "weight_decay": 1e-5}, {"params": params[2:], "weight_decay": 0.0}],
        lr=5e-4,
        betas=(0.9, 0.95),
    )
    carry_moments(new, old.state_dict(), "phase1/checkpoint-3/optimizer.pt")
    for p in params:
        assert torch.equal(new.state[p]["exp_avg"], old.state[p]["exp_avg"])
        assert new.state[p]["step"] == 3
    group = new.param_groups[0]
    assert (group["lr"], group["max_lr"], group["weight_decay"], group["betas"]) == (
        5e-4,
        5e-4,
        1e-5,
        (0.9, 0.95),
    )
    assert "initial_lr" not in group  # a scheduler built next starts from this phase's LR
    lonely = StableAdamW([torch.nn.Parameter(torch.ones(2))], lr=1e-3)
    with pytest.raises(UserError, match="checkpoint-3/optimizer.pt: optimizer state for parameter groups"):
        carry_moments(lonely, old.state_dict(), "phase1/checkpoint-3/optimizer.pt")


def test_invalid_arguments():
    with pytest.raises(ValueError, match="lr"):
        StableAdamW([torch.nn.Parameter(torch.ones(1))], lr=0)
