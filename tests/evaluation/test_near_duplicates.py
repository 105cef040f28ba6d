"""Normalised duplicates and MinHash near-duplicates (curation's MinHash, confirmed by exact Jaccard)."""

import itertools

import pytest

from evaluation.near_duplicates import (
    NearDuplicateIndex,
    distinct_texts,
    jaccard,
    lsh_shape,
    near_duplicate_clusters,
    normalised_text,
    words,
)


def test_normalised_text_and_distinct_texts():
    assert normalised_text("  USB-C Cable,\u00a06 FT ") == "usb c cable 6 ft"
    assert distinct_texts(["USB-C Cable, 6 ft", "usb c cable 6 FT", "--", "USB-C Cable, 3 ft"]) == [
        "USB-C Cable, 6 ft",
        "USB-C Cable, 3 ft",
    ]


def test_lsh_shape_finds_a_pair_at_the_threshold_with_99_percent():
    for threshold in (0.5, 0.8, 0.9):
        bands, rows = lsh_shape(threshold)
        assert bands * rows <= 120 and 1 - (1 - threshold**rows) ** bands >= 0.99
        assert 1 - (1 - threshold ** (rows + 1)) ** (120 // (rows + 1)) < 0.99, "as many rows as allowed"


def test_planted_near_duplicates_are_found_and_nothing_below_the_threshold():
    index = NearDuplicateIndex(0.8)
    catalogue = [
        "Amazon Basics USB-C to USB-A 2.0 Cable, 6 ft, Black",
        "Stainless Steel Insulated Water Bottle 32 oz, Leak Proof Lid",
        "Cast Iron Skillet 12-Inch Pre-Seasoned Frying Pan",
    ]
    for text in catalogue:
        index.add(text)
    assert index.matches("Amazon Basics USB-C to USB-A 2.0 Cable, 10 ft, Black") == [0], "another length"
    assert index.matches("amazon basics usb c to usb a 2 0 cable 6 ft black") == [0]
    assert index.matches("Cast Iron Skillet 10-Inch Pre-Seasoned Frying Pan") == [2]  # J = 7/9
    assert index.matches("Cast Iron Skillet 10-Inch Frying Pan") == [], "J = 6/9 < 0.8"
    assert index.matches("") == [] and index.matches("Garden hose") == []


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_index_equals_brute_force_on_esci_titles(data_dir, threshold):
    """Every pair of ESCI titles at Jaccard >= threshold is found, and only those."""
    from evaluation.data import load_esci, product_field_texts

    titles = product_field_texts(load_esci(None, "test"), "title")
    sets = [set(words(t)) for t in titles]
    expected = {
        (i, j)
        for i, j in itertools.combinations(range(len(titles)), 2)
        if jaccard(sets[i], sets[j]) >= threshold
    }
    index = NearDuplicateIndex(threshold)
    found = set()
    for j, title in enumerate(titles):
        found |= {(i, j) for i in index.matches(title)}
        index.add(title)
    assert len(expected) > 10 and found == expected
    clusters = near_duplicate_clusters(titles, threshold)
    assert all(clusters[i] == clusters[j] for i, j in expected)
