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
    """label: 1/0, or None when status is ``malformed`` (bad answer) or ``error`` (labeler unreachable)."""

    label: int | None
    status: str = "ok"
    raw: str = ""


class Labeler(ABC):
    """One relevance judge. ``identity`` must change whenever its answers could (model, settings)."""

    identity: str = "labeler"

    @abstractmethod
    def label_batch(self, texts: Sequence[str], prompt: PromptVersion) -> list[LabelResult]:
        """One result per text, in order; must not raise for per-document failures."""


class LabelCache:
    """sqlite store keyed by (labeler identity, prompt version, text hash): no document is labelled twice.

    Only definitive answers (ok / malformed) are cached; transport errors are retried on the next run.
    sqlite commits are atomic, so a killed run loses at most the batch in flight.
    """

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path))
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, label INTEGER, status TEXT, raw TEXT)"
        )
        self.conn.commit()

    @staticmethod
    def key(identity: str, version: str, text: str) -> str:
        return hashlib.sha256(f"{identity}\x00{version}\x00{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, LabelResult]:
        found: dict[str, LabelResult] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, label, status, raw in self.conn.execute(
                f"SELECT key, label, status, raw FROM labels WHERE key IN ({marks})", chunk
            ):
                found[key] = LabelResult(label, status, raw)
        return found

    def put_many(self, items: Sequence[tuple[str, LabelResult]]) -> None:
        rows = [(k, r.label, r.status, r.raw[:500]) for k, r in items if r.status in ("ok", "malformed")]
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.conn.close()


def label_documents(
    texts: Sequence[str],
    labeler: Labeler,
    prompt: PromptVersion,
    cache: LabelCache | None,
    batch_size: int = 32,
    desc: str = "label",
) -> tuple[list[LabelResult], StepStats]:
    """Label ``texts`` (cached where possible); returns results in order and kept/dropped_<status> counts."""
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
