import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from evaluation.metrics import accuracy, correlations, group_topk_accuracy, mean_sd, topk_accuracy, topk_hits


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


def _no_ties(above):
    return np.stack([np.asarray(above), np.zeros(len(above), dtype=int)], axis=1)


def test_topk_accuracy_against_torch_topk():
    torch.manual_seed(0)
    logits, targets = torch.randn(300, 40), torch.randint(0, 40, (300,))
    above = (logits > logits.gather(1, targets[:, None])).sum(1).numpy()
    got = topk_accuracy(_no_ties(above), (1, 3, 5))
    for k in (1, 3, 5):
        expected = (logits.topk(k, 1).indices == targets[:, None]).any(1).float().mean().item()
        assert got[k] == pytest.approx(expected)
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((0, 2)), (1,))


def test_tied_target_counts_its_expected_position():
    # 2 entries above, tied with 3 others: positions 2..5 equally likely
    ranks = np.array([[2, 3]])
    assert [float(topk_hits(ranks, k)[0]) for k in (1, 2, 3, 4, 5, 6, 7)] == [0, 0, 0.25, 0.5, 0.75, 1, 1]


def test_word_recovered_only_if_every_token_is():
    # word 7: tokens at rank 0 and 4; word 9: rank 2; word 3: rank 0
    ranks = _no_ties([0, 4, 2, 0])
    assert group_topk_accuracy(ranks, [7, 7, 9, 3], (1, 3, 5)) == {1: 1 / 3, 3: 2 / 3, 5: 1.0}
    tied = np.array([[0, 1], [0, 1]])  # two positions, each a coin flip at k=1
    assert group_topk_accuracy(tied, [0, 0], (1,))[1] == pytest.approx(0.25)
