"""Sparse MLM loss, forward + backward on a CPU: the package's cache-sized row chunks vs the shipped
whole-tensor ``_SparseCrossEntropy`` vs ``F.cross_entropy`` on fp32 logits (transformers' ModernBERT).

The same (M, V) bf16 logits (M ≈ 30 % of a 8×512 packed step's tokens, the micro model's 16,384-token
vocabulary, spread like a trained model's: std 3), the same targets; sum(CE) / M and its gradient.
Calls alternate (ABBA) after a warm-up, medians compared; every variant's gradient is checked against
``F.cross_entropy``'s.

    .venv/bin/python -m benchmarks.bench_mlm_loss [--rows 1228] [--vocab 16384] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import interleaved_timings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1228, help="labelled tokens M")
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    from modeling_rexbert import cross_entropy_cpu

    torch.manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab) * 3).bfloat16()
    targets = torch.randint(0, args.vocab, (args.rows,))
    grads: dict[str, torch.Tensor] = {}

    def by_hand(log_sum_exp, softmax_minus_onehot):  # what _SparseCrossEntropy's forward and backward run
        def run() -> torch.Tensor:
            lse = log_sum_exp(logits)  # forward: the loss from it (timed, value unused)
            _ = (lse - logits.gather(1, targets[:, None]).squeeze(1).float()).sum() / args.rows
            return softmax_minus_onehot(logits, targets, lse, 1.0 / args.rows)  # backward

        return run

    def torch_reference() -> torch.Tensor:
        x = logits.clone().requires_grad_()
        (F.cross_entropy(x.float(), targets, reduction="sum") / args.rows).backward()
        return x.grad

    variants = {
        "package (CPU row chunks)": by_hand(
            cross_entropy_cpu.log_sum_exp, cross_entropy_cpu.softmax_minus_onehot
        ),
        "shipped (whole tensor)": by_hand(
            cross_entropy_cpu.shipped_log_sum_exp, cross_entropy_cpu.shipped_softmax_minus_onehot
        ),
        "F.cross_entropy on fp32 logits": torch_reference,
    }

    def step(name: str) -> None:
        grads[name] = variants[name]()

    timings = interleaved_timings({name: (lambda n=name: step(n)) for name in variants}, args.repeats)
    medians = {name: statistics.median(t) for name, t in timings.items()}
    base = medians["F.cross_entropy on fp32 logits"]
    print(
        f"# sparse MLM loss fwd+bwd, ({args.rows}, {args.vocab}) bf16 logits, cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}"
    )
    print("| variant | median ms | vs F.cross_entropy | max abs grad diff vs F.cross_entropy |")
    print("|---|---:|---:|---:|")
    reference = grads["F.cross_entropy on fp32 logits"].float()
    for name, seconds in medians.items():
        diff = (grads[name].float() - reference).abs().max().item()
        print(f"| {name} | {seconds * 1e3:.1f} | {base / seconds:.2f}× | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
