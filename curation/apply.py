"""Steps 6-7 for one shard: score filter-required domains with their classifier and keep those above the
domain threshold, then language ID, quality heuristics, adult filtering, and MinHash signatures for dedup.

A shard is the unit of parallelism and of resumption: its output parquet and its stats JSON are written
atomically (stats last, so the stats file marks the shard as done).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from curation.config import CurationConfig
from curation.io_utils import read_json, write_json_atomic, write_parquet_atomic
from curation.stats import StepStats

STEP_ORDER = ("relevance", "language", "quality", "adult")
FAIL_ENV = "REXBERT_CURATION_FAIL_AFTER_SHARDS"  # test hook: crash after N shards (proves resumption)
_shards_done_in_process = 0


def n_tokens(text: str) -> int:
    """Token proxy used in reports: whitespace-separated words."""
    return len(text.split())


class ShardCleaner:
    def __init__(self, config: CurationConfig, classifier_dir: str | Path):
        from curation.cleaning.adult import AdultFilter
        from curation.cleaning.dedup import MinHasher
        from curation.cleaning.lid import LanguageId
        from curation.cleaning.quality import QualityFilter

        self.config = config
        self.classifier_dir = Path(classifier_dir)
        lid = config.cleaning.lid
        self.lid = LanguageId(config.resolved_lid_path(), lid.languages, lid.threshold)
        self.quality = QualityFilter(config.cleaning.quality)
        self.adult = AdultFilter(config.cleaning.adult)
        self.hasher = MinHasher(config.cleaning.dedup) if config.cleaning.dedup.enabled else None
        self._classifiers: dict[str, Any] = {}

    def classifier(self, domain: str):
        from curation.classifier import DomainClassifier

        if domain not in self._classifiers:
            meta = self.classifier_dir / f"{domain}.json"
            self._classifiers[domain] = (
                DomainClassifier.load(self.classifier_dir, domain) if meta.exists() else None
            )
        return self._classifiers[domain]

    def process(self, table) -> tuple[Any, dict[str, Any]]:
        """table: an ingest shard (id, text, domain, url, source, route, truth). Returns (kept table,
        stats)."""
        import pyarrow as pa

        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        n = table.num_rows
        texts = list(cols["text"])
        alive = np.ones(n, dtype=bool)
        reason: list[str | None] = [None] * n
        score = np.full(n, np.nan)
        # relevance: one batched fastText call per domain
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i in range(n):
            if cols["route"][i] == "filter":
                by_domain[cols["domain"][i]].append(i)
        for domain, idx in by_domain.items():
            clf = self.classifier(domain)
            if clf is None:
                for i in idx:
                    alive[i], reason[i] = False, "relevance:no_classifier"
                continue
            s = clf.scores([texts[i] for i in idx])
            for i, si in zip(idx, s):
                score[i] = si
                if si < clf.threshold:
                    alive[i], reason[i] = False, "relevance:below_threshold"
        # language ID, batched
        live = np.where(alive)[0].tolist()
        lang = [""] * n
        lang_score = np.zeros(n)
        for i, (kept, best, p) in zip(live, self.lid.predict([texts[i] for i in live])):
            lang[i], lang_score[i] = best, p
            if not kept:
                alive[i], reason[i] = False, "language:not_" + "_".join(self.config.cleaning.lid.languages)
        for i in np.where(alive)[0]:
            why, texts[i] = self.quality.check(texts[i])
            if why:
                alive[i], reason[i] = False, f"quality:{why}"
                continue
            why = self.adult.check(texts[i], cols["url"][i] or "")
            if why:
                alive[i], reason[i] = False, f"adult:{why}"
        keep = np.where(alive)[0].tolist()
        stats = self._stats(cols, texts, reason, table.column("text").to_pylist())
        out = {
            name: [cols[name][i] for i in keep]
            for name in ("id", "domain", "url", "source", "route", "truth")
        }
        out["text"] = [texts[i] for i in keep]
        out["relevance_score"] = [None if np.isnan(score[i]) else float(score[i]) for i in keep]
        out["language"] = [lang[i] for i in keep]
        out["language_score"] = [float(lang_score[i]) for i in keep]
        if self.hasher is not None:
            sigs = self.hasher.signatures(out["text"])
            out["minhash"] = [row.tobytes() for row in sigs]
        return pa.table(out), stats

    @staticmethod
    def _stats(
        cols: dict[str, list], texts: list[str], reason: list[str | None], original: list[str]
    ) -> dict[str, Any]:
        """Per step and per domain: kept / dropped_<reason> docs and tokens (tokens of the input text)."""
        steps = {name: StepStats(name) for name in STEP_ORDER}
        per_domain: dict[str, StepStats] = defaultdict(lambda: StepStats("domain"))
        for i, why in enumerate(reason):
            tokens = n_tokens(original[i])
            domain = cols["domain"][i]
            if why is None:
                per_domain[domain].keep(tokens=n_tokens(texts[i]))
                for step in STEP_ORDER:
                    if step != "relevance" or cols["route"][i] == "filter":
                        steps[step].keep()
                continue
            step, label = why.split(":", 1)
            for earlier in STEP_ORDER[: STEP_ORDER.index(step)]:
                if earlier != "relevance" or cols["route"][i] == "filter":
                    steps[earlier].keep()
            steps[step].drop(label, tokens=tokens)
            per_domain[domain].drop(label, tokens=tokens)
        return {
            "steps": {k: v.as_dict() for k, v in steps.items()},
            "per_domain": {d: s.as_dict() for d, s in sorted(per_domain.items())},
        }


def clean_shard(config: CurationConfig, work: Path, shard: int) -> None:
    """Process ingest shard ``shard`` unless its stats file already exists (idempotent, atomic)."""
    import pyarrow.parquet as pq

    global _shards_done_in_process
    out_path = work / "clean" / f"shard_{shard:05d}.parquet"
    stats_path = work / "clean" / f"shard_{shard:05d}.stats.json"
    if stats_path.exists() and out_path.exists():
        return
    table = pq.read_table(work / "ingest" / f"shard_{shard:05d}.parquet")
    cleaner = ShardCleaner(config, work / "classifiers")
    kept, stats = cleaner.process(table)
    write_parquet_atomic(out_path, kept)
    write_json_atomic(stats_path, stats)
    _shards_done_in_process += 1
    limit = os.environ.get(FAIL_ENV)
    if limit and _shards_done_in_process >= int(limit):
        raise RuntimeError(f"{FAIL_ENV}={limit}: injected failure after {_shards_done_in_process} shard(s)")


def load_shard_stats(work: Path, num_shards: int) -> list[dict[str, Any]]:
    return [read_json(work / "clean" / f"shard_{s:05d}.stats.json") for s in range(num_shards)]
