"""Evaluation data: ESCI pairs / product texts and GLUE tasks, from local files or the Hugging Face Hub.

Every loader validates its columns and refuses empty splits with an error naming the source, so a wrong
file fails at load time and not deep inside a trainer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rexbert_common import UserError

ESCI_SCORES = {"E": 1.0, "S": 0.66, "C": 0.33, "I": 0.0}  # paper §6: Exact/Substitute/Complement/Irrelevant
_LABEL_KEYS = {
    "e": "E",
    "exact": "E",
    "s": "S",
    "substitute": "S",
    "c": "C",
    "complement": "C",
    "i": "I",
    "irrelevant": "I",
}
ESCI_LOCAL = ("esci_union_with_text", "esci_union_with_text.parquet")
ESCI_HUB = "tasksource/esci"
PRODUCT_FIELDS = {"title": "product_title", "description": "product_description"}


class DataError(UserError, ValueError):
    """Missing column, empty split, unknown label, missing file: always names the source."""


def data_root() -> Path:
    """``$REXBERT_DATA_DIR``, else the embedded sample (``rexbert_common.data``)."""
    from rexbert_common.data import data_dir

    root = data_dir()
    if not root.is_dir():
        raise DataError(f"data folder {root} not found: set REXBERT_DATA_DIR or pass an explicit data path")
    return root


def require_columns(frame: pd.DataFrame, columns: list[str] | tuple[str, ...], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def require_rows(frame: pd.DataFrame, source: str) -> None:
    if len(frame) == 0:
        raise DataError(f"{source}: no rows (empty split or filter)")


# ----------------------------------------------------------------------------------------------- ESCI
ESCI_OFFICIAL_FILES = (
    "shopping_queries_dataset_examples.parquet",
    "shopping_queries_dataset_products.parquet",
)


def _official_esci_folder(path: Path) -> Path | None:
    """The folder holding amazon-science/esci-data's examples + products parquet files, if ``path`` is one."""
    for folder in (path, path / "shopping_queries_dataset"):
        if all((folder / name).is_file() for name in ESCI_OFFICIAL_FILES):
            return folder
    return None


def _read_official_esci(folder: Path, split: str | None) -> pd.DataFrame:
    """amazon-science/esci-data layout: examples (with ``split``) joined to products on (id, locale)."""
    examples_file, products_file = (folder / name for name in ESCI_OFFICIAL_FILES)
    # filtered while reading (English rows only, as load_esci keeps): the full files are 2.6M examples and
    # 1.8M products with descriptions
    us = [("product_locale", "=", "us")]
    examples = pd.read_parquet(examples_file, filters=us + ([("split", "=", split)] if split else []))
    require_columns(examples, ["product_id", "product_locale", "split"], str(examples_file))
    products = pd.read_parquet(products_file, filters=us)
    require_columns(products, ["product_id", "product_locale", "product_title"], str(products_file))
    # ESCI reuses an ASIN across locales with a different catalogue text: join on both keys
    return examples.merge(products, on=["product_id", "product_locale"], how="left")


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow

    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowInvalid, OSError) as error:  # a CSV, a JSON file, a truncated download
        raise DataError(f"{path}: not a readable parquet file ({' '.join(str(error).split())})") from None


def load_esci(source: str | None = None, split: str | None = "test") -> pd.DataFrame:
    """ESCI rows (official column names) of one split, English (``us``) locale only.

    Args:
        source: one of
            * None: ``$REXBERT_DATA_DIR/esci_union_with_text`` (offline: 1,281 ``test`` rows with text);
            * a parquet file, or a folder of parquet files, with a ``split`` column;
            * a folder in the layout of amazon-science/esci-data
              (``[shopping_queries_dataset/]shopping_queries_dataset_{examples,products}.parquet``);
            * a Hub dataset id (``tasksource/esci``), or a local folder laid out like a Hub dataset
              repository (``data/<split>-00000-of-0000N-*.parquet``), read by ``datasets.load_dataset``.
        split: the split (``split`` column, or the Hub split); None keeps all rows.
    """
    if source is None:
        source = str(data_root().joinpath(*ESCI_LOCAL))
    path = Path(source)
    official = _official_esci_folder(path) if path.is_dir() else None
    if official is not None:
        frame = _read_official_esci(official, split)
    elif path.is_file() or (path.is_dir() and any(path.glob("*.parquet"))):
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        frame = pd.concat([_read_parquet(f) for f in files], ignore_index=True)
        if split is not None and "split" in frame.columns:
            frame = frame[frame["split"] == split].reset_index(drop=True)
    elif path.is_dir() and not any(path.rglob("*.parquet")):
        raise DataError(f"{source}: no parquet files (nor data/<split>-*.parquet of a Hub dataset layout)")
    else:
        from datasets import load_dataset

        try:
            frame = load_dataset(source, split=split or "train").to_pandas()
        except ValueError as error:  # unknown split: datasets names the ones it found
            raise DataError(f"{source}: {str(error).splitlines()[0]}") from error
    name = f"{source} (split={split})"
    if "product_locale" in frame.columns:  # the paper evaluates English (us) pairs
        frame = frame[frame["product_locale"].fillna("us") == "us"].reset_index(drop=True)
    require_rows(frame, name)
    frame.attrs["source"] = name
    return frame


def esci_scores(frame: pd.DataFrame) -> list[float]:
    """E/S/C/I (or Exact/…) -> 1.0/0.66/0.33/0.0; any other value is an error naming its row."""
    source = frame.attrs.get("source", "esci")
    require_columns(frame, ["esci_label"], source)
    scores = []
    for row, label in enumerate(frame["esci_label"].tolist()):
        key = None if label is None or pd.isna(label) else _LABEL_KEYS.get(str(label).strip().lower())
        if key is None:
            raise DataError(f"{source}: row {row}: unknown esci_label {label!r} (expected E/S/C/I)")
        scores.append(ESCI_SCORES[key])
    return scores


def product_text(frame: pd.DataFrame, max_description_chars: int | None = None) -> list[str]:
    """Title, plus the description (when present) on a new line; the model's tokenizer truncates later."""
    source = frame.attrs.get("source", "esci")
    require_columns(frame, ["product_title"], source)
    titles = frame["product_title"].fillna("").astype(str).tolist()
    if "product_description" not in frame.columns:
        return [t.strip() for t in titles]
    texts = []
    for title, description in zip(titles, frame["product_description"].tolist()):
        description = "" if description is None or pd.isna(description) else str(description).strip()
        if max_description_chars is not None:
            description = description[:max_description_chars]
        texts.append(f"{title.strip()}\n{description}" if description else title.strip())
    return texts


def product_field_texts(frame: pd.DataFrame, field: str) -> list[str]:
    """Distinct non-empty product titles or descriptions, in first-occurrence order.

    Distinct by *normalised text* (:func:`evaluation.near_duplicates.distinct_texts`: same words in the same
    order, whatever the case, spacing or punctuation), not by product id: a catalogue repeats titles under
    other ids, and a repeated text packed beside itself can be copied instead of predicted.
    """
    from evaluation.near_duplicates import distinct_texts

    source = frame.attrs.get("source", "esci")
    if field not in PRODUCT_FIELDS:
        raise DataError(f"field={field!r}: expected one of {list(PRODUCT_FIELDS)}")
    column = PRODUCT_FIELDS[field]
    require_columns(frame, [column], source)
    texts = distinct_texts(str(t).strip() for t in frame[column].tolist() if t is not None and not pd.isna(t))
    if not texts:
        raise DataError(f"{source}: column {column!r} has no non-empty text")
    return texts


# ----------------------------------------------------------------------------------------------- GLUE
@dataclass(frozen=True)
class GlueTask:
    """Args: hub_config: nyu-mll/glue config; text_columns: one or two input columns (Hub names);
    num_labels: 1 = regression; local_columns: TSV column -> Hub column; label_map: TSV label -> id;
    local_splits: split -> TSV file name."""

    name: str
    hub_config: str
    text_columns: tuple[str, ...]
    num_labels: int
    local_columns: dict
    label_map: dict | None
    local_splits: dict


_SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
GLUE_TASKS = {
    "sst2": GlueTask(
        "sst2", "sst2", ("sentence",), 2, {"sentence": "sentence", "label": "label"}, None, _SPLITS
    ),
    "qnli": GlueTask(
        "qnli",
        "qnli",
        ("question", "sentence"),
        2,
        {"question": "question", "sentence": "sentence", "label": "label"},
        {"entailment": 0, "not_entailment": 1},
        _SPLITS,
    ),
    "qqp": GlueTask(
        "qqp",
        "qqp",
        ("question1", "question2"),
        2,
        {"question1": "question1", "question2": "question2", "is_duplicate": "label"},
        None,
        _SPLITS,
    ),
    "mnli": GlueTask(
        "mnli",
        "mnli",
        ("premise", "hypothesis"),
        3,
        {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"},
        {"entailment": 0, "neutral": 1, "contradiction": 2},
        {
            "train": "train.tsv",
            "validation": "dev_matched.tsv",
            "validation_matched": "dev_matched.tsv",
            "validation_mismatched": "dev_mismatched.tsv",
        },
    ),
    "stsb": GlueTask(
        "stsb",
        "stsb",
        ("sentence1", "sentence2"),
        1,
        {"sentence1": "sentence1", "sentence2": "sentence2", "score": "label"},
        None,
        _SPLITS,
    ),
}
GLUE_HUB = "nyu-mll/glue"


def glue_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {name!r}: expected one of {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def load_glue(task: str, split: str, data_dir: str | None = None, hub: bool = False) -> pd.DataFrame:
    """One GLUE split with Hub column names (text columns + ``label``).

    Args:
        task: sst2 | qnli | qqp | mnli | stsb.
        split: train | validation (| validation_matched/mismatched for MNLI).
        data_dir: folder holding ``glue_<task>/<file>.tsv[.gz]`` (default ``$REXBERT_DATA_DIR``).
        hub: load ``nyu-mll/glue`` from the Hub instead of local TSVs.
    """
    spec = glue_task(task)
    if hub:
        from datasets import load_dataset

        hub_split = "validation_matched" if spec.name == "mnli" and split == "validation" else split
        frame = load_dataset(GLUE_HUB, spec.hub_config, split=hub_split).to_pandas()
        source = f"{GLUE_HUB}/{spec.hub_config}:{hub_split}"
    else:
        folder = Path(data_dir) if data_dir else data_root()
        folder = folder if folder.name == f"glue_{spec.name}" else folder / f"glue_{spec.name}"
        if split not in spec.local_splits:
            raise DataError(
                f"GLUE {spec.name}: unknown split {split!r}; expected {sorted(spec.local_splits)}"
            )
        base = folder / spec.local_splits[split]
        path = base if base.exists() else base.with_name(base.name + ".gz")
        if not path.exists():
            raise DataError(
                f"GLUE {spec.name} split {split!r}: {base}[.gz] not found (offline copies here hold SST-2 "
                "train/dev, STS-B train/dev, QNLI dev only; use --hub for the rest)"
            )
        frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
        source = str(path)
        require_columns(frame, list(spec.local_columns), source)
        frame = frame[list(spec.local_columns)].rename(columns=spec.local_columns)
        if spec.label_map is not None:
            unknown = sorted(set(frame["label"]) - set(spec.label_map))
            if unknown:
                raise DataError(
                    f"{source}: unknown label value(s) {unknown[:5]}; expected {list(spec.label_map)}"
                )
            frame["label"] = frame["label"].map(spec.label_map)
        frame["label"] = frame["label"].astype(float if spec.num_labels == 1 else int)
    require_columns(frame, [*spec.text_columns, "label"], source)
    require_rows(frame, source)
    if spec.num_labels > 1 and (frame["label"] < 0).any():
        raise DataError(f"{source}: unlabelled rows (label -1); GLUE test splits have no labels")
    frame.attrs["source"] = source
    return frame.reset_index(drop=True)


STSB_ORIGINAL_HUB = "sentence-transformers/stsb"


def load_stsb_original(split: str, data_dir: str | None = None, hub: bool = False) -> pd.DataFrame:
    """STS Benchmark with labels for every split (GLUE hides test labels): ``sentence1, sentence2, label``.

    Local: ``glue_stsb/original/sts-<split>.tsv`` (genre, file, year, id, score, s1, s2 [, licence fields];
    some rows carry extra fields, so the file is read as raw TSV). Hub: ``sentence-transformers/stsb``
    (scores in [0, 1], rescaled to 0-5).
    """
    if split not in ("train", "dev", "test"):
        raise DataError(f"STS-B original: unknown split {split!r}; expected train, dev or test")
    if hub:
        from datasets import load_dataset

        frame = load_dataset(STSB_ORIGINAL_HUB, split="validation" if split == "dev" else split).to_pandas()
        frame = frame.assign(label=frame["score"].astype(float) * 5.0)
        source = f"{STSB_ORIGINAL_HUB}:{split}"
    else:
        folder = Path(data_dir) if data_dir else data_root()
        folder = folder if folder.name == "glue_stsb" else folder / "glue_stsb"
        path = folder / "original" / f"sts-{split}.tsv"
        if not path.is_file():
            raise DataError(f"STS-B {split}: {path} not found (the original STS benchmark files)")
        with path.open(encoding="utf-8", newline="") as stream:
            rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
        short = next((i for i, r in enumerate(rows) if len(r) < 7), None)
        if short is not None:
            raise DataError(f"{path}: line {short + 1}: {len(rows[short])} fields, expected at least 7")
        try:
            labels = [float(r[4]) for r in rows]
        except ValueError as error:
            raise DataError(f"{path}: a score (field 5) is not a number ({error})") from error
        frame = pd.DataFrame(
            {"sentence1": [r[5] for r in rows], "sentence2": [r[6] for r in rows], "label": labels}
        )
        source = str(path)
    require_rows(frame, source)
    frame.attrs["source"] = source
    return frame[["sentence1", "sentence2", "label"]].reset_index(drop=True)
