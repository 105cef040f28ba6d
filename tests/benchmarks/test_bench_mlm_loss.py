"""benchmarks/bench_mlm_loss.py on a small input."""


def test_mlm_loss_benchmark_agrees_with_torch_and_restores_the_package_loss(capsys):
    """Every variant's gradient matches F.cross_entropy's, and timing the shipped functions leaves the
    package's CPU versions in place afterwards."""
    from benchmarks import bench_mlm_loss
    from modeling_rexbert import cross_entropy_cpu
    from modeling_rexbert.modeling_rexbert import _SparseCrossEntropy

    assert bench_mlm_loss.main(["--rows", "40", "--vocab", "30000", "--repeats", "2"]) == 0
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "ms" not in line
    ]
    assert len(rows) == 3 and all(float(line.split("|")[-2]) < 1e-6 for line in rows), rows
    assert _SparseCrossEntropy.log_sum_exp is cross_entropy_cpu.log_sum_exp
    assert _SparseCrossEntropy.softmax_minus_onehot is cross_entropy_cpu.softmax_minus_onehot
