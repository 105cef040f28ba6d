import random

from curation.config import DomainConfig
from curation.domains import DomainSelector, normalise_domain
from curation.sampling import sample_per_domain


def test_sample_is_seeded_sized_and_order_independent():
    items = [(f"d{i % 3}", f"doc{i}") for i in range(600)]
    a = sample_per_domain(items, 50, seed=1)
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    assert sample_per_domain(shuffled, 50, seed=1) == a
    assert {d: len(v) for d, v in a.items()} == {"d0": 50, "d1": 50, "d2": 50}
    assert sample_per_domain(items, 50, seed=2) != a
    assert all(doc.startswith("doc") and int(doc[3:]) % 3 == int(d[1]) for d, v in a.items() for doc in v)


def test_sample_is_roughly_uniform():
    items = [("d", f"doc{i}") for i in range(10_000)]
    chosen = sample_per_domain(items, 2_000, seed=0)["d"]
    low_half = sum(int(x[3:]) < 5_000 for x in chosen)
    assert 900 < low_half < 1_100  # binomial(2000, 0.5): sd ~22


def test_domain_routing_counts_unknown_domains():
    selector = DomainSelector(
        DomainConfig(filter_required=["Music & Dance", "news"], directly_selected=["Beauty"])
    )
    assert [selector.route(d) for d in ["music_and_dance", "News", "beauty", "mathematics"]] == [
        "filter",
        "filter",
        "direct",
        None,
    ]
    assert selector.stats.as_dict() == {"kept": 3, "dropped_domain_not_selected": 1}
    assert normalise_domain("Music & Dance") == "music_and_dance"
