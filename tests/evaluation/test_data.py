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
    assert len(titles) == frame["product_id"].nunique()


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
