"""Run a model through the ``mteb`` package on the tasks our local data allows (offline).

``mteb`` loads every task from the Hub. Offline, :class:`LocalSTSBenchmark` is MTEB's own
``STSBenchmark`` task (same metadata, evaluator and main score) whose data comes from the labelled
STS benchmark files under ``$REXBERT_DATA_DIR/glue_stsb`` instead of ``mteb/stsbenchmark-sts``.

With Hub access the full benchmark is one call (see docs/evaluation.md)::

    import mteb
    model = mteb.get_model("path/to/sentence-transformers-folder")
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark", "SciDocsRR"]))

Example (offline):
    >>> from sentence_transformers import SentenceTransformer
    >>> scores = run_local_mteb(SentenceTransformer("all-MiniLM-L6-v2"))
"""

from __future__ import annotations

from mteb.tasks.sts.eng.sts_benchmark_sts import STSBenchmarkSTS

SPLITS = {"test": "test", "validation": "dev"}


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


def run_local_mteb(
    model, data_dir: str | None = None, max_pairs: int | None = None, output: str | None = None
):
    """``mteb.evaluate`` on the offline tasks; returns ``{task name: main score}`` of the test split."""
    import mteb
    from mteb.cache import ResultCache

    task = LocalSTSBenchmark(data_dir=data_dir, max_pairs=max_pairs)
    cache = ResultCache(cache_path=output) if output else None
    result = mteb.evaluate(model, [task], cache=cache, show_progress_bar=False, overwrite_strategy="always")
    return {r.task_name: r.get_score() for r in result.task_results}
