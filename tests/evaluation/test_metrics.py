import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from evaluation.metrics import (
    ESCI_GAINS,
    accuracy,
    correlations,
    expected_average_precision,
    expected_reciprocal_rank,
    group_topk_accuracy,
    mean_sd,
    ranking_metrics,
    topk_accuracy,
    topk_hits,
)


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


def test_ranking_metrics_hand_computed_and_against_sklearn():
    from sklearn.metrics import ndcg_score

    # query a: ranked E (0.9), I (0.8), S (0.7), E (0.1); query b: ranked C (0.5), E (0.4); query c: only I
    queries = ["a", "a", "a", "a", "b", "b", "c", "c"]
    scores = [0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.3, 0.2]
    labels = ["E", "I", "S", "E", "C", "E", "I", "I"]
    gains = [ESCI_GAINS[x] for x in labels]
    got = ranking_metrics(queries, scores, gains, k=10)
    log2 = np.log2
    dcg_a = 1 / log2(2) + 0 + 0.1 / log2(4) + 1 / log2(5)
    idcg_a = 1 / log2(2) + 1 / log2(3) + 0.1 / log2(4)
    dcg_b, idcg_b = 0.01 / log2(2) + 1 / log2(3), 1 / log2(2) + 0.01 / log2(3)
    assert got["ndcg@10"] == pytest.approx((dcg_a / idcg_a + dcg_b / idcg_b) / 2)
    assert got["ndcg@10"] == pytest.approx(
        (ndcg_score([gains[:4]], [scores[:4]]) + ndcg_score([gains[4:6]], [scores[4:6]])) / 2
    )
    assert got["map"] == pytest.approx(((1 + 2 / 4) / 2 + 1 / 2) / 2)  # a: E at ranks 1 and 4; b: E at 2
    assert got["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert (got["ndcg_queries"], got["map_queries"]) == (2, 2), "query c has no positive gain"


def test_reciprocal_rank_of_tied_scores_is_its_expectation():
    # relevant tied with one irrelevant at the top: rank 1 or 2, each with probability 1/2
    assert expected_reciprocal_rank(np.array([0.5, 0.5, 0.1]), np.array([True, False, False])) == 0.75
    # one above, then 2 relevant among 4 tied: first relevant at tie position 1/2/3 w.p. 3/6, 2/6, 1/6
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5])
    relevant = np.array([False, True, False, True, False])
    assert expected_reciprocal_rank(scores, relevant) == pytest.approx(3 / 6 / 2 + 2 / 6 / 3 + 1 / 6 / 4)
    # brute force over every order of the tie
    from itertools import permutations

    ranks = [
        1 + 1 + next(i for i, d in enumerate(order) if relevant[d]) for order in permutations([1, 2, 3, 4])
    ]
    assert expected_reciprocal_rank(scores, relevant) == pytest.approx(np.mean([1 / r for r in ranks]))
    assert expected_reciprocal_rank(np.array([0.3, 0.7]), np.array([True, False])) == 0.5, "no tie: 1 / rank"
    assert ranking_metrics(["q", "q"], [0.5, 0.5], [1.0, 0.0])["mrr"] == 0.75, "a tie is not won for free"


def _pytrec_ap(scores, relevant, names):
    """pytrec_eval's AP (trec_eval; tied scores ordered by document name) with documents called ``names``."""
    import pytrec_eval

    qrel = {"q": {n: int(r) for n, r in zip(names, relevant)}}
    run = {"q": {n: float(s) for n, s in zip(names, scores)}}
    return pytrec_eval.RelevanceEvaluator(qrel, {"map"}).evaluate(run)["q"]["map"]


def test_average_precision_of_tied_scores_is_its_expectation_as_mrr_and_ndcg():
    """MAP treats ties as MRR and nDCG do: the mean over every order of the tied documents -- checked by
    brute force, and against pytrec_eval averaged over every naming of the documents (trec_eval breaks ties
    by name); without ties it is sklearn's and pytrec_eval's AP."""
    from itertools import permutations

    from sklearn.metrics import average_precision_score

    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1])
    relevant = np.array([False, True, False, True, False, True, False, True])

    def ap_of_order(order):  # AP of one ranking (document indices, best first)
        hits = np.cumsum(relevant[order])
        return float(np.mean([hits[i] / (i + 1) for i in range(len(order)) if relevant[order[i]]]))

    runs = [[0], [1, 2, 3, 4], [5, 6], [7]]
    expected = np.mean(
        [
            ap_of_order([d for part in parts for d in part])
            for a in permutations(runs[1])
            for b in permutations(runs[2])
            for parts in [([0], a, b, [7])]
        ]
    )
    assert expected_average_precision(scores, relevant) == pytest.approx(expected, abs=1e-12)
    names = [f"d{i}" for i in range(len(scores))]
    by_naming = [  # every naming of the tied documents among themselves: every order of each tie
        _pytrec_ap(scores, relevant, ["d0", *[names[i] for i in a], *[names[i] for i in b], "d7"])
        for a in permutations(runs[1])
        for b in permutations(runs[2])
    ]
    assert np.mean(by_naming) == pytest.approx(expected, abs=1e-4)  # trec_eval prints 4 decimals
    # the input order does not matter (sklearn's AP puts every tied document at the tie's last rank)
    shuffled = np.random.default_rng(0).permutation(len(scores))
    assert expected_average_precision(scores[shuffled], relevant[shuffled]) == pytest.approx(expected)
    assert average_precision_score(relevant, scores) < expected - 0.01, "sklearn's AP is pessimistic on ties"
    # MAP, MRR and nDCG agree on a tie: a relevant and an irrelevant document tied at the top
    got = ranking_metrics(["q", "q", "q"], [0.5, 0.5, 0.1], [1.0, 0.0, 0.0])
    assert got["map"] == got["mrr"] == 0.75
    # no ties: sklearn and pytrec_eval
    untied = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    untied_ap = expected_average_precision(untied, relevant)
    assert untied_ap == pytest.approx(average_precision_score(relevant, untied))
    assert untied_ap == pytest.approx(_pytrec_ap(untied, relevant, names))


def test_ranking_metrics_equal_pytrec_eval_without_ties():
    """nDCG@10, MAP and MRR of random untied runs over 30 queries: trec_eval's numbers (gains x 100 as
    integer relevance: nDCG does not change with the scale; relevant = E)."""
    import pytrec_eval

    rng = np.random.default_rng(3)
    queries, scores, gains = [], [], []
    for q in range(30):
        n = int(rng.integers(2, 15))
        queries += [f"q{q}"] * n
        scores += rng.permutation(n).astype(float).tolist()  # untied
        gains += rng.choice([1.0, 0.1, 0.01, 0.0], size=n).tolist()
        gains[-1] = 1.0  # every query has an E (MAP / MRR defined)
    ours = ranking_metrics(queries, scores, gains, k=10)
    qrel, run = {}, {}
    for i, (q, s, g) in enumerate(zip(queries, scores, gains)):
        qrel.setdefault(q, {})[f"d{i}"] = int(round(g * 100))
        run.setdefault(q, {})[f"d{i}"] = s
    ndcg = pytrec_eval.RelevanceEvaluator(qrel, {"ndcg_cut_10"}).evaluate(run)
    assert ours["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ndcg.values()]), abs=1e-6)
    relevant = {q: {d: int(r == 100) for d, r in docs.items()} for q, docs in qrel.items()}
    ranked = pytrec_eval.RelevanceEvaluator(relevant, {"map", "recip_rank"}).evaluate(run)
    assert ours["map"] == pytest.approx(np.mean([v["map"] for v in ranked.values()]), abs=1e-6)
    assert ours["mrr"] == pytest.approx(np.mean([v["recip_rank"] for v in ranked.values()]), abs=1e-6)
