from training.attribute_miner import AttributeMiner, char_to_token_spans
from training.tokenizer import train_bpe_tokenizer


def _kinds(text, miner):
    return {text[s.start : s.end]: s.kind for s in miner.mine(text)}


def test_mines_each_kind():
    miner = AttributeMiner(brands=["Sony"])
    text = "Sony WH-1000XM4 wireless headphones. Color: Black, Weight: 254 g, Box 30 x 20 x 5 cm, 2 pcs"
    found = _kinds(text, miner)
    assert found["Sony"] == "brand"
    assert found["WH-1000XM4"] == "model_number"
    assert found["headphones"] == "product_type"
    assert found["Black"] == "attribute_value"
    assert found["30 x 20 x 5 cm"] == "dimension"
    assert found["2 pcs"] == "size_unit"
    assert found["254 g"] in {"attribute_value", "size_unit"}


def test_spans_do_not_overlap_and_plain_prose_is_quiet():
    miner = AttributeMiner()
    spans = miner.mine("Resolution: 1920 x 1080 pixels, 27 inch monitor")
    for a, b in zip(spans, spans[1:]):
        assert a.end <= b.start
    assert miner.mine("the quiet river ran past the old town at dusk") == []


def test_fit_learns_brands_from_titles():
    titles = ["Xerox 006R90321 toner", "Xerox 106R01 drum", "HP 305 ink", "HP 912 ink", "Once only"]
    miner = AttributeMiner().fit(titles)
    assert {"Xerox", "HP"} <= miner.brands and "Once" not in miner.brands


def test_char_spans_map_to_token_spans():
    corpus = ["Color: Black and Size: Large shirt for men"] * 50 + ["some other words here"] * 50
    tok = train_bpe_tokenizer(corpus, vocab_size=300)
    text = "Color: Black, shirt"
    enc = tok(text, return_offsets_mapping=True)
    spans = AttributeMiner().mine(text)
    token_spans = char_to_token_spans(enc["offset_mapping"], spans)
    assert len(token_spans) == len(spans) == 2
    for (a, b), span in zip(token_spans, spans):
        decoded = tok.decode(enc["input_ids"][a:b]).strip()
        assert decoded == text[span.start : span.end]
