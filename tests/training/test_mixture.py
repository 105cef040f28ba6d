"""The mixture plan: shard ranges that tile every source, token shares by weight, the annealed schedule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from training.mixture import (
    SHARDS_PER_PHASE,
    MixturePlan,
    PlannedSource,
    cumulative_domain_share,
    domain_share,
    temperature_weights,
)
from training.recipe import MixtureConfig


def test_temperature_and_annealing_schedule():
    assert temperature_weights([9, 1], 1.0).tolist() == pytest.approx([0.9, 0.1])
    assert temperature_weights([9, 1], 1e9).tolist() == pytest.approx([0.5, 0.5])
    mix = MixtureConfig(domain_start=0.2, domain_end=0.8)
    assert [domain_share(mix, p) for p in (0, 0.5, 1)] == pytest.approx([0.2, 0.5, 0.8])
    cos = MixtureConfig(domain_start=0.0, domain_end=1.0, schedule="cosine")
    assert domain_share(cos, 0.25) < 0.25 and domain_share(cos, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "step"])
def test_the_cumulative_share_is_the_exact_integral_and_never_decreases(schedule):
    mix = MixtureConfig(domain_start=0.9, domain_end=0.1, schedule=schedule)  # decreasing: the hard case
    for p in np.linspace(0, 1, 41):
        exact, _ = quad(lambda q: domain_share(mix, q), 0, p, points=[0.5])
        assert cumulative_domain_share(mix, p) == pytest.approx(exact, abs=1e-9)
    values = [cumulative_domain_share(mix, p) for p in np.linspace(0, 1.5, 601)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert cumulative_domain_share(mix, 1.5) == pytest.approx(cumulative_domain_share(mix, 1.0) + 0.5 * 0.1)


def _plan(
    mixture, tokens=1_000_000, shard_documents=500, means=(100.0, 10.0, 50.0), weights=(0.75, 0.25, 1.0)
):
    sources = [
        PlannedSource("web", False, weights[0], means[0]),
        PlannedSource("books", False, weights[1], means[1]),
        PlannedSource("products", True, weights[2], means[2]),
    ]
    return MixturePlan(sources, mixture, tokens, shard_documents)


def test_shards_tile_every_source_and_split_the_phase():
    plan = _plan(MixtureConfig(domain_start=0.2, domain_end=0.9))
    assert plan.width <= 1 / SHARDS_PER_PHASE and plan.shards * plan.width >= 1.0
    for source in range(3):
        assert plan.position(source, 0) == 0
        for shard in range(plan.shards + 3):  # shards past the planned ones continue the same orders
            assert plan.ranges(shard)[source].stop == plan.ranges(shard + 1)[source].start
    documents = [sum(r.stop - r.start for r in plan.ranges(k)) for k in range(plan.shards)]
    assert 250 < np.median(documents) < 1000  # about shard_documents each


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 1.0)])
def test_source_weights_are_token_shares_not_document_shares(weights):
    """A source of long documents must not crowd out one of short records: weights 2 : 1 give 2/3 of the
    group's tokens to the first source whatever the document lengths (here 20× apart)."""
    w = temperature_weights(weights, 1.0)
    sources = [PlannedSource("long", True, w[0], 200.0), PlannedSource("short", True, w[1], 10.0)]
    plan = MixturePlan(sources, MixtureConfig(domain_start=1.0, domain_end=1.0), 2_000_000, 1000)
    drawn = [plan.position(s, plan.shards) * sources[s].mean_tokens for s in range(2)]
    assert drawn[0] / sum(drawn) == pytest.approx(weights[0] / sum(weights), abs=0.002)


def test_the_shard_order_follows_the_annealed_domain_share():
    mix = MixtureConfig(domain_start=0.1, domain_end=0.9)
    plan = _plan(mix)
    means = np.array([s.mean_tokens for s in plan.sources])
    is_domain = np.array([s.is_domain for s in plan.sources])
    tenth_tokens = np.zeros((10, 2))
    for shard in range(plan.shards):
        ranges, source, progress = plan.order(shard)
        assert np.all(np.diff(progress) >= 0)  # merged by progress
        assert shard * plan.width <= progress.min() and progress.max() < (shard + 1) * plan.width
        assert [int((source == s).sum()) for s in range(3)] == [r.stop - r.start for r in ranges]
        keep = progress < 1.0
        np.add.at(
            tenth_tokens,
            (np.minimum(9, (10 * progress[keep]).astype(int)), is_domain[source[keep]].astype(int)),
            means[source[keep]],
        )
    realised = tenth_tokens[:, 1] / tenth_tokens.sum(axis=1)
    expected = [domain_share(mix, (k + 0.5) / 10) for k in range(10)]
    assert realised == pytest.approx(expected, abs=0.03)


def test_a_lone_group_takes_every_token():
    sources = [PlannedSource("web", False, 1.0, 100.0)]
    plan = MixturePlan(sources, MixtureConfig(), 100_000, 10_000)
    assert plan.due(0, 1.0) == pytest.approx(100_000) and plan.shards == 9
