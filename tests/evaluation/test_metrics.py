import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from evaluation.metrics import accuracy, correlations, group_ranks, mean_sd, topk_accuracy


def test_correlations_against_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    y[:20] = y[0]  # ties: Spearman must use average ranks
    got = correlations(x, y)
    assert got["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert got["spearman"] == pytest.approx(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def test_accuracy_and_mean_sd():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    mean, sd = mean_sd([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and sd == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert mean_sd([0.3]) == (0.3, 0.0)


def test_topk_accuracy_against_torch_topk():
    torch.manual_seed(0)
    logits, targets = torch.randn(300, 40), torch.randint(0, 40, (300,))
    ranks = (logits > logits.gather(1, targets[:, None])).sum(1).numpy()
    got = topk_accuracy(ranks, (1, 3, 5))
    for k in (1, 3, 5):
        expected = (logits.topk(k, 1).indices == targets[:, None]).any(1).float().mean().item()
        assert got[k] == pytest.approx(expected)
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros(0), (1,))


def test_group_ranks_is_worst_token():
    assert group_ranks(np.array([0, 4, 2, 0]), [7, 7, 9, 3]).tolist() == [0, 4, 2]  # groups 3, 7, 9
