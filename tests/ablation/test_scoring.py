import numpy as np
import pytest

from ablation.scoring import entity_examples
from training.attribute_miner import AttributeMiner, char_to_token_spans

TEXTS = [
    "Xerox 006R90321 toner cartridge, 500 ml, black\nColour: Black. For WorkCentre 7132 printers.",
    "Logitech K120 keyboard 104 keys USB 2.0 black",
    "a plain sentence without anything to mine at all",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from training.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    corpus = TEXTS * 50 + [f"product {i} with size {i} cm and model AB{i:03d}" for i in range(300)]
    save_tokenizer(train_bpe_tokenizer(corpus, vocab_size=400), folder)
    return load_tokenizer(str(folder))


def test_entity_examples_mask_only_mined_span_tokens_up_to_the_share(tokenizer):
    miner = AttributeMiner(brands=["Xerox", "Logitech"])
    examples = entity_examples(TEXTS, tokenizer, miner, block_size=64, share=0.15, seed=0)
    assert len(examples) == 2  # the text without a mined span is not scored
    for text, example in zip(TEXTS, examples):
        enc = tokenizer(text, truncation=True, max_length=64, return_offsets_mapping=True)
        spans = char_to_token_spans(enc["offset_mapping"], miner.mine(text))
        in_spans = {p for start, end in spans for p in range(start, end)}
        assert example.positions and set(example.positions) <= in_spans
        assert example.targets == [enc["input_ids"][p] for p in example.positions]
        unmasked = [i for i in range(len(enc["input_ids"])) if i not in example.positions]
        assert [example.input_ids[i] for i in unmasked] == [enc["input_ids"][i] for i in unmasked]
        assert all(example.input_ids[p] == tokenizer.mask_token_id for p in example.positions)
        budget = max(1, round(0.15 * (len(enc["input_ids"]) - 2)))
        longest = max(end - start for start, end in spans)
        assert budget <= len(example.positions) < budget + longest  # whole spans until the share is met


def test_entity_examples_are_fixed_by_seed_and_content(tokenizer):
    miner = AttributeMiner(brands=["Xerox", "Logitech"])
    first = entity_examples(TEXTS, tokenizer, miner, 64, 0.15, seed=0)
    again = entity_examples(list(reversed(TEXTS)), tokenizer, miner, 64, 0.15, seed=0)[::-1]
    assert [e.positions for e in first] == [e.positions for e in again]
    draws = {
        tuple(entity_examples(TEXTS[:1], tokenizer, miner, 64, 0.15, seed=s)[0].positions) for s in range(8)
    }
    assert len(draws) > 1  # the seed chooses which spans
    assert np.all([len(p) for p in draws])
