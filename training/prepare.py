"""Training-data preparation as datatrove tasks: ``rexbert prepare`` and training's in-process build run the
same stages on the executor layer curation uses (``rexbert_common.executors``: Local / Ray / Slurm).

===============  =====  =================================================================================
stage            tasks  work
===============  =====  =================================================================================
index            N      count the documents of each block of each source file (parquet: footers only)
setup            1      the tokenizer (loaded, or trained on a bounded sample), the Guided-MLM miner
                        (fitted on a bounded sample), each source's mean tokens per document (a bounded
                        sample), the epoch report, the memory estimate against ``data.task_memory_bytes``
build_<phase>    N      shards k ≡ rank (mod N) of the phase: read, tokenize, mine, pack, write
finalize_<phase> 1      keep shards 0, 1, ... until the phase's tokens; ``build.json``
===============  =====  =================================================================================

The process that launches them lists the sources' files and hashes the recipe: it reads no document. Every
task derives its work from the recipe, the index and the setup alone (``mixture.MixturePlan``,
``source_index.DrawOrder``), so the rows are the same for any executor and task count, a restart rebuilds
only shards without a completion marker, and a task's memory does not depend on the shard or phase size.

Outputs, under the recipe's ``output_dir``::

    prepare/index-<fingerprint>/counts/<rank>-of-<tasks>.json   documents per block of each file
    prepare/setup-<fingerprint>/setup.json           tokenizer digest, miner lexicon, mean sizes, epochs
    tokenizer/                                       the trained tokenizer (kept once trained)
    <phase>/rows-<fingerprint>/                      shards + build.json (training memory-maps them)

Each fingerprint hashes the recipe fields its outputs depend on (and the size and mtime of every local source
file; Hub files are pinned to a revision in their URLs): a field that changes the rows gives a new folder,
one that does not (learning rate, masking, workers, tasks, memory budget, ``streaming``) reuses the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import shlex
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from rexbert_common.errors import UserError
from rexbert_common.executors import ExecutorConfig, Stage, StageResources, run_stages
from rexbert_common.files import write_text_atomic
from training.attribute_miner import AttributeMiner
from training.data import DataError
from training.epochs import epoch_report, format_report
from training.mixture import MixturePlan, PlannedSource, temperature_weights
from training.phase_build import (
    FORMAT_VERSION,
    build_shard,
    finalize_build,
    load_build,
    read_marker,
)
from training.phase_data import CHUNK_DOCS, ShardBuilder, ShardSource, fast_encoder
from training.recipe import PHASES, PhaseConfig, Recipe, SourceConfig
from training.source_index import DrawOrder, SourceIndex, count_blocks, file_stamp, list_files, usable

CALIBRATION_DOCS = 512  # positions per source tokenized to measure its mean tokens per document
SETUP_FILE = "setup.json"
# Memory of a task, per token of a packing buffer: token ids as int32 (4), the packed rows (4), their Arrow
# batch (4); and per token of the ``encode_batch`` chunk in flight: the Rust encodings (ids, offsets,
# tokens, masks: ~100). An estimate to refuse impossible budgets early, not an accounting.
BUFFER_BYTES_PER_TOKEN = 12
ENCODING_BYTES_PER_TOKEN = 100


def recipe_sources(recipe: Recipe) -> list[tuple[SourceConfig, bool]]:
    """``(source, is_domain)`` in recipe order: general, then domain (the order seeds the draw orders)."""
    return [(s, False) for s in recipe.data.general] + [(s, True) for s in recipe.data.domain]


def phase_seed(recipe: Recipe, phase_name: str) -> int:
    return recipe.data.seed * 1000 + PHASES.index(phase_name)


def check_guided_sources(recipe: Recipe, phases: list[str]) -> None:
    """Guided MLM asked for with no source to mine is a recipe error (it would silently do nothing)."""
    mined = [s.name for s in (*recipe.data.general, *recipe.data.domain) if s.mine_attributes]
    for name in phases:
        fraction = recipe.phase(name).masking.guided_fraction
        if fraction > 0 and not mined:
            raise UserError(
                f"{name}.masking.guided_fraction is {fraction} but no data source sets mine_attributes: true "
                "(set it on the product sources, or guided_fraction: 0)"
            )


# -- fingerprints (computed by the launching process: the recipe and the files' stamps, no document) ---


def _digest(key) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()


@dataclass
class PrepareLayout:
    """Where a recipe's preparation lives, and the fingerprints that name it."""

    recipe: Recipe
    files: list[list[str]]  # per source (recipe order), its files

    @classmethod
    def of(cls, recipe: Recipe) -> PrepareLayout:
        return cls(recipe, [list_files(src) for src, _ in recipe_sources(recipe)])

    @property
    def out(self) -> Path:
        return Path(self.recipe.output_dir)

    @cached_property
    def _documents_key(self) -> list:  # stats every file once per layout
        keys = []
        for (src, is_domain), files in zip(recipe_sources(self.recipe), self.files):
            fields = dataclasses.asdict(src)
            for unused in ("weight", "streaming", "mine_attributes"):  # mixing, not the documents
                fields.pop(unused)
            keys.append({**fields, "domain": is_domain, "files": [file_stamp(f) for f in files]})
        return keys

    @property
    def index_fingerprint(self) -> str:
        return _digest({"index": 1, "sources": self._documents_key})

    @property
    def setup_fingerprint(self) -> str:
        r = self.recipe
        return _digest(
            {
                "index": self.index_fingerprint,
                "setup": 1,
                "tokenizer": dataclasses.asdict(r.tokenizer),
                "seed": r.seed,
                "data_seed": r.data.seed,
                "miner_sample_docs": r.data.miner_sample_docs,
                "max_doc_tokens": r.data.max_doc_tokens,
                "mined": [s.mine_attributes for s, _ in recipe_sources(r)],
            }
        )

    def phase_fingerprint(self, phase_name: str) -> str:
        r, phase = self.recipe, self.recipe.phase(phase_name)
        return _digest(
            {
                "setup": self.setup_fingerprint,
                "format": FORMAT_VERSION,
                "data": {k: getattr(r.data, k) for k in ("temperature", "buffer_docs", "shard_buffers")},
                "weights": [s.weight for s, _ in recipe_sources(r)],
                "phase": {
                    "tokens": phase.tokens,
                    "max_seq_len": phase.max_seq_len,
                    "mixture": dataclasses.asdict(phase.mixture),
                },
                "mined": phase.masking.guided_fraction > 0,
                "phase_seed": phase_seed(r, phase_name),
            }
        )

    @property
    def index_dir(self) -> Path:
        return self.out / "prepare" / f"index-{self.index_fingerprint[:16]}"

    @property
    def setup_dir(self) -> Path:
        return self.out / "prepare" / f"setup-{self.setup_fingerprint[:16]}"

    def rows_dir(self, phase_name: str) -> Path:
        return self.out / phase_name / f"rows-{self.phase_fingerprint(phase_name)[:16]}"

    def setup_done(self) -> bool:
        return read_setup(self.setup_dir) is not None

    def phase_done(self, phase_name: str) -> bool:
        from training.phase_build import read_build_info

        info = read_build_info(self.rows_dir(phase_name))
        return info is not None and info.get("fingerprint") == self.phase_fingerprint(phase_name)


def read_setup(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SETUP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- what the tasks load -------------------------------------------------------------------------


def load_indexes(layout: PrepareLayout) -> list[SourceIndex]:
    counts: dict[str, list[int]] = {}
    for part in sorted((layout.index_dir / "counts").glob("*.json")):
        counts.update(json.loads(part.read_text(encoding="utf-8")))
    indexes = []
    for (src, _), files in zip(recipe_sources(layout.recipe), layout.files):
        missing = [f for f in files if f"{src.name}\t{f}" not in counts]
        if missing:
            raise RuntimeError(f"{layout.index_dir}: the index has no counts for {missing[0]}")
        indexes.append(SourceIndex.from_counts(src, {f: counts[f"{src.name}\t{f}"] for f in files}))
    return indexes


def tokenizer_digest(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def load_prepared_tokenizer(layout: PrepareLayout):
    from training.tokenizer import load_tokenizer

    return load_tokenizer(layout.recipe.tokenizer.name_or_path or str(layout.out / "tokenizer"))


@dataclass
class PreparedInputs:
    """What a build task needs: the sources' indexes, the setup, the tokenizer and the miner."""

    layout: PrepareLayout
    indexes: list[SourceIndex]
    setup: dict
    tokenizer: object
    miner: AttributeMiner | None

    @classmethod
    def load(cls, layout: PrepareLayout) -> PreparedInputs:
        setup = read_setup(layout.setup_dir)
        if setup is None:
            raise RuntimeError(f"{layout.setup_dir}: the setup stage has not finished")
        miner = AttributeMiner.from_json(setup["miner"]) if setup["miner"] is not None else None
        return cls(layout, load_indexes(layout), setup, load_prepared_tokenizer(layout), miner)

    def plan(self, phase: PhaseConfig) -> MixturePlan:
        data, sources = self.layout.recipe.data, recipe_sources(self.layout.recipe)
        weights = {}
        for is_domain in (False, True):
            group = [i for i, (_, d) in enumerate(sources) if d == is_domain]
            if group:
                normalised = temperature_weights([sources[i][0].weight for i in group], data.temperature)
                weights.update(zip(group, normalised))
        planned = [
            PlannedSource(src.name, is_domain, float(weights[i]), self.setup["sources"][i]["mean_tokens"])
            for i, (src, is_domain) in enumerate(sources)
        ]
        return MixturePlan(planned, phase.mixture, phase.tokens, data.shard_buffers * data.buffer_docs)

    def builder(self, phase_name: str) -> tuple[ShardBuilder, MixturePlan]:
        recipe = self.layout.recipe
        phase, seed = recipe.phase(phase_name), phase_seed(recipe, phase_name)
        if phase.masking.guided_fraction > 0 and (self.miner is None or not self.miner.brands):
            mined = [s.name for s, _ in recipe_sources(recipe) if s.mine_attributes]
            raise UserError(
                f"{phase_name}.masking.guided_fraction is {phase.masking.guided_fraction} but the attribute "
                f"miner learned no brand from {recipe.data.miner_sample_docs} documents of each of {mined}: "
                "check those sources' text_fields (titles first)"
            )
        check_task_memory(recipe, self.setup["sources"])
        plan = self.plan(phase)
        sources = [
            ShardSource(src.name, is_domain, src.mine_attributes, DrawOrder(index, seed, number))
            for number, ((src, is_domain), index) in enumerate(zip(recipe_sources(recipe), self.indexes))
        ]
        # spans serve Guided MLM only: a phase without it skips the miner (phase 1 is most of the tokens)
        miner = self.miner if phase.masking.guided_fraction > 0 else None
        return ShardBuilder(plan, sources, self.tokenizer, miner, recipe.data, phase, seed), plan


# -- the stages' steps ----------------------------------------------------------------------------


class _PrepareStep(PipelineStep):
    """A step that does its work when the task runs (datatrove consumes the generator) and passes no
    documents on. Holds only the recipe and paths: it is pickled to Local workers, Ray and Slurm."""

    type = "🧮 rexbert prepare"

    def __init__(self, recipe: Recipe, files: list[list[str]]) -> None:
        super().__init__()
        self.recipe, self.files = recipe, files

    @property
    def layout(self) -> PrepareLayout:
        return PrepareLayout(self.recipe, self.files)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self.work(rank, world_size)
        yield from data or ()

    def work(self, rank: int, world_size: int) -> None:
        raise NotImplementedError


class IndexSources(_PrepareStep):
    """Counts the documents of every block of the files ``rank``, ``rank + world_size``, ..."""

    name = "index sources"

    def work(self, rank: int, world_size: int) -> None:
        layout = self.layout
        every = [
            (src, f) for (src, _), files in zip(recipe_sources(self.recipe), layout.files) for f in files
        ]
        counts = {}
        for src, path in every[rank::world_size]:
            counts[f"{src.name}\t{path}"] = count_blocks(src, path)
            self.stat_update("files")
            self.stat_update("blocks", value=len(counts[f"{src.name}\t{path}"]))
        folder = layout.index_dir / "counts"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"{rank:05d}-of-{world_size:05d}.json", json.dumps(counts))


class PrepareSetup(_PrepareStep):
    """Tokenizer, miner, the sources' mean sizes, the epoch report and the memory check (one task)."""

    name = "tokenizer, miner, document sizes"

    def work(self, rank: int, world_size: int) -> None:
        from datatrove.utils.logging import logger

        layout, recipe = self.layout, self.recipe
        indexes = load_indexes(layout)
        tokenizer = _setup_tokenizer(layout, indexes)
        miner = _fit_miner(recipe, indexes)
        sources = _measure_sources(recipe, indexes, tokenizer)
        setup = {
            "fingerprint": layout.setup_fingerprint,
            "tokenizer": tokenizer_digest(tokenizer),
            "miner": None if miner is None else {**miner.to_json(), "documents": miner.documents_fitted},
            "sources": sources,
        }
        partial = PreparedInputs(layout, indexes, setup, tokenizer, miner)
        setup["epochs"] = {name: epoch_report(partial.plan(recipe.phase(name)), sources) for name in PHASES}
        for name in PHASES:
            logger.debug(
                f"source epochs, {format_report(name, setup['epochs'][name])}"
            )  # the task's log file
        layout.setup_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(layout.setup_dir / SETUP_FILE, json.dumps(setup, indent=1))


class _PhaseStep(_PrepareStep):
    def __init__(self, recipe: Recipe, files: list[list[str]], phase_name: str) -> None:
        super().__init__(recipe, files)
        self.phase_name = phase_name


class BuildShards(_PhaseStep):
    """Builds the phase's shards ``rank``, ``rank + world_size``, ... that have no completion marker."""

    name = "build shards"

    def work(self, rank: int, world_size: int) -> None:
        inputs = PreparedInputs.load(self.layout)
        builder, plan = inputs.builder(self.phase_name)
        folder = self.layout.rows_dir(self.phase_name)
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(rank, plan.shards, world_size):
            if read_marker(folder, index) is not None:
                continue  # built before a restart
            marker = build_shard(
                builder, folder, index, len(inputs.tokenizer), self.recipe.data.task_memory_bytes // 16
            )
            self.stat_update("shards")
            self.stat_update("positions", value=marker["positions"])
            self.stat_update("tokens", value=marker["tokens"])


class FinalizePhase(_PhaseStep):
    """Keeps the phase's shards until its tokens (building any that is missing) and writes build.json."""

    name = "finalize phase"

    def work(self, rank: int, world_size: int) -> None:
        from datatrove.utils.logging import logger

        layout, phase = self.layout, self.recipe.phase(self.phase_name)
        inputs = PreparedInputs.load(layout)
        folder = layout.rows_dir(self.phase_name)
        folder.mkdir(parents=True, exist_ok=True)
        builder, plan = inputs.builder(self.phase_name)

        def build_missing(index: int) -> dict:
            reason = "past the planned shards" if index >= plan.shards else "its task did not build it"
            logger.warning(f"{self.phase_name}: building shard {index} in the finalize task ({reason})")
            return build_shard(
                builder, folder, index, len(inputs.tokenizer), self.recipe.data.task_memory_bytes // 16
            )

        info = finalize_build(
            folder,
            phase,
            layout.phase_fingerprint(self.phase_name),
            build_missing,
            extra={"tokenizer": inputs.setup["tokenizer"], "planned_shards": plan.shards},
            max_shards=64 * plan.shards + 64,
        )
        if info["built_by_finalize"]:
            self.stat_update("shards_built_by_finalize", value=len(info["built_by_finalize"]))


# -- setup work -------------------------------------------------------------------------------------


def _samples(indexes: list[SourceIndex], n: int, seed: list[int]) -> list[list[str]]:
    """Usable documents of a bounded sample of each source (``n`` positions each)."""
    return [
        [t for t in index.sample(n, np.random.default_rng([*seed, number])) if usable(t)]
        for number, index in enumerate(indexes)
    ]


def _setup_tokenizer(layout: PrepareLayout, indexes: list[SourceIndex]):
    """The recipe's tokenizer; a BPE is trained once (``tokenizer.train_docs`` documents, round-robin over
    the sources so every corpus shapes the vocabulary) and kept in ``<output_dir>/tokenizer``: later runs,
    and later phases with other data, reuse it."""
    from training.tokenizer import save_tokenizer, train_bpe_tokenizer

    recipe, folder = layout.recipe, layout.out / "tokenizer"
    if not recipe.tokenizer.name_or_path and not (folder / "tokenizer.json").exists():
        per_source = math.ceil(recipe.tokenizer.train_docs / len(indexes))
        samples = _samples(indexes, per_source, [recipe.seed, 3])
        texts = [t for group in itertools.zip_longest(*samples) for t in group if t is not None]
        vocab = recipe.tokenizer.vocab_size
        tokenizer = train_bpe_tokenizer(texts[: recipe.tokenizer.train_docs], vocab_size=vocab)
        save_tokenizer(tokenizer, folder)
    return load_prepared_tokenizer(layout)


def _fit_miner(recipe: Recipe, indexes: list[SourceIndex]) -> AttributeMiner | None:
    """The Guided-MLM miner, its brand lexicon fitted on ``data.miner_sample_docs`` documents of each
    ``mine_attributes`` source; None when no source is mined."""
    mined = [k for k, (src, _) in enumerate(recipe_sources(recipe)) if src.mine_attributes]
    if not mined:
        return None
    samples = _samples([indexes[k] for k in mined], recipe.data.miner_sample_docs, [recipe.seed, 11])
    miner = AttributeMiner().fit(t for sample in samples for t in sample)
    if miner.documents_fitted == 0:
        names = [indexes[k].config.name for k in mined]
        raise DataError(f"the attribute miner read no document from the mined sources {names}")
    return miner


def _measure_sources(recipe: Recipe, indexes: list[SourceIndex], tokenizer) -> list[dict]:
    """Per source: documents, and mean tokens (truncated at ``max_doc_tokens``; a position without usable
    text counts 0) and characters per position on ``CALIBRATION_DOCS`` positions."""
    encoder, limit = fast_encoder(tokenizer), recipe.data.max_doc_tokens
    measured = []
    for number, index in enumerate(indexes):
        sample = index.sample(CALIBRATION_DOCS, np.random.default_rng([recipe.data.seed, 5, number]))
        texts = [t for t in sample if t is not None]
        lengths = [len(e.ids) for e in encoder.encode_batch(texts, add_special_tokens=True)] if texts else []
        tokens = sum(min(n, limit) if limit else n for n in lengths)
        if tokens == 0:
            raise DataError(f"source {index.config.name!r}: no usable document in a sample of {len(sample)}")
        measured.append(
            {
                "name": index.config.name,
                "documents": index.documents,
                "blocks": len(index.blocks),
                "largest_block": int(index.counts.max()),
                "mean_tokens": tokens / len(sample),
                "mean_chars": sum(len(t) for t in texts) / len(sample),
                "sampled": len(sample),
            }
        )
    return measured


def check_task_memory(recipe: Recipe, sources: list[dict]) -> None:
    """A task holds one packing buffer, one ``encode_batch`` chunk and one block per source: refuse a recipe
    whose estimate (from the sources' measured sizes) exceeds ``data.task_memory_bytes`` before a task
    builds any shard."""
    data = recipe.data
    tokens = max(s["mean_tokens"] for s in sources)
    chars = max(s["mean_chars"] for s in sources)
    buffer = data.buffer_docs * (chars + tokens * BUFFER_BYTES_PER_TOKEN)
    chunk = CHUNK_DOCS * tokens * ENCODING_BYTES_PER_TOKEN
    blocks = sum(s["largest_block"] * s["mean_chars"] * 2 for s in sources)  # text + its Arrow column
    total = buffer + chunk + blocks
    if total > data.task_memory_bytes:
        raise UserError(
            f"a preparation task needs ≈ {total / 2**30:.2f} GiB (packing buffer of data.buffer_docs="
            f"{data.buffer_docs} documents {buffer / 2**30:.2f} GiB, one block per source "
            f"{blocks / 2**30:.2f} GiB) over data.task_memory_bytes={data.task_memory_bytes}: raise it, "
            "lower data.buffer_docs, or split large row groups / files"
        )


# -- launching --------------------------------------------------------------------------------------


def prepare_stages(recipe: Recipe, phases: list[str], config: ExecutorConfig) -> list[Stage]:
    """The stages still to run for ``phases`` (finished ones are left out; an unfinished one resumes). The
    one-task stages whose output is missing run again even if datatrove recorded them as complete (their
    output was deleted): they are cheap, and what they read is kept. A task asks the scheduler for one CPU
    and ``data.task_memory_bytes`` + 1 GiB (the interpreter and libraries); ``executor.<kind>.stages``
    overrides it per stage."""
    layout = PrepareLayout.of(recipe)
    task = StageResources(cpus=1, mem=recipe.data.task_memory_bytes / 2**30 + 1.0)
    stages = []
    if not layout.setup_done():
        n_files = sum(len(f) for f in layout.files)
        tasks = max(1, min(config.tasks, n_files))
        index = IndexSources(recipe, layout.files)
        folder = layout.index_dir / f"tasks-{tasks}"
        stages.append(
            Stage("index", tasks, [index], folder, layout.index_fingerprint, StageResources(1, 2.0))
        )
        shutil.rmtree(layout.setup_dir / "logs", ignore_errors=True)
        setup = PrepareSetup(recipe, layout.files)
        stages.append(Stage("setup", 1, [setup], layout.setup_dir, layout.setup_fingerprint, task))
    for name in phases:
        if layout.phase_done(name):
            continue
        rows, fingerprint = layout.rows_dir(name), layout.phase_fingerprint(name)
        build = BuildShards(recipe, layout.files, name)
        folder = rows / f"build-{config.tasks}"
        stages.append(Stage(f"build_{name}", config.tasks, [build], folder, fingerprint, task))
        shutil.rmtree(rows / "finalize", ignore_errors=True)
        final = FinalizePhase(recipe, layout.files, name)
        stages.append(Stage(f"finalize_{name}", 1, [final], rows / "finalize", fingerprint, task))
    return stages


def run_prepare(recipe: Recipe, phases: list[str], config: ExecutorConfig) -> bool:
    """Prepare (or finish preparing) ``phases``: True when done here (local, Ray), False when Slurm took the
    chain of jobs (``rexbert_prepare_<stage>``)."""
    check_guided_sources(recipe, phases)
    stages = prepare_stages(recipe, phases, config)
    if not stages:
        return True
    if recipe.tokenizer.name_or_path:  # a Hub id offline, a mistyped folder: one line here, not in a task
        from training.tokenizer import load_tokenizer

        load_tokenizer(recipe.tokenizer.name_or_path)
    return run_stages(stages, config, job="prepare", job_prefix="rexbert_prepare")


def prepare_command(
    recipe_path: str, phase: str, output_dir: str, overrides: list[str], config: ExecutorConfig
) -> str:
    """The ``rexbert prepare`` command line that prepares ``phase`` of this recipe for this output folder."""
    words = ["rexbert", "prepare", "--recipe", recipe_path, "--phase", phase, "--output-dir", output_dir]
    words += ["--executor", config.kind, "--tasks", str(config.tasks)]
    for override in overrides:
        words += ["--set", override]
    return shlex.join(words)


def prepared_rows(layout: PrepareLayout, phase_name: str):
    """The phase's finished build (memory-mapped), or None."""
    return load_build(layout.rows_dir(phase_name), layout.phase_fingerprint(phase_name))
