"""StableAdamW step time: RexBERT's ``torch._foreach_*`` step vs optimi's StableAdamW (for-loop and foreach).

All three update the same RexBERT-micro parameters (Table 2 size, 50,368-token vocabulary) from the same
random gradients, with the same two parameter groups (weights decayed; biases and norms not). optimi's
``decouple_lr=True`` is the same rule (weight decay scaled by lr/max_lr). Steps alternate between the
implementations (ABBA) and medians are compared; ratios > 1 mean RexBERT's step is faster. On a GPU the
difference is larger than here: optimi reads each tensor's clipped LR back to the host (``.item()``), a sync
per parameter, where RexBERT keeps them on the device. Each timed step includes restoring the gradients
(one copy, the same for all three): both implementations use them as scratch space.

    .venv/bin/python -m benchmarks.bench_optimizer [--size micro] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import interleaved_timings  # noqa: E402


def _model(size: str):
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM

    config = RexBertConfig.for_size(size, vocab_size=50368)
    return RexBertForMaskedLM(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="micro", choices=("micro", "mini", "base", "large"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    try:
        import optimi
    except ImportError:  # a dev extra (setup.cfg): the reference this benchmark compares against
        print("bench_optimizer: torch-optimi is not installed (pip install torch-optimi); skipped")
        return 0
    from training.optim import StableAdamW, param_groups

    torch.manual_seed(0)
    models = {name: _model(args.size) for name in ("rexbert_foreach", "optimi_for_loop", "optimi_foreach")}
    reference = models["rexbert_foreach"].state_dict()
    gradients = [torch.randn_like(p) * 1e-3 for p in models["rexbert_foreach"].parameters()]
    for model in models.values():
        model.load_state_dict(reference)
        for p, g in zip(model.parameters(), gradients):
            p.grad = g.clone()
    kwargs = {"lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-6}
    optimizers = {
        "rexbert_foreach": StableAdamW(param_groups(models["rexbert_foreach"], 1e-5), **kwargs),
        "optimi_for_loop": optimi.StableAdamW(
            param_groups(models["optimi_for_loop"], 1e-5), decouple_lr=True, foreach=False, **kwargs
        ),
        "optimi_foreach": optimi.StableAdamW(
            param_groups(models["optimi_foreach"], 1e-5), decouple_lr=True, foreach=True, **kwargs
        ),
    }

    def step(name):
        # both implementations use the gradients as scratch space: restore them (the same copy for all)
        torch._foreach_copy_([p.grad for p in models[name].parameters()], gradients)
        optimizers[name].step()

    timings = interleaved_timings(
        {name: (lambda name=name: step(name)) for name in optimizers}, repeats=args.repeats, warmup=2
    )
    medians = {name: statistics.median(t) for name, t in timings.items()}
    tensors = sum(1 for _ in models["rexbert_foreach"].parameters())
    params = sum(p.numel() for p in models["rexbert_foreach"].parameters())
    print(
        f"# StableAdamW step, RexBERT-{args.size}: {tensors} tensors, {params / 1e6:.1f}M parameters, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}"
    )
    print("| implementation | median ms/step | RexBERT speed-up |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / medians['rexbert_foreach']:.2f}× |")
    drift = max(
        (a - b).abs().max().item()
        for a, b in zip(models["rexbert_foreach"].parameters(), models["optimi_for_loop"].parameters())
    )
    print(f"max |Δ| between RexBERT and optimi (for-loop) weights after every step: {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
