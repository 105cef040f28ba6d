"""StableAdamW: AdamW with Adafactor-style per-tensor update clipping (ModernBERT, Ettin).

For each parameter tensor at step t (β = (β1, β2), debiased):
    m = β1·m + (1-β1)·g,   v = β2·v + (1-β2)·g²
    m̂ = m / (1-β1^t),      v̂ = v / (1-β2^t)
    rms = sqrt(mean(g² / max(v̂, eps²)))            # how far the gradient is from its running scale
    lr_t = lr / max(1, rms)                         # update clipping: replaces gradient clipping
    p ← p·(1 - lr_t/max_lr · wd)                    # decoupled weight decay, scaled by lr/max_lr
    p ← p - lr_t · m̂ / (sqrt(v̂) + eps)
This is optimi's ``StableAdamW(decouple_lr=True)``. The step runs on whole lists of tensors with
``torch._foreach_*`` kernels (as optimi and torch's own AdamW do) instead of ~12 kernels per tensor, and keeps
the per-tensor clipped LRs on the device: optimi calls ``.item()`` once per tensor, a host sync per
parameter on a GPU. Moments and master weights are fp32 whatever the parameter dtype.

No weight decay on biases and normalisation weights: :func:`param_groups` picks them by name and module
type, not by ``p.ndim`` (flattened parameters are all 1-D).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rexbert_common.errors import UserError


def _is_no_decay(module: torch.nn.Module, param_name: str) -> bool:
    norm = "norm" in type(module).__name__.lower()  # LayerNorm, RMSNorm, GroupNorm, BatchNorm ...
    return norm or param_name == "bias"


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights decayed; biases and normalisation weights not (chosen by name and module type)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # tied weights appear twice
                continue
            seen.add(id(param))
            (no_decay if _is_no_decay(module, name) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class StableAdamW(torch.optim.Optimizer):
    """AdamW with per-tensor update clipping and lr-scaled decoupled weight decay.

    Args:
        params: parameters or parameter groups (see :func:`param_groups`).
        lr: peak learning rate; schedulers scale ``group["lr"]`` and the decay follows ``lr / max_lr``.
        betas: (β1, β2). ModernBERT: (0.9, 0.98).
        eps: ε. ModernBERT: 1e-6.
        weight_decay: decoupled weight decay at the peak LR (per group).
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
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("StableAdamW does not support sparse gradients")
            by_device: dict[torch.device, list[torch.Tensor]] = {}
            for p in params:
                by_device.setdefault(p.device, []).append(p)
            for device_params in by_device.values():
                self._step_tensors(group, device_params)
        return loss

    def _step_tensors(self, group: dict, params: list[torch.Tensor]) -> None:
        """One step for the tensors of one device, grouped by their step count (a tensor that got no
        gradient at some step keeps its own bias correction)."""
        by_step: dict[int, list[torch.Tensor]] = {}
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
            state["step"] += 1
            by_step.setdefault(state["step"], []).append(p)
        for step, tensors in by_step.items():
            self._step_tensors_at(group, tensors, step)

    def _step_tensors_at(self, group: dict, params: list[torch.Tensor], step: int) -> None:
        """Moments are kept debiased (optimi's "debiased betas": step t's EMA weight makes m_t equal m̂_t),
        so no bias-correction temporaries are needed; the gradients serve as scratch space, as in optimi
        (the caller zeroes them next)."""
        beta1, beta2 = group["betas"]
        eps, lr, max_lr, wd = group["eps"], group["lr"], group["max_lr"], group["weight_decay"]
        states = [self.state[p] for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        scratch = [p.grad if p.grad.dtype == torch.float32 else p.grad.float() for p in params]
        masters = [p if p.dtype == torch.float32 else p.float() for p in params]
        weight1 = (1.0 - beta1) / (1.0 - beta1**step)  # = 1 - β̂1, β̂ = β(1-β^(t-1)) / (1-β^t)
        weight2 = (1.0 - beta2) / (1.0 - beta2**step)

        torch._foreach_lerp_(exp_avgs, scratch, weight1)
        torch._foreach_mul_(exp_avg_sqs, 1.0 - weight2)
        torch._foreach_addcmul_(exp_avg_sqs, scratch, scratch, value=weight2)

        # rms_i² = mean(g² / max(v̂, eps²)) = ||g² / max(v̂, eps²)||₁ / numel: one norm kernel per list
        inverse = torch._foreach_maximum(exp_avg_sqs, eps * eps)
        torch._foreach_reciprocal_(inverse)  # then multiply: division is several times slower on CPUs
        torch._foreach_mul_(scratch, scratch)
        torch._foreach_mul_(scratch, inverse)
        del inverse
        norms = torch._foreach_norm(scratch, 1)
        # host scalars as kernel arguments: a tensor built from a host list would be a blocking copy on a GPU
        torch._foreach_div_(norms, [float(p.numel()) for p in params])
        mean_squares = torch.stack(norms)  # (n_tensors,)
        lrs = lr / torch.clamp(mean_squares.sqrt(), min=1.0)  # (n_tensors,), stays on the device

        if wd:
            torch._foreach_mul_(masters, list((1.0 - lrs * (wd / max_lr)).unbind()))
        # p += m̂ / ((sqrt(v̂) + eps) / -lr_t): the per-tensor LR folded into the denominator stays a device
        # tensor (addcdiv's own per-tensor scalars would have to be read back to the host)
        torch._foreach_copy_(scratch, exp_avg_sqs)
        torch._foreach_sqrt_(scratch)
        torch._foreach_add_(scratch, eps)
        torch._foreach_mul_(scratch, list((-1.0 / lrs).unbind()))
        torch._foreach_addcdiv_(masters, exp_avgs, scratch)
        for p, master in zip(params, masters):
            if master is not p:
                p.copy_(master)


def carry_moments(optimizer: torch.optim.Optimizer, saved: dict, source: str) -> None:
    """Continue from another run's optimizer moments (``saved``: an ``optimizer.state_dict()``) while keeping
    this optimizer's hyper-parameters (LR, max_lr, betas, weight decay): a phase restart in ModernBERT's and
    Ettin's recipes. The saved groups must hold the same parameters (same model, same grouping)."""
    fresh = optimizer.state_dict()
    shapes = [len(g["params"]) for g in fresh["param_groups"]]
    saved_shapes = [len(g["params"]) for g in saved.get("param_groups", [])]
    if shapes != saved_shapes:
        raise UserError(
            f"{source}: optimizer state for parameter groups of sizes {saved_shapes}, this model "
            f"has {shapes}: it is not the same model"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, state in saved["state"].items():
        moment = state.get("exp_avg")
        if moment is not None and tuple(moment.shape) != tuple(params[int(index)].shape):
            raise UserError(
                f"{source}: optimizer state of parameter {index} has shape {tuple(moment.shape)}, "
                f"the model's is {tuple(params[int(index)].shape)}"
            )
    optimizer.load_state_dict({"state": saved["state"], "param_groups": fresh["param_groups"]})
