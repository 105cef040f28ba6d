"""The Ecom-niverse pipeline as datatrove pipelines chained with ``depends``, so the same config runs
unchanged on ``LocalPipelineExecutor``, ``RayPipelineExecutor`` and ``SlurmPipelineExecutor``:

=========  =======  ===========================================================================
stage      tasks    steps
=========  =======  ===========================================================================
prepare    N        read (sharded) -> domain selection -> language ID -> quality -> sample keys
                    -> boilerplate/ads -> adult -> write shard -> MinHash signatures
sample     1        global per-domain bottom-k over the tasks' keys (no text)
fetch      N        the chosen records' texts, read back from prepare rank r's input files
audit      1        first labels on a pool -> stratified audit rounds -> confirmed kappa gate
label      N        primary labels with the chosen prompt (cached, resumable, coverage-gated)
train      D        one calibrated fastText classifier per filter-required domain
buckets    B        MinHash buckets (one task per LSH band)
cluster    1        duplicate clusters (keep the smallest id hash of each)
select     N        read shard -> drop duplicates -> relevance -> tally -> write dataset shard
finalize   1        report + dataset card from the merged datatrove stats
=========  =======  ===========================================================================

Each stage lives in ``work/<stage>-<fingerprint>/`` (outputs + datatrove logs and completion markers). The
fingerprint hashes the config fields the stage depends on, the contents of the files it reads (word list,
language-ID model, prompts, labeler weights), the package version and its upstream stages' fingerprints, so
a change recomputes exactly the affected stages, a killed run resumes from datatrove's completion markers,
and deleting a stage's folder reruns that stage.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from curation.config import CurationConfig, LabelerConfig, SourceConfig, config_to_dict
from curation.digests import file_digest, weights_digest
from rexbert_common.executors import Stage, StageResources, run_stages
from rexbert_common.executors import build_executors as _executors

STAGES = (
    "prepare",
    "sample",
    "fetch",
    "audit",
    "label",
    "train",
    "buckets",
    "cluster",
    "select",
    "finalize",
)


def package_version() -> str:
    try:
        return version("rexbert")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "source"


def fingerprint(stage: str, payload: Any) -> str:
    blob = json.dumps(
        _canonical({"stage": stage, "version": package_version(), **payload}), sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _canonical(value: Any) -> Any:
    """Integral floats as ints: a float field's default ``10`` and a loaded ``10.0`` are the same setting."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def prompt_digests(config: CurationConfig) -> dict[str, str]:
    folder = config.prompts_dir()
    return {v: file_digest(folder / f"{v}.yaml") for v in config.audit.prompt_versions}


def labeler_digest(labeler: LabelerConfig) -> str:
    """The weights a local labeler loads (the bundled encoder for an empty zero-shot model); remote models
    are named by endpoint + model, which the config already holds."""
    if labeler.kind == "http":
        return "remote"
    if labeler.model:
        return weights_digest(labeler.model) if Path(labeler.model).exists() else f"hub:{labeler.model}"
    if labeler.kind == "zero_shot":
        from curation.labelers.zero_shot import bundled_minilm_path

        return weights_digest(bundled_minilm_path())
    return "none"


def input_sources(config: CurationConfig, work: Path) -> list[tuple[str, SourceConfig]]:
    """(name, source) pairs; the offline demo input is built here, once, before any task starts."""
    sources = [(f"source{i}", s) for i, s in enumerate(config.input.sources)]
    if config.input.demo:
        from curation.demo_data import build_demo_input

        path = build_demo_input(work / "demo_input", max_chars=config.input.max_chars)
        sources.append(("demo", SourceConfig(path=str(path), format="jsonl")))
    return sources


# Costs behind the stage defaults, measured per stage by `benchmarks/bench_curation.py --sections costs`
# (every task in a fresh process at two sample sizes; RSS slopes, which exceed tracemalloc's by the
# allocator's overhead; docs/curation.md, *Resources per stage*); each default adds head-room over them.
BASE_GIB = 1.0  # interpreter, datatrove, pyarrow, sklearn: 0.16 GiB resident
ENCODER_GIB = 1.5  # torch + a sentence-transformers encoder: 1.0 GiB added (MiniLM, a batch of 64)
PREPARE_GIB = 2.0  # + lid.176, spaCy, the URL blocklist (4.5 M domains): 1.5 GiB added
TRAIN_GIB = 1.5  # the URL blocklist (adult drop rate) + fastText: 1.2 GiB added
KEY_BYTES = 2_000  # one (key, id, rank) of the sample held by the merge: 1.75 kB RSS (220 B traced)
DOC_BYTES = 50_000  # one sampled document held by label: 49 kB RSS (11 kB traced) at 1.4 k chars mean
CLUSTER_BYTES_PER_DUPLICATE = 600  # union-find node + keeper of a duplicated document: 558 B RSS
CLUSTER_BYTES_PER_DOC = 9  # the id-hash key file of every document, read per file: 8.5 B RSS
DUPLICATE_SHARE = 0.3  # FineWeb-like web crawls


def stage_resources(config: CurationConfig) -> dict[str, StageResources]:
    """Each stage's default request for one task (``executor.<kind>.stages`` overrides them)."""
    domains = len(config.domains.filter_required)
    sample = config.sampling.per_domain * domains
    per_task = sample / config.executor.tasks
    labeler_gib = ENCODER_GIB if config.labeler.kind != "http" else 0.0
    auditor_gib = ENCODER_GIB if config.audit.labeler.kind != "http" else 0.0
    gib = lambda n_bytes: n_bytes / 2**30
    docs = config.input.expected_documents
    cluster = gib(docs * (DUPLICATE_SHARE * CLUSTER_BYTES_PER_DUPLICATE + CLUSTER_BYTES_PER_DOC))
    mem = lambda value: float(math.ceil(value))
    return {
        "prepare": StageResources(cpus=1, mem=mem(BASE_GIB + PREPARE_GIB)),
        "sample": StageResources(cpus=1, mem=mem(BASE_GIB + gib(sample * KEY_BYTES))),
        "fetch": StageResources(cpus=1, mem=mem(BASE_GIB + gib(per_task * DOC_BYTES))),
        "audit": StageResources(
            cpus=1,
            mem=mem(
                BASE_GIB + labeler_gib + auditor_gib + gib(config.audit.pool_per_domain * domains * DOC_BYTES)
            ),
        ),
        "label": StageResources(cpus=1, mem=mem(BASE_GIB + labeler_gib + gib(per_task * DOC_BYTES))),
        "train": StageResources(
            cpus=1, mem=mem(BASE_GIB + TRAIN_GIB + gib(config.sampling.per_domain * DOC_BYTES))
        ),
        "buckets": StageResources(cpus=1, mem=mem(BASE_GIB + 1)),
        "cluster": StageResources(cpus=1, mem=mem(BASE_GIB + 1 + cluster), time="48:00:00"),
        "select": StageResources(cpus=1, mem=mem(BASE_GIB + PREPARE_GIB)),
        "finalize": StageResources(cpus=1, mem=mem(BASE_GIB)),
    }


def build_stages(config: CurationConfig) -> list[Stage]:
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupFilter

    from curation.audit import AuditStage
    from curation.fetch import FetchSample
    from curation.filters import (
        AdultFilter,
        BoilerplateFilter,
        DomainRouter,
        LanguageFilter,
        QualityFilter,
        RelevanceFilter,
        normalise_domain,
    )
    from curation.finalize import DatasetTally, Finalize
    from curation.labelling import LabelShard, TrainDomain
    from curation.minhash import KeyedMinhashCluster, KeyedMinhashSignature, minhash_config
    from curation.readers import make_reader
    from curation.sampling import ChooseSample, SampleKeys
    from curation.shards import PreparedShardReader, ShardManifest, dataset_writer, prepared_writer

    root = Path(config.output.dir).resolve()
    work = root / "work"
    c = config_to_dict(config)
    tasks, dedup = config.executor.tasks, config.cleaning.dedup.enabled
    resources = stage_resources(config)
    stages: dict[str, Stage] = {}

    def stage(name: str, n_tasks: int, payload: dict[str, Any], build) -> Stage:
        fp = fingerprint(name, payload)
        folder = work / f"{name}-{fp}"
        stages[name] = Stage(name, n_tasks, build(folder), folder, fp, resources=resources[name])
        return stages[name]

    sources = input_sources(config, work)
    word_list = file_digest(config.cleaning.adult.word_list) if config.cleaning.adult.word_list else None
    prepare = stage(
        "prepare",
        tasks,
        {
            "input": {k: v for k, v in c["input"].items() if k != "expected_documents"},
            "domains": c["domains"],
            "cleaning": c["cleaning"],
            "word_list": word_list,
            "lid_model": file_digest(config.resolved_lid_path()),
            "seed": config.sampling.seed,
            "per_domain": config.sampling.per_domain,
            "tasks": tasks,
        },
        lambda d: [
            *(make_reader(source, config.input.max_chars, name) for name, source in sources),
            DomainRouter(config.domains),
            LanguageFilter(config.cleaning.lid, str(config.resolved_lid_path())),
            QualityFilter(config.cleaning.quality),
            SampleKeys(str(d / "keys"), config.sampling.per_domain, config.sampling.seed),
            *(
                [BoilerplateFilter(config.cleaning.boilerplate)]
                if config.cleaning.boilerplate.enabled
                else []
            ),
            AdultFilter(config.cleaning.adult),
            prepared_writer(str(d / "docs")),
            ShardManifest(str(d / "docs")),
            *([KeyedMinhashSignature(str(d / "minhash"), config.cleaning.dedup)] if dedup else []),
        ],
    )
    sample = stage(
        "sample",
        1,
        {"prepare": prepare.fingerprint},
        lambda d: [ChooseSample(str(prepare.dir / "keys"), str(d), config.sampling.per_domain, tasks)],
    )
    fetch = stage(
        "fetch",
        tasks,
        {"sample": sample.fingerprint},
        lambda d: [
            FetchSample(
                sources,
                config.input.max_chars,
                config.domains,
                config.cleaning.quality,
                str(sample.dir),
                str(d / "fetched"),
            )
        ],
    )
    labelling = {
        "labeler": c["labeler"],
        "labeler_weights": labeler_digest(config.labeler),
        "prompts": prompt_digests(config),  # what the prompts say, wherever they live
    }
    audit = stage(
        "audit",
        1,
        {
            "fetch": fetch.fingerprint,
            **labelling,
            "audit": {k: v for k, v in c["audit"].items() if k != "prompts_dir"},
            "auditor_weights": labeler_digest(config.audit.labeler),
        },
        lambda d: [
            AuditStage(
                c, str(fetch.dir / "fetched"), str(d), str(work / "label_cache" / "audit.sqlite"), tasks
            )
        ],
    )
    label = stage(
        "label",
        tasks,
        {"audit": audit.fingerprint, **labelling},
        lambda d: [
            LabelShard(
                c["labeler"],
                config.labeler.min_coverage,
                str(config.prompts_dir()),
                str(audit.dir),
                str(fetch.dir / "fetched"),
                str(d / "labels"),
                str(work / "label_cache"),
            )
        ],
    )
    filter_domains = sorted({normalise_domain(d) for d in config.domains.filter_required})
    train = stage(
        "train",
        len(filter_domains),
        {
            "label": label.fingerprint,
            "classifier": c["classifier"],
            "boilerplate": c["cleaning"]["boilerplate"],
            "adult": c["cleaning"]["adult"],
            "word_list": word_list,
        },
        lambda d: [TrainDomain(c, str(label.dir / "labels"), tasks, str(d))],
    )
    upstream = {"prepare": prepare.fingerprint}
    if dedup:
        mh = minhash_config(config.cleaning.dedup)
        buckets = stage(
            "buckets",
            config.cleaning.dedup.buckets,
            upstream,
            lambda d: [MinhashDedupBuckets(str(prepare.dir / "minhash"), str(d / "dups"), config=mh)],
        )
        cluster = stage(
            "cluster",
            1,
            {"buckets": buckets.fingerprint},
            lambda d: [
                KeyedMinhashCluster(
                    str(buckets.dir / "dups"),
                    str(d / "remove"),
                    str(prepare.dir / "minhash" / "keys"),
                    config.cleaning.dedup,
                )
            ],
        )
        upstream = {"cluster": cluster.fingerprint}
    select = stage(
        "select",
        tasks,
        {**upstream, "train": train.fingerprint, "tasks": tasks},
        lambda d: [
            PreparedShardReader(str(prepare.dir / "docs")),
            *([MinhashDedupFilter(str(stages["cluster"].dir / "remove"))] if dedup else []),
            RelevanceFilter(str(train.dir / "classifiers")),
            DatasetTally(),
            dataset_writer(str(d / "dataset" / "data")),
        ],
    )
    card = {k: v for k, v in c["output"].items() if k != "dir"}  # a moved output folder stays complete
    stage(
        "finalize",
        1,
        {"select": select.fingerprint, "card": card},
        lambda d: [Finalize(c, {name: str(s.dir) for name, s in stages.items()}, str(root))],
    )
    return list(stages.values())


def build_executors(config: CurationConfig, stop_after: str | None = None) -> list:
    """One executor per stage, each depending on the previous one."""
    return _executors(_stages_until(config, stop_after), config.executor)


def _stages_until(config: CurationConfig, stop_after: str | None) -> list[Stage]:
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after={stop_after!r} is not one of {STAGES}")
    stages = build_stages(config)
    names = [stage.name for stage in stages]
    if stop_after in names:  # a stage absent from this config (dedup off: buckets, cluster) stops nowhere
        stages = stages[: names.index(stop_after) + 1]
    return stages


def run_pipeline(config: CurationConfig, stop_after: str | None = None) -> dict[str, Any] | None:
    """Run (or resume) every stage. Local and Ray run the stages one after the other and return the report;
    Slurm submits the chain of dependent jobs and returns None."""
    from curation.io_utils import read_json

    root = Path(config.output.dir)
    stages = _stages_until(config, stop_after)  # bad input (a source matching no file): no output at all
    root.mkdir(parents=True, exist_ok=True)
    if not run_stages(stages, config.executor):
        return None  # Slurm took the chain
    report = root / "report" / "report.json"
    if stop_after in (None, "finalize") and report.exists():
        return read_json(report)
    return None
