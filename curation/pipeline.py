"""The Ecom-niverse pipeline as six datatrove pipelines chained with ``depends``, so the same config runs
unchanged on ``LocalPipelineExecutor``, ``RayPipelineExecutor`` and ``SlurmPipelineExecutor``:

=========  ======  ==============================================================================
stage      tasks   steps
=========  ======  ==============================================================================
prepare    N       read (sharded) -> domain selection -> language ID -> quality -> labelling
                   candidates -> boilerplate/ads -> adult -> write shard -> MinHash signatures
label      1       merge candidates -> labels + QA audit loop -> calibrated fastText per domain
buckets    B       MinHash buckets (one task per LSH band)
cluster    1       duplicate clusters (keep the smallest id hash of each)
select     N       read shard -> drop duplicates -> relevance -> tally -> write dataset shard
finalize   1       report + dataset card from the merged datatrove stats
=========  ======  ==============================================================================

Each stage lives in ``work/<stage>-<fingerprint>/`` (outputs + datatrove logs and completion markers). The
fingerprint hashes the config fields the stage depends on and its upstream stages' fingerprints, so a config
change recomputes exactly the affected stages, a killed run resumes from datatrove's completion markers, and
deleting a stage's folder reruns that stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from curation.config import CurationConfig, SourceConfig, config_to_dict
from rexbert_common.executors import Stage, run_stages
from rexbert_common.executors import build_executors as _executors

STAGES = ("prepare", "label", "buckets", "cluster", "select", "finalize")


def fingerprint(stage: str, payload: Any) -> str:
    blob = json.dumps({"stage": stage, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _prompt_files(config: CurationConfig) -> dict[str, str]:
    folder = config.prompts_dir()
    return {
        v: hashlib.sha256((folder / f"{v}.yaml").read_bytes()).hexdigest()
        if (folder / f"{v}.yaml").is_file()
        else "missing"
        for v in config.audit.prompt_versions
    }


def input_sources(config: CurationConfig, work: Path) -> list[tuple[str, SourceConfig]]:
    """(name, source) pairs; the offline demo input is built here, once, before any task starts."""
    sources = [(f"source{i}", s) for i, s in enumerate(config.input.sources)]
    if config.input.demo:
        from curation.demo_data import build_demo_input

        path = build_demo_input(work / "demo_input", max_chars=config.input.max_chars)
        sources.append(("demo", SourceConfig(path=str(path), format="jsonl")))
    return sources


def build_stages(config: CurationConfig) -> list[Stage]:
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupFilter

    from curation.filters import (
        AdultFilter,
        BoilerplateFilter,
        DomainRouter,
        LanguageFilter,
        QualityFilter,
        RelevanceFilter,
    )
    from curation.finalize import DatasetTally, Finalize
    from curation.labelling import LabelAndTrain
    from curation.minhash import KeyedMinhashCluster, KeyedMinhashSignature, minhash_config
    from curation.readers import make_reader
    from curation.shards import PreparedShardReader, SampleCandidates, dataset_writer, prepared_writer

    root = Path(config.output.dir).resolve()
    work = root / "work"
    c = config_to_dict(config)
    tasks, dedup = config.executor.tasks, config.cleaning.dedup.enabled
    stages: dict[str, Stage] = {}

    def stage(name: str, n_tasks: int, payload: dict[str, Any], build) -> Stage:
        fp = fingerprint(name, payload)
        folder = work / f"{name}-{fp}"
        stages[name] = Stage(name, n_tasks, build(folder), folder, fp)
        return stages[name]

    sources = input_sources(config, work)
    prepare_payload = {
        "input": c["input"],
        "domains": c["domains"],
        "cleaning": c["cleaning"],
        "sampling": c["sampling"],
        "tasks": tasks,
        "lid": str(config.resolved_lid_path()),
    }
    prepare = stage(
        "prepare",
        tasks,
        prepare_payload,
        lambda d: [
            *(make_reader(source, config.input.max_chars, name) for name, source in sources),
            DomainRouter(config.domains),
            LanguageFilter(config.cleaning.lid, str(config.resolved_lid_path())),
            QualityFilter(config.cleaning.quality),
            SampleCandidates(str(d / "candidates"), config.sampling.per_domain, config.sampling.seed),
            *(
                [BoilerplateFilter(config.cleaning.boilerplate)]
                if config.cleaning.boilerplate.enabled
                else []
            ),
            AdultFilter(config.cleaning.adult),
            prepared_writer(str(d / "docs")),
            *([KeyedMinhashSignature(str(d / "minhash"), config.cleaning.dedup)] if dedup else []),
        ],
    )
    label = stage(
        "label",
        1,
        {
            "prepare": prepare.fingerprint,
            "labeler": c["labeler"],
            "audit": c["audit"],
            "classifier": c["classifier"],
            "prompts": _prompt_files(config),
        },
        lambda d: [
            LabelAndTrain(c, str(prepare.dir / "candidates"), str(d), str(work / "label_cache.sqlite"), tasks)
        ],
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
        {**upstream, "label": label.fingerprint, "tasks": tasks},
        lambda d: [
            PreparedShardReader(str(prepare.dir / "docs")),
            *([MinhashDedupFilter(str(stages["cluster"].dir / "remove"))] if dedup else []),
            RelevanceFilter(str(label.dir / "classifiers")),
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
    root.mkdir(parents=True, exist_ok=True)
    if not run_stages(_stages_until(config, stop_after), config.executor):
        return None  # Slurm took the chain
    report = root / "report" / "report.json"
    if stop_after in (None, "finalize") and report.exists():
        return read_json(report)
    return None
