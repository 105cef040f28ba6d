"""benchmarks/bench_mlm_loss.py on a small input."""


def test_mlm_loss_benchmark_variants_agree_with_torch(capsys):
    """Every variant's gradient matches F.cross_entropy's (the package's over several row chunks)."""
    from benchmarks import bench_mlm_loss

    assert bench_mlm_loss.main(["--rows", "40", "--vocab", "30000", "--repeats", "2"]) == 0
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "ms" not in line
    ]
    assert len(rows) == 3 and all(float(line.split("|")[-2]) < 1e-6 for line in rows), rows
