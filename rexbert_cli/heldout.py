"""Keep the demo's evaluation products out of its training data.

Icecat products selected by :func:`curation.demo_data.is_heldout_product` (a stable hash of the id, so the
curation input, the training files and the evaluation agree) and ESCI products of the ``test`` split are
written to separate files; the training recipe is pointed at the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.demo_data import is_heldout_product
from rexbert_common.files import atomic_write

ICECAT = Path("icecat_products_chorus") / "icecat_text.parquet"
ESCI = Path("esci_union_with_text") / "esci_union_with_text.parquet"


@dataclass(frozen=True)
class ProductSplit:
    """Parquet files of the split: training rows (same columns as the inputs) and the held-out products."""

    icecat_train: Path
    esci_train: Path
    icecat_heldout: Path


def _write(table: pa.Table, path: Path) -> Path:
    # an unchanged split keeps its file (and modification time): the training rows built from it, whose
    # fingerprint includes it, stay valid when the demo is rerun
    atomic_write(path, lambda tmp: pq.write_table(table, tmp), keep_identical=True)
    return path


def split_products(data_dir: Path, out_dir: Path) -> ProductSplit:
    """Write the training / held-out product files under ``out_dir`` (idempotent: same input, same files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    icecat = pq.read_table(data_dir / ICECAT)
    heldout = pa.array([is_heldout_product(i) for i in icecat["id"].to_pylist()], type=pa.bool_())
    esci = pq.read_table(data_dir / ESCI)
    test_products = pc.unique(esci.filter(pc.equal(esci["split"], "test"))["product_id"])
    return ProductSplit(
        icecat_train=_write(icecat.filter(pc.invert(heldout)), out_dir / "icecat_train.parquet"),
        esci_train=_write(
            esci.filter(pc.invert(pc.is_in(esci["product_id"], value_set=test_products))),
            out_dir / "esci_train.parquet",
        ),
        icecat_heldout=_write(icecat.filter(heldout), out_dir / "icecat_heldout.parquet"),
    )
