"""Run a model through the ``mteb`` package on the tasks our local data allows (offline).

``mteb`` loads every task from the Hub. Offline, two of its own tasks read local files instead, keeping
MTEB's metadata, evaluator and main score:

* :class:`LocalSTSBenchmark` -- ``STSBenchmark`` from the labelled STS benchmark files under
  ``$REXBERT_DATA_DIR/glue_stsb`` (instead of ``mteb/stsbenchmark-sts``).
* :class:`LocalESCIReranking` -- ``ESCIReranking`` (English ``us`` subset) from an ESCI copy read by
  :func:`evaluation.data.load_esci` (instead of ``mteb/ESCIReranking``): each query's judged products are
  its candidates, relevance E/S/C/I = 100/10/1/0 (ESCI's gains 1 / 0.1 / 0.01 / 0, as integers because
  ``pytrec_eval`` needs them).

With Hub access the full benchmark is one call (see docs/evaluation.md)::

    import mteb
    model = mteb.get_model("path/to/sentence-transformers-folder")
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark", "ESCIReranking"], languages=["eng"]))

Example (offline):
    >>> from sentence_transformers import SentenceTransformer
    >>> scores = run_local_mteb(SentenceTransformer("all-MiniLM-L6-v2"), tasks=("ESCIReranking",))
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from mteb.tasks import ESCIReranking, STSBenchmarkSTS  # MTEB's public task exports

from evaluation.data import DataError

SPLITS = {"test": "test", "validation": "dev"}
# ESCI's graded gains (evaluation.metrics.ESCI_GAINS) x 100: pytrec_eval takes integer relevance, and
# nDCG does not change when every gain is scaled by the same factor.
ESCI_RELEVANCE = {"E": 100, "S": 10, "C": 1, "I": 0}
ESCI_SUBSET = "us"


class LocalSTSBenchmark(STSBenchmarkSTS):
    """MTEB ``STSBenchmark`` read from local STS benchmark files (``glue_stsb/original/sts-*.tsv``)."""

    def __init__(self, data_dir: str | None = None, max_pairs: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_dir, self.max_pairs = data_dir, max_pairs

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        from datasets import Dataset, DatasetDict

        from evaluation.data import load_stsb_original

        if self.data_loaded:
            return
        splits = {}
        for split in self.metadata.eval_splits:
            frame = load_stsb_original(SPLITS[split], self.data_dir)[: self.max_pairs]
            splits[split] = Dataset.from_dict(
                {
                    "sentence1": frame["sentence1"].tolist(),
                    "sentence2": frame["sentence2"].tolist(),
                    "score": frame["label"].tolist(),  # 0-5, MTEB normalises with min/max_score
                }
            )
        self.dataset = DatasetDict(splits)
        self.data_loaded = True


def esci_reranking_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    """The ESCI pairs a reranking task can score, with a document id per distinct product text.

    Kept: queries with >= 2 candidates and at least one E, S or C. A query with one candidate has nothing
    to rank, and one with no positive gain has nDCG 0/0; MTEB (``pytrec_eval``) would count such queries
    as 0 where :func:`evaluation.metrics.ranking_metrics` skips them, so both sides get the same queries.
    ``doc_id`` is the product id, suffixed ``#<n>`` when one product has several texts (a merged copy can
    hold a title-only and a titled + described row of the same product).

    Args:
        pairs: :func:`evaluation.esci_similarity.esci_pairs` rows (``sentence1`` query, ``sentence2`` product
            text, ``label`` E/S/C/I) plus ``product_id``.
    """
    by_query = pairs.groupby("sentence1", sort=False)["label"]
    keep = (by_query.transform("size") >= 2) & by_query.transform(lambda labels: (labels != "I").any())
    kept = pairs[keep].reset_index(drop=True)
    if kept.empty:
        raise DataError("ESCI reranking: no query has two or more judged products with one E/S/C among them")
    product = kept["product_id"].astype(str)
    variant = kept.groupby(product, sort=False)["sentence2"].transform(lambda t: pd.factorize(t)[0])
    several = kept.groupby(product, sort=False)["sentence2"].transform("nunique") > 1
    return kept.assign(doc_id=product.where(~several, product + "#" + variant.astype(str)))


def esci_reranking_split(pairs: pd.DataFrame) -> dict:
    """MTEB ``RetrievalSplitData`` (corpus, queries, relevance, candidates) from reranking pairs.

    Query ids number the distinct queries; documents are the distinct ``doc_id`` (a product judged under
    several queries is one document).
    """
    from datasets import Dataset

    query_ids = {q: f"q{i}" for i, q in enumerate(dict.fromkeys(pairs["sentence1"]))}
    documents = pairs.drop_duplicates("doc_id")
    relevant, candidates = {}, {}
    for row in pairs.itertuples():
        qid = query_ids[row.sentence1]
        relevant.setdefault(qid, {})[row.doc_id] = ESCI_RELEVANCE[row.label]
        candidates.setdefault(qid, []).append(row.doc_id)
    return {
        "corpus": Dataset.from_dict(
            {
                "id": documents["doc_id"].tolist(),
                "text": documents["sentence2"].tolist(),
                "title": [""] * len(documents),
            }
        ),
        "queries": Dataset.from_dict({"id": list(query_ids.values()), "text": list(query_ids)}),
        "relevant_docs": relevant,
        "top_ranked": candidates,
    }


def load_esci_reranking_pairs(data: str | None = None, split: str = "test") -> pd.DataFrame:
    """ESCI rows of ``split`` as reranking pairs (``esci_pairs`` + ``product_id``), filtered as above."""
    from evaluation.data import load_esci, require_columns
    from evaluation.esci_similarity import esci_pairs

    frame = load_esci(data, split)
    require_columns(frame, ["product_id"], frame.attrs["source"])
    pairs = esci_pairs(frame).assign(product_id=frame["product_id"].astype(str).to_numpy())
    return esci_reranking_frame(pairs)


class LocalESCIReranking(ESCIReranking):
    """MTEB ``ESCIReranking`` (``us`` subset, split ``test``) built from a local or Hub ESCI copy.

    Args:
        data: what :func:`evaluation.data.load_esci` reads (None: ``$REXBERT_DATA_DIR``'s ESCI union).
        split: the ESCI split whose pairs are reranked (reported under MTEB's ``test`` split name).
    """

    def __init__(self, data: str | None = None, split: str = "test", **kwargs):
        super().__init__(**kwargs)
        self.data, self.esci_split = data, split
        self.filter_languages(None, hf_subsets=[ESCI_SUBSET])

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        if self.data_loaded:
            return
        pairs = load_esci_reranking_pairs(self.data, self.esci_split)
        self.dataset = {ESCI_SUBSET: {"test": esci_reranking_split(pairs)}}
        self.data_loaded = True


LOCAL_TASKS = {"STSBenchmark": LocalSTSBenchmark, "ESCIReranking": LocalESCIReranking}


def local_mteb_scores(
    model,
    tasks: Sequence[str] = ("STSBenchmark", "ESCIReranking"),
    data_dir: str | None = None,
    esci_data: str | None = None,
    max_pairs: int | None = None,
    output: str | None = None,
    prediction_folder: str | None = None,
) -> dict[str, dict[str, float]]:
    """``mteb.evaluate`` on the offline tasks; ``{task name: every score of its test split}``.

    Args:
        model: a sentence-transformers model (or anything ``mteb.evaluate`` takes).
        tasks: names in :data:`LOCAL_TASKS`.
        data_dir: folder holding ``glue_stsb/`` (STSBenchmark; default ``$REXBERT_DATA_DIR``).
        esci_data: ESCI source for ESCIReranking (see :class:`LocalESCIReranking`).
        max_pairs: STSBenchmark: first N pairs (quick runs).
        output: folder for MTEB's own result files (None: MTEB's default cache).
        prediction_folder: where MTEB saves each task's scores per query and document
            (``<task>_predictions.json``); None = not saved.
    """
    import mteb
    from mteb.cache import ResultCache

    unknown = sorted(set(tasks) - set(LOCAL_TASKS))
    if unknown:
        raise DataError(
            f"tasks: unknown offline MTEB task(s) {unknown}; expected some of {sorted(LOCAL_TASKS)}"
        )
    built = {
        "STSBenchmark": lambda: LocalSTSBenchmark(data_dir=data_dir, max_pairs=max_pairs),
        "ESCIReranking": lambda: LocalESCIReranking(data=esci_data),
    }
    cache = ResultCache(cache_path=output) if output else None
    result = mteb.evaluate(
        model,
        [built[name]() for name in tasks],
        cache=cache,
        show_progress_bar=False,
        overwrite_strategy="always",
        prediction_folder=prediction_folder,
    )
    return {r.task_name: dict(r.scores["test"][0]) for r in result.task_results}


def run_local_mteb(
    model,
    data_dir: str | None = None,
    max_pairs: int | None = None,
    output: str | None = None,
    tasks: Sequence[str] = ("STSBenchmark",),
    esci_data: str | None = None,
) -> dict[str, float]:
    """``{task name: main score}`` of the test split (see :func:`local_mteb_scores`)."""
    scores = local_mteb_scores(model, tasks, data_dir, esci_data, max_pairs, output)
    return {name: float(values["main_score"]) for name, values in scores.items()}
