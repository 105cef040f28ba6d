"""The evaluation text never reaches training: checked on the files the cells' recipes actually read."""

import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ablation.config import load_ablation
from ablation.heldout import GUTENBERG, WIKITEXT, evaluation_texts, split_study_data
from ablation.variants import base_recipe, study_recipe
from rexbert_cli.heldout import ESCI, ICECAT
from training.data import load_source


@pytest.fixture(scope="module")
def split(data_dir, tmp_path_factory):
    return split_study_data(data_dir, tmp_path_factory.mktemp("split"), general_share=8, min_chars=200)


def _training_text(recipe) -> str:
    sources = (*recipe.data.general, *recipe.data.domain)
    return "\n".join(text for s in sources for text in load_source(s).texts)


def test_study_recipe_reads_only_training_files(split, write_study, data_dir):
    originals = {(data_dir / f).resolve() for f in (ICECAT, ESCI, WIKITEXT, GUTENBERG)}
    recipe = study_recipe(load_ablation(write_study()), split, None)
    paths = [s.path for s in (*recipe.data.general, *recipe.data.domain)]
    assert not any(str(o) in p for o in originals for p in paths)
    assert {str(p) for p in split.training.values()} <= set(paths)


@pytest.mark.slow  # a brute-force substring search of every held-out text in every training document
def test_heldout_evaluation_texts_never_occur_in_training_documents(split, write_study):
    recipe = study_recipe(load_ablation(write_study()), split, None)
    for source in (*recipe.data.general, *recipe.data.domain):
        source.max_docs = None  # every document the cells could read
    training = " ".join(_training_text(recipe).split())
    texts = evaluation_texts(split, recipe, max_texts=300, entity_max_texts=300, seed=0)
    assert min(len(t) for t in texts.fields.values()) > 0 and texts.products
    for field, values in [*texts.fields.items(), ("products", texts.products)]:
        leaked = [t for t in values if " ".join(t.split()) in training]
        assert not leaked, (
            f"{field}: {len(leaked)} held-out texts are in the training data, e.g. {leaked[0]!r}"
        )
    # nor nearly: brute force (no MinHash) over every training line for a sample of the scored titles
    from evaluation.near_duplicates import jaccard, words

    lines = {frozenset(words(line)) for line in _training_text(recipe).splitlines() if line.strip()}
    for title in texts.fields["product_title"][:40]:
        mine = set(words(title))
        twin = next((line for line in lines if jaccard(mine, line) >= 0.8), None)
        assert twin is None, (title, sorted(twin))
    assert texts.filtered["product_title"]["near_duplicate"] > 0


def test_split_holds_out_whole_articles_book_tails_and_products(split, data_dir):
    heldout_ids = set(pq.read_table(split.icecat_heldout).column("id").to_pylist())
    train_ids = set(pq.read_table(split.training[(data_dir / ICECAT).resolve()]).column("id").to_pylist())
    assert heldout_ids and not heldout_ids & train_ids
    assert len(heldout_ids) + len(train_ids) == pq.read_metadata(data_dir / ICECAT).num_rows
    esci_train = pq.read_table(split.training[(data_dir / ESCI).resolve()])
    assert "test" not in set(esci_train.column("split").to_pylist())
    original = zipfile.ZipFile(data_dir / GUTENBERG)
    trained = zipfile.ZipFile(split.training[(data_dir / GUTENBERG).resolve()])
    for name in trained.namelist():  # every book keeps its head and loses its tail
        full, head = original.read(name), trained.read(name)
        assert full.startswith(head) and 0.8 * len(full) < len(head) < len(full)
    general = [json.loads(line)["text"] for line in split.general_heldout.read_text().splitlines()]
    assert len(general) > 50 and min(map(len, general)) >= 200


def test_split_is_deterministic(split, data_dir, tmp_path):
    again = split_study_data(data_dir, tmp_path, general_share=8, min_chars=200)
    assert split.general_heldout.read_bytes() == again.general_heldout.read_bytes()
    for original, path in split.training.items():
        assert path.read_bytes() == again.training[original].read_bytes(), original


def test_a_written_split_is_reused_from_any_working_folder(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = split_study_data(data_dir, tmp_path.relative_to(tmp_path) / "split", 8, 200)
    stamp = first.general_heldout.stat().st_mtime_ns
    monkeypatch.chdir(data_dir)  # another working folder: the marker still locates the files
    again = split_study_data(data_dir, tmp_path / "split", 8, 200)
    assert again == first and all(p.is_absolute() and p.is_file() for p in again.training.values())
    assert again.general_heldout.stat().st_mtime_ns == stamp  # reused untouched, not rewritten


def test_base_recipe_reads_the_original_files(write_study, data_dir):
    # the negative control of the first test: without the split, the recipe would train on held-out text
    recipe = base_recipe(load_ablation(write_study()))
    original = (data_dir / ICECAT).resolve()  # the data folder may be reached through a link
    assert any(Path(s.path).resolve() == original for s in recipe.data.domain)


def test_near_duplicates_of_training_lines_are_found_by_line_and_wrapped_paragraph():
    from ablation.heldout import near_duplicates_in_training

    heldout = [
        "Tripp Lite Cat6 Gigabit Molded Slim UTP Ethernet Cable Blue 15 ft",  # another length below: J 11/13
        "Supermicro SATA cable 60 cm Red",  # another length: J 5/7, under 0.8
        "It was a bright cold day in April and the clocks were striking thirteen",
    ]
    training = [
        "Tripp Lite Cat6 Gigabit Molded Slim UTP Ethernet Cable Blue 25 ft\nPatch cord",  # title, description
        "Supermicro SATA cable 120 cm Red",
        "Chapter 1\n\nIt was a bright cold day in April, and\nthe clocks were striking twelve",  # wrapped
    ]
    assert near_duplicates_in_training(heldout, training) == {heldout[0], heldout[2]}
    assert near_duplicates_in_training(heldout, training, threshold=0.7) == set(heldout)
    assert near_duplicates_in_training(heldout, training, threshold=0.9) == set()


def test_heldout_texts_drop_near_duplicates_of_training_text_and_report_the_share(
    split, write_study, monkeypatch
):
    """Planted training documents: one held-out title verbatim, one with a word inserted (Jaccard >= 0.8).
    Neither is scored or used for validation, the counts say why, and validation texts are disjoint from the
    scored ones."""
    import ablation.heldout as heldout
    from evaluation.near_duplicates import words

    recipe = study_recipe(load_ablation(write_study()), split, None)
    titles = [
        t for t in pq.read_table(split.icecat_heldout).column("title").to_pylist() if len(words(t)) >= 8
    ]
    verbatim, near = titles[0], titles[1]
    first, rest = near.split(" ", 1)
    planted = [f"Some catalogue\n{verbatim}", f"{first} Refurbished {rest}"]  # one word more: J >= 8/9
    monkeypatch.setattr(heldout, "training_documents", lambda recipe: iter(planted))
    texts = evaluation_texts(split, recipe, max_texts=50, entity_max_texts=20, seed=0, validation_texts=30)
    used = set(texts.fields["product_title"]) | set(texts.validation["product_title"])
    assert verbatim not in used and near not in used
    counts = texts.filtered["product_title"]
    assert counts["verbatim"] >= 1 and counts["near_duplicate"] >= 1
    assert counts["near_duplicate_share"] == round(counts["near_duplicate"] / counts["candidates"], 4)
    monkeypatch.setattr(heldout, "training_documents", lambda recipe: iter(planted[:1]))
    unfiltered = evaluation_texts(split, recipe, max_texts=5000, entity_max_texts=20, seed=0)
    assert near in unfiltered.fields["product_title"], "the negative control: without its twin it is scored"
    for name, values in texts.validation.items():
        assert len(values) == 30 and not set(values) & set(texts.fields[name]), name
