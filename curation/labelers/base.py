"""Labeler interface, the on-disk label cache, and the batched labelling loop."""

from __future__ import annotations

import hashlib
import sqlite3
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
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


def _open_store(path: str | Path) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, label INTEGER, status TEXT, raw TEXT)"
    )
    conn.commit()
    return conn


def _open_read_only(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _select(conn: sqlite3.Connection, keys: Sequence[str], found: dict[str, LabelResult]) -> None:
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        marks = ",".join("?" * len(chunk))
        query = f"SELECT key, label, raw FROM labels WHERE status = 'ok' AND key IN ({marks})"
        for key, label, raw in conn.execute(query, chunk):
            found[key] = LabelResult(label, "ok", raw)


def _insert(conn: sqlite3.Connection, items: Sequence[tuple[str, LabelResult]]) -> None:
    rows = [(k, r.label, r.status, r.raw[:500]) for k, r in items if r.status == "ok"]
    with conn:
        conn.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", rows)


class LabelCache:
    """sqlite store keyed by (labeler identity, prompt version + wording hash, text hash): what a label
    depends on, nothing about the run that asked for it.

    Only labels (status ``ok``) are cached; errors are asked again on the next run. sqlite commits are
    atomic, so a killed run loses at most the batch in flight. One writer per file (sqlite on a shared
    filesystem tolerates no concurrent writers): ``read_also`` names other caches consulted read-only.
    """

    def __init__(self, path: str | Path, read_also: Sequence[str | Path] = ()):
        self.conn = _open_store(path)
        self.others = [_open_read_only(other) for other in read_also if Path(other).is_file()]

    @staticmethod
    def key(identity: str, version: str, text: str) -> str:
        return hashlib.sha256(f"{identity}\x00{version}\x00{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, LabelResult]:
        found: dict[str, LabelResult] = {}
        for conn in [*self.others, self.conn]:
            _select(conn, keys, found)
        return found

    def put_many(self, items: Sequence[tuple[str, LabelResult]]) -> None:
        _insert(self.conn, items)

    def close(self) -> None:
        for conn in [*self.others, self.conn]:
            conn.close()


class FileLabelCache:
    """The label stage's cache, one sqlite file per *input file*: ``<folder>/<hh>/<hash of the file's
    location>.sqlite`` holds the labels of the documents read from that file.

    Why per input file: a label must be found again whatever the task split (``--tasks`` 2 today, 3 tomorrow
    must not relabel 900k documents), and sqlite allows one writer per file. A document's input file is
    part of its id and is read by exactly one task of a run, so each file here has one writer, and a task
    of any other split opens only the files of its own inputs -- not every task's cache (4,000 x 4,000
    opens on a shared filesystem). ``routes`` maps each cache key to the input files of the documents that
    carry it; a label is stored with every one of them, so each file is complete for its documents.
    Connections are kept open in a small LRU: a one-task run over 30k input files must not hold 30k
    descriptors.
    """

    MAX_OPEN = 64

    def __init__(
        self, folder: str | Path, routes: Mapping[str, Collection[str]], read_also: Sequence[str | Path] = ()
    ):
        self.folder, self.routes = Path(folder), routes
        self.others = [_open_read_only(other) for other in read_also if Path(other).is_file()]
        self._open: OrderedDict[str, sqlite3.Connection] = OrderedDict()

    def path(self, input_file: str) -> Path:
        digest = hashlib.blake2b(input_file.encode("utf-8"), digest_size=16).hexdigest()
        return self.folder / digest[:2] / f"{digest}.sqlite"

    def _conn(self, input_file: str) -> sqlite3.Connection:
        if input_file in self._open:
            self._open.move_to_end(input_file)
        else:
            self._open[input_file] = _open_store(self.path(input_file))
            if len(self._open) > self.MAX_OPEN:
                self._open.popitem(last=False)[1].close()
        return self._open[input_file]

    def _by_file(self, keys: Iterable[str]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            for input_file in self.routes[key]:
                grouped[input_file].append(key)
        return grouped

    def get_many(self, keys: Sequence[str]) -> dict[str, LabelResult]:
        found: dict[str, LabelResult] = {}
        for conn in self.others:
            _select(conn, keys, found)
        for input_file, wanted in sorted(self._by_file(k for k in keys if k not in found).items()):
            if self.path(input_file).is_file():  # reading creates nothing
                _select(self._conn(input_file), wanted, found)
        return found

    def put_many(self, items: Sequence[tuple[str, LabelResult]]) -> None:
        results = {key: result for key, result in items if result.status == "ok"}
        for input_file, keys in sorted(self._by_file(results).items()):
            _insert(self._conn(input_file), [(k, results[k]) for k in keys])

    def close(self) -> None:
        for conn in [*self.others, *self._open.values()]:
            conn.close()
        self._open.clear()


def cache_keys(labeler: Labeler, prompt: PromptVersion, texts: Sequence[str]) -> list[str]:
    """The cache key of each text's label by ``labeler`` under ``prompt``."""
    return [LabelCache.key(labeler.identity, prompt.cache_key, t) for t in texts]


def label_documents(
    texts: Sequence[str],
    labeler: Labeler,
    prompt: PromptVersion,
    cache: LabelCache | FileLabelCache | None,
    batch_size: int = 32,
    desc: str = "label",
) -> tuple[list[LabelResult], StepStats]:
    """Label ``texts`` (cached where possible); returns results in order and kept / error counts."""
    from tqdm.auto import tqdm

    stats = StepStats(f"label[{labeler.identity}/{prompt.version}]")
    keys = cache_keys(labeler, prompt, texts)
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
