"""StableAdamW: AdamW with Adafactor-style per-tensor update clipping (ModernBERT, Ettin).

For each parameter tensor at step t (β = (β1, β2), debiased):
    m = β1·m + (1-β1)·g,   v = β2·v + (1-β2)·g²
    m̂ = m / (1-β1^t),      v̂ = v / (1-β2^t)
    rms = sqrt(mean(g² / max(v̂, eps²)))            # how far the gradient is from its running scale
    lr_t = lr / max(1, rms)                         # update clipping: replaces gradient clipping
    p ← p·(1 - lr_t/max_lr · wd)                    # decoupled weight decay, scaled by lr/max_lr
    p ← p - lr_t · m̂ / (sqrt(v̂) + eps)
Weight decay is skipped for tensors with ndim <= 1 (biases, norms) unless the caller passes explicit
parameter groups; :func:`param_groups` builds the usual two groups.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices/embeddings decayed, biases and norm weights (ndim <= 1) not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class StableAdamW(torch.optim.Optimizer):
    """AdamW with per-tensor update clipping and lr-scaled decoupled weight decay.

    Args:
        params: parameters or parameter groups.
        lr: peak learning rate; schedulers scale ``group["lr"]`` and the decay follows ``lr / max_lr``.
        betas: (β1, β2). ModernBERT: (0.9, 0.98).
        eps: ε. ModernBERT: 1e-6.
        weight_decay: decoupled weight decay at the peak LR (ndim <= 1 tensors are never decayed).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"StableAdamW: lr must be > 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"StableAdamW: betas must be in [0, 1), got {betas}")
        if eps <= 0 or weight_decay < 0:
            raise ValueError(f"StableAdamW: need eps > 0 and weight_decay >= 0, got {eps}, {weight_decay}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        for group in self.param_groups:  # the peak LR each group's decay is scaled against
            group.setdefault("max_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr, max_lr = group["eps"], group["lr"], group["max_lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("StableAdamW does not support sparse gradients")
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                v_hat = exp_avg_sq / (1.0 - beta2**t)
                rms = grad.pow(2).div_(v_hat.clamp(min=eps * eps)).mean().sqrt()
                lr_t = lr / torch.clamp(rms, min=1.0)  # 0-dim tensor: no host sync
                wd = group["weight_decay"] if p.ndim > 1 else 0.0
                update = (exp_avg / (1.0 - beta1**t)).div_(v_hat.sqrt_().add_(eps))
                p_f = p.float() if p.dtype != torch.float32 else p
                if wd:
                    p_f.mul_(1.0 - lr_t * (wd / max_lr))
                p_f.add_(-lr_t * update)
                if p_f is not p:
                    p.copy_(p_f)
        return loss
