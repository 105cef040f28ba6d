"""The evaluation text never reaches training: checked on the files the cells' recipes actually read."""

import json
import zipfile

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
    assert any(str(data_dir / ICECAT) in s.path for s in recipe.data.domain)
