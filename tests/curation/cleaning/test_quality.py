"""Our quality heuristics against datatrove's filters on real documents (same decisions, same reason
names)."""

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter

from curation.cleaning.quality import QualityFilter, count_sentences, words_of
from curation.config import QualityConfig


def _reference(kind):
    return {
        "gopher": GopherQualityFilter(),
        "fineweb": FineWebQualityFilter(),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
    }[kind]


def _decisions(texts, kind, tokenizer):
    ours = QualityFilter(
        QualityConfig(
            gopher=kind == "gopher", c4=kind == "c4", fineweb=kind == "fineweb", tokenizer=tokenizer
        )
    )
    ref = _reference(kind)
    pairs = []
    for i, text in enumerate(texts):
        verdict = ref.filter(Document(text=text, id=str(i)))
        pairs.append((None if verdict is True else verdict[1], ours.check(text)[0]))
    return pairs


@pytest.fixture(scope="module")
def docs(real_texts):
    commerce, other = real_texts
    return commerce[:100] + other[:60] + other[-90:]  # products, Gutenberg, WikiText + Common Crawl


@pytest.mark.parametrize("kind", ["gopher", "c4", "fineweb"])
def test_spacy_tokenizer_reproduces_datatrove_exactly(docs, kind):
    pairs = _decisions(docs, kind, "spacy")
    assert len(pairs) >= 240
    mismatches = [(i, ref, ours) for i, (ref, ours) in enumerate(pairs) if ref != ours]
    assert mismatches == []
    assert len({ref for ref, _ in pairs}) >= 2  # the sample exercises kept and dropped documents


@pytest.mark.parametrize("kind, min_agreement", [("gopher", 0.97), ("c4", 0.99), ("fineweb", 1.0)])
def test_fast_regex_tokenizer_agrees_with_datatrove(docs, kind, min_agreement):
    pairs = _decisions(docs, kind, "regex")
    same_keep = sum((ref is None) == (ours is None) for ref, ours in pairs) / len(pairs)
    assert same_keep >= min_agreement


def test_regex_words_match_spacy_on_common_constructions():
    from datatrove.utils.text import split_into_words

    text = (
        "Mrs. Smith didn't buy the 24-105mm lens (it's $1,299.99) at www.shop.com, but... "
        "the U.S. well-known DDR2-800 kit-"
    )
    assert words_of(text) == split_into_words(text)


def test_sentence_counting_follows_the_sentencizer():
    assert count_sentences(words_of('He said "stop." Then left! Why?')) == 3
    assert count_sentences(words_of("No terminal punctuation here")) == 1


def test_named_reasons():
    q = QualityFilter(QualityConfig())
    assert q.check("too short")[0] == "gopher_short_doc"
    prose = (
        "The shop sells the lamp and the chair with a warranty to all of the customers that have "
        "asked about it. "
    ) * 8
    assert q.check(prose)[0] is None
    assert q.check(prose + "\nlorem ipsum dolor sit amet, and the rest.")[0] == "lorem_ipsum"


@pytest.mark.parametrize("kind", ["gopher", "c4", "fineweb"])
def test_hybrid_tokenizer_keeps_datatrove_decisions(docs, kind):
    pairs = _decisions(docs, kind, "hybrid")
    assert all((ref is None) == (ours is None) for ref, ours in pairs)
    assert sum(ref == ours for ref, ours in pairs) / len(pairs) >= 0.995  # reason names too, nearly always
