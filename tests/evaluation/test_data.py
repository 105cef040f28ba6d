import pandas as pd
import pytest

from evaluation.data import DataError, esci_scores, load_esci, load_glue, product_field_texts, product_text


def test_local_esci_test_split(data_dir):
    frame = load_esci(None, "test")
    assert len(frame) == 1281
    assert frame["esci_label"].value_counts().to_dict() == {"I": 495, "E": 392, "S": 369, "C": 25}
    assert sorted(set(esci_scores(frame))) == [0.0, 0.33, 0.66, 1.0]
    texts = product_text(frame)
    with_description = frame["product_description"].notna() & (frame["product_description"].str.strip() != "")
    assert all("\n" in t for t, d in zip(texts, with_description) if d)
    titles = product_field_texts(frame, "title")
    assert len(titles) == 674 < frame["product_id"].nunique() == 676, "two products repeat a title"


def test_product_texts_are_distinct_by_normalised_text_not_by_product_id():
    """A catalogue repeating a title under another id (other case, spacing, punctuation) gives it once."""
    frame = pd.DataFrame(
        {
            "product_id": ["a", "b", "c", "d", "a"],
            "product_title": ["USB-C Cable, 6 ft", "usb c  cable 6 FT", "USB-C Cable, 3 ft", " ", "x"],
        }
    )
    assert product_field_texts(frame, "title") == ["USB-C Cable, 6 ft", "USB-C Cable, 3 ft", "x"]


def test_unknown_label_names_row_and_value():
    frame = pd.DataFrame({"esci_label": ["E", "exact", "X", "I"]})
    frame.attrs["source"] = "mine.parquet"
    with pytest.raises(DataError, match=r"mine.parquet: row 2: unknown esci_label 'X'"):
        esci_scores(frame)


def test_missing_column_and_empty_split(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({"query": ["q"], "split": ["train"], "esci_label": ["E"]}).to_parquet(path)
    with pytest.raises(DataError, match="no rows"):
        load_esci(str(path), "test")
    with pytest.raises(DataError, match=r"missing column\(s\) \['product_title'\]"):
        product_text(load_esci(str(path), "train"))


def test_glue_local_tsvs(data_dir, full_data):
    sst2 = load_glue("sst2", "validation")
    assert len(sst2) == 872 and set(sst2["label"]) == {0, 1}
    stsb = load_glue("stsb", "validation")
    assert len(stsb) == 1500 and stsb["label"].between(0, 5).all()
    qnli = load_glue("qnli", "validation")
    assert (
        len(qnli) == (5463 if full_data else 1000)  # the embedded sample holds the first 1,000 dev rows
        and set(qnli["label"]) == {0, 1}
        and list(qnli.columns[:2]) == ["question", "sentence"]
    )
    assert len(load_glue("sst2", "train")) == (67349 if full_data else 3000)


def test_glue_missing_split_is_a_clear_error(data_dir):
    with pytest.raises(DataError, match="qnli split 'train'.*not found"):
        load_glue("qnli", "train")
    with pytest.raises(DataError, match="mnli"):
        load_glue("mnli", "validation")
    with pytest.raises(DataError, match="unknown GLUE task"):
        load_glue("cola", "validation")


# ----------------------------------------------------------------------------- ESCI source layouts
_FULL_LABELS = {"E": "Exact", "S": "Substitute", "C": "Complement", "I": "Irrelevant"}


def _esci_rows(data_dir):
    """Offline ESCI test rows, half of the queries moved to ``train`` (the Hub's train split is not here)."""
    frame = load_esci(None, "test").head(400).copy()
    train_queries = set(sorted(frame["query"].unique())[::2])
    frame["split"] = ["train" if q in train_queries else "test" for q in frame["query"]]
    frame["esci_label"] = frame["esci_label"].map(_FULL_LABELS)  # the Hub spells labels out
    return frame


@pytest.fixture
def private_datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _tasksource_layout(folder, rows):
    """``rows`` written like the Hub repo tasksource/esci: data/<split>-0000i-of-0000n-<hash>.parquet, no
    split column, labels spelled out, several locales (30 Spanish rows added to train)."""
    spanish = rows.head(30).assign(product_locale="es", product_title="Zapatos de cuero")
    (folder / "data").mkdir(parents=True)
    columns = [c for c in rows.columns if c != "split"]
    train = pd.concat([rows[rows["split"] == "train"], spanish])[columns]
    test = rows[rows["split"] == "test"][columns]
    half = len(train) // 2
    train.iloc[:half].to_parquet(
        folder / "data" / "train-00000-of-00002-2d36455632bef8a2.parquet", index=False
    )
    train.iloc[half:].to_parquet(
        folder / "data" / "train-00001-of-00002-18b81793a483996f.parquet", index=False
    )
    test.to_parquet(folder / "data" / "test-00000-of-00001-d48474212b95f33b.parquet", index=False)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# esci\n")
    return folder


def test_esci_in_the_tasksource_hub_layout_is_read_by_datasets(data_dir, tmp_path, private_datasets_cache):
    """A folder laid out like tasksource/esci on the Hub, read through datasets.load_dataset."""
    from evaluation.esci_similarity import SimilarityConfig, make_splits, task_data

    rows = _esci_rows(data_dir)
    repo = _tasksource_layout(tmp_path / "tasksource_esci", rows)

    got = load_esci(str(repo), "train")
    assert len(got) == (rows["split"] == "train").sum(), "us rows of the train files only"
    assert set(got["product_locale"]) == {"us"} and "Zapatos de cuero" not in set(got["product_title"])
    assert esci_scores(got) == esci_scores(rows[rows["split"] == "train"].reset_index(drop=True))
    assert len(load_esci(str(repo), "test")) == (rows["split"] == "test").sum()
    with pytest.raises(DataError, match="tasksource_esci: .*validation"):
        load_esci(str(repo), "validation")

    cfg = SimilarityConfig(protocol="official", seeds=(0,))
    (split,) = make_splits(cfg, data=str(repo))
    assert len(split.test) == (rows["split"] == "test").sum()
    assert len(split.train) + len(split.validation) == (rows["split"] == "train").sum()
    assert not set(split.train["sentence1"]) & set(split.test["sentence1"])
    assert task_data(cfg, data=str(repo))[2] == {
        "dataset_id": "tasksource/esci",
        "dataset_config": "default",
        "dataset_split": "test",
    }


def test_esci_in_the_amazon_science_layout_joins_products_per_locale(data_dir, tmp_path):
    """amazon-science/esci-data: shopping_queries_dataset/{examples,products}.parquet, one ASIN per locale."""
    rows = _esci_rows(data_dir)
    folder = tmp_path / "esci-data" / "shopping_queries_dataset"
    folder.mkdir(parents=True)
    product_columns = ["product_id", "product_locale", "product_title", "product_description"]
    examples = rows.drop(
        columns=product_columns[2:] + ["product_bullet_point", "product_brand", "product_color"]
    )
    products = rows[product_columns].drop_duplicates(["product_id", "product_locale"])
    same_asin_in_spain = products.head(5).assign(product_locale="es", product_title="Zapatos de cuero")
    pd.concat([products, same_asin_in_spain]).to_parquet(
        folder / "shopping_queries_dataset_products.parquet", index=False
    )
    examples.to_parquet(folder / "shopping_queries_dataset_examples.parquet", index=False)

    got = load_esci(str(tmp_path / "esci-data"), "train")
    expected = rows[rows["split"] == "train"].reset_index(drop=True)
    assert got["product_title"].tolist() == expected["product_title"].tolist(), "joined on (ASIN, locale)"
    assert len(load_esci(str(folder), None)) == len(rows)


def test_official_protocol_fine_tunes_on_the_hub_layout(
    data_dir, tiny_modernbert_dir, tmp_path, private_datasets_cache
):
    """CoSENT on the train files, scored on the test files, end to end (the paper's protocol)."""
    from evaluation.esci_similarity import SimilarityConfig, run_similarity

    rows = _esci_rows(data_dir)
    repo = _tasksource_layout(tmp_path / "tasksource_esci", rows)
    cfg = SimilarityConfig(
        protocol="official", epochs=1, max_seq_length=32, learning_rate=1e-3, validation_fraction=0.3
    )
    (record,) = run_similarity(
        [str(tiny_modernbert_dir)], cfg, data=str(repo), progress=False, work_dir=str(tmp_path)
    )
    row = next(r for r in record["results"] if r["metric"] == "spearman")
    assert (row["setting"], row["protocol"], row["n"]) == (
        "cosent-official",
        "official",
        (rows["split"] == "test").sum(),
    )
    assert (row["dataset_id"], row["dataset_config"], row["dataset_split"]) == (
        "tasksource/esci",
        "default",
        "test",
    )
    assert record["config"]["data"] == str(repo)


def test_a_data_file_that_is_not_parquet_is_one_line_naming_it(tmp_path, capsys):
    """`rexbert eval mlm --data pairs.csv` used to end in pyarrow's ArrowInvalid traceback."""
    from rexbert_cli.main import main

    csv = tmp_path / "pairs.csv"
    csv.write_text("query,product_title\nshoes,Running shoes\n")
    assert (
        main(["eval", "mlm", "all-MiniLM-L6-v2", "--data", str(csv), "--output-dir", str(tmp_path / "out")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{csv}: not a readable parquet file" in err and err.count("\n") == 1
