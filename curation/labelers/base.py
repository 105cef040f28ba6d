"""Labeler interface, the on-disk label cache, and the batched labelling loop."""

from __future__ import annotations

import hashlib
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from curation.config import LabelerConfig
from curation.relevance import PromptVersion
from curation.stats import StepStats


@dataclass(frozen=True)
class LabelResult:
    """label: 1/0 with status ``ok``; or None with status ``error``: the labeler was unreachable or answered
    something that is not a label (after its retries). Errors are never cached: a rerun asks again."""

    label: int | None
    status: str = "ok"
    raw: str = ""


class Labeler(ABC):
    """One relevance judge. ``identity`` must change whenever its answers could (model, settings);
    ``model_identity`` names the model alone -- a hash of its weights, or endpoint + served model -- so an
    auditor running the same model under other settings is recognised as the same model."""

    identity: str = "labeler"

    @property
    def model_identity(self) -> str:
        return self.identity

    @abstractmethod
    def label_batch(self, texts: Sequence[str], prompt: PromptVersion) -> list[LabelResult]:
        """One result per text, in order; must not raise for per-document failures."""


class LabelCache:
    """sqlite store keyed by (labeler identity, prompt version, text hash): no document is labelled twice.

    Only labels (status ``ok``) are cached; errors are asked again on the next run. sqlite commits are
    atomic, so a killed run loses at most the batch in flight. One writer per file (sqlite on a shared
    filesystem tolerates no concurrent writers): ``read_also`` names other tasks' caches consulted read-only.
    """

    def __init__(self, path: str | Path, read_also: Sequence[str | Path] = ()):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path))
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, label INTEGER, status TEXT, raw TEXT)"
        )
        self.conn.commit()
        self.others = [
            sqlite3.connect(f"file:{other}?mode=ro", uri=True) for other in read_also if Path(other).is_file()
        ]

    @staticmethod
    def key(identity: str, version: str, text: str) -> str:
        return hashlib.sha256(f"{identity}\x00{version}\x00{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, LabelResult]:
        found: dict[str, LabelResult] = {}
        for conn in [*self.others, self.conn]:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, label, raw FROM labels WHERE status = 'ok' AND key IN ({marks})"
                for key, label, raw in conn.execute(query, chunk):
                    found[key] = LabelResult(label, "ok", raw)
        return found

    def put_many(self, items: Sequence[tuple[str, LabelResult]]) -> None:
        rows = [(k, r.label, r.status, r.raw[:500]) for k, r in items if r.status == "ok"]
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        for conn in [*self.others, self.conn]:
            conn.close()


def label_documents(
    texts: Sequence[str],
    labeler: Labeler,
    prompt: PromptVersion,
    cache: LabelCache | None,
    batch_size: int = 32,
    desc: str = "label",
) -> tuple[list[LabelResult], StepStats]:
    """Label ``texts`` (cached where possible); returns results in order and kept / error counts."""
    from tqdm.auto import tqdm

    stats = StepStats(f"label[{labeler.identity}/{prompt.version}]")
    keys = [LabelCache.key(labeler.identity, prompt.cache_key, t) for t in texts]
    cached = cache.get_many(keys) if cache else {}
    results: list[LabelResult | None] = [cached.get(k) for k in keys]
    stats.add("cache_hits", sum(r is not None for r in results))
    todo = [i for i, r in enumerate(results) if r is None]
    with tqdm(total=len(todo), desc=desc, unit="doc", leave=False) as bar:
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            batch = labeler.label_batch([texts[i] for i in idx], prompt)
            if len(batch) != len(idx):
                raise RuntimeError(
                    f"labeler {labeler.identity} returned {len(batch)} results for {len(idx)} texts"
                )
            for i, result in zip(idx, batch):
                results[i] = result
            if cache:
                cache.put_many([(keys[i], r) for i, r in zip(idx, batch)])
            bar.update(len(idx))
    for result in results:
        if result.status == "ok":
            stats.keep()
        else:
            stats.drop(f"label_{result.status}")
    return list(results), stats


def make_labeler(config: LabelerConfig) -> Labeler:
    if config.kind == "zero_shot":
        from curation.labelers.zero_shot import ZeroShotLabeler

        return ZeroShotLabeler(config)
    if config.kind == "http":
        from curation.labelers.http import HttpChatLabeler

        return HttpChatLabeler(config)
    if config.kind == "transformers":
        from curation.labelers.transformers_chat import TransformersChatLabeler

        return TransformersChatLabeler(config)
    raise ValueError(f"labeler.kind {config.kind!r} is not one of zero_shot, http, transformers")
