"""The Ecom-niverse pipeline: ingest -> sample -> label + audit -> fastText per domain -> apply + clean
(parallel, datatrove executor) -> MinHash dedup -> HF dataset + card -> report.

Every stage writes atomically and marks completion with its last file, so a killed run restarted with the same
config skips finished work and ends with byte-identical outputs. Layout under ``output.dir``::

    work/ingest/shard_*.parquet      work/labels/{cache.sqlite,labels.parquet,audit.json}
    work/classifiers/<domain>.{bin,json}   work/clean/shard_*.{parquet,stats.json}
    work/dedup/duplicates.json
    dataset/data/train-*.parquet + dataset/README.md          report/{report.json,report.md,*.png}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from curation.config import CurationConfig, config_to_dict
from curation.io_utils import read_json, write_json_atomic, write_parquet_atomic
from curation.stats import StepStats

log = logging.getLogger("curation")
STAGES = ("ingest", "sample", "label", "train", "clean", "dedup", "write", "report")


class Paths:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.work = self.root / "work"
        self.dataset = self.root / "dataset"
        self.report = self.root / "report"

    def ingest_shard(self, shard: int) -> Path:
        return self.work / "ingest" / f"shard_{shard:05d}.parquet"


# ----------------------------------------------------------------------------------------------- ingest
def stage_ingest(config: CurationConfig, paths: Paths) -> dict[str, Any]:
    """Read + validate every source, route by domain, spread over shards by a hash of the id."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    from curation.documents import iter_source
    from curation.domains import DomainSelector, normalise_domain
    from curation.sampling import sample_key

    done = paths.work / "ingest" / "_stats.json"
    if done.exists():
        return read_json(done)
    sources = list(config.input.sources)
    if config.input.demo:
        from curation.demo_data import build_demo_input

        sources.append(str(build_demo_input(paths.work / "demo_input", max_chars=config.input.max_chars)))
    validation = StepStats("input_validation")
    selector = DomainSelector(config.domains)
    shards: list[dict[str, list]] = [
        {k: [] for k in ("id", "text", "domain", "url", "source", "route", "truth")}
        for _ in range(config.input.num_shards)
    ]
    seen: set[str] = set()
    truth_field = "is_commerce"
    for spec in sources:
        for doc, why in tqdm(
            iter_source(spec, config.input.text_field, config.input.domain_field, config.input.max_chars),
            desc=f"ingest {Path(spec).name}",
            unit="doc",
        ):
            if doc is None:
                validation.drop(why)
                continue
            if doc.id in seen:  # ids must be unique: they key the sample, the label cache and dedup order
                validation.drop("duplicate_id")
                continue
            seen.add(doc.id)
            validation.keep()
            route = selector.route(doc.domain)
            if route is None:
                continue
            shard = shards[sample_key(0, doc.id) % config.input.num_shards]
            for key, value in (
                ("id", doc.id),
                ("text", doc.text),
                ("domain", normalise_domain(doc.domain)),
                ("url", doc.url),
                ("source", doc.source),
                ("route", route),
                ("truth", _truth(doc, truth_field)),
            ):
                shard[key].append(value)
    for i, cols in enumerate(shards):
        write_parquet_atomic(paths.ingest_shard(i), pa.table(cols, schema=_INGEST_SCHEMA()))
    stats = {"input_validation": validation.as_dict(), "domain_selection": selector.stats.as_dict()}
    write_json_atomic(done, stats)
    return stats


def _INGEST_SCHEMA():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("domain", pa.string()),
            ("url", pa.string()),
            ("source", pa.string()),
            ("route", pa.string()),
            ("truth", pa.int8()),
        ]
    )


def _truth(doc, field: str) -> int:
    """Known relevance (demo only: the source class), -1 when unknown. Used for reporting, never for
    training."""
    value = doc.metadata.get(field)
    return int(value) if value in (0, 1, True, False) else -1


# ----------------------------------------------------------------------------------------------- sample
def stage_sample(config: CurationConfig, paths: Paths):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.sampling import sample_per_domain

    out = paths.work / "sample" / "sample.parquet"
    if out.exists():
        return pq.read_table(out)
    tables = [pq.read_table(paths.ingest_shard(s)) for s in range(config.input.num_shards)]
    table = pa.concat_tables(tables)
    route = table.column("route").to_pylist()
    ids, domains = table.column("id").to_pylist(), table.column("domain").to_pylist()
    chosen = sample_per_domain(
        ((d, i) for d, i, r in zip(domains, ids, route) if r == "filter"),
        config.sampling.per_domain,
        config.sampling.seed,
    )
    order = {doc_id: n for n, doc_id in enumerate(i for d in sorted(chosen) for i in chosen[d])}
    rows = sorted((order[i], k) for k, i in enumerate(ids) if i in order)
    sample = table.take([k for _, k in rows]).select(["id", "text", "domain", "truth"])
    write_parquet_atomic(out, sample)
    return sample


# ----------------------------------------------------------------------------------------------- label +
# audit
def stage_label(config: CurationConfig, paths: Paths, sample) -> dict[str, Any]:
    """Label the sample with the primary labeler, audit with the stronger one, revise prompt until stable."""
    import pyarrow as pa

    from curation.audit import audit_round, run_audit_loop, stratified_subset
    from curation.labelers import LabelCache, label_documents, make_labeler
    from curation.relevance import get_prompt

    done = paths.work / "labels" / "audit.json"
    if done.exists():
        return read_json(done)
    ids, texts = sample.column("id").to_pylist(), sample.column("text").to_pylist()
    domains = sample.column("domain").to_pylist()
    cache = LabelCache(paths.work / "labels" / "cache.sqlite")
    primary, auditor = make_labeler(config.labeler), make_labeler(config.audit.labeler)
    labels_by_version: dict[str, list] = {}
    stats_by_version: dict[str, dict] = {}
    try:

        def one_round(version: str):
            prompt = get_prompt(version)
            results, stats = label_documents(
                texts, primary, prompt, cache, config.labeler.batch_size, desc=f"label {version}"
            )
            labels = [r.label for r in results]
            labels_by_version[version] = labels
            if not any(label is not None for label in labels):
                raise RuntimeError(
                    f"labeler {primary.identity} produced no usable label for prompt {version} "
                    f"({stats.as_dict()}); is the endpoint/model reachable?"
                )
            subset = stratified_subset(
                domains, labels, ids, config.audit.subset_per_class, config.sampling.seed
            )
            audit_results, audit_stats = label_documents(
                [texts[i] for i in subset],
                auditor,
                prompt,
                cache,
                config.audit.labeler.batch_size,
                desc=f"audit {version}",
            )
            record = audit_round(
                version,
                [domains[i] for i in subset],
                [ids[i] for i in subset],
                [texts[i] for i in subset],
                [labels[i] for i in subset],
                [r.label for r in audit_results],
            )
            record.label_stats = {"primary": stats.as_dict(), "auditor": audit_stats.as_dict()}
            stats_by_version[version] = stats.as_dict()
            return record

        rounds, chosen = run_audit_loop(
            config.audit.prompt_versions,
            one_round,
            config.audit.target_agreement,
            config.audit.min_improvement,
        )
    finally:
        cache.close()
    labels = labels_by_version[chosen]
    table = pa.table(
        {"id": ids, "domain": domains, "label": pa.array(labels, pa.int8()), "truth": sample.column("truth")}
    )
    write_parquet_atomic(paths.work / "labels" / "labels.parquet", table)
    result = {
        "chosen_prompt_version": chosen,
        "primary_labeler": primary.identity,
        "auditor_labeler": auditor.identity,
        "rounds": [r.as_dict() for r in rounds],
        "label_stats": stats_by_version[chosen],
    }
    write_json_atomic(done, result)
    return result


# ----------------------------------------------------------------------------------------------- train
def stage_train(config: CurationConfig, paths: Paths) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from curation.classifier import train_domain_classifier

    folder = paths.work / "classifiers"
    done = folder / "_summary.json"
    if done.exists():
        return read_json(done)
    table = pq.read_table(paths.work / "labels" / "labels.parquet")
    rows = [r for r in table.to_pylist() if r["label"] is not None]
    texts = dict(
        zip(
            *(
                pq.read_table(paths.work / "sample" / "sample.parquet", columns=["id", "text"])
                .column(c)
                .to_pylist()
                for c in ("id", "text")
            )
        )
    )
    summary = {}
    for domain in tqdm(sorted({r["domain"] for r in rows}), desc="fastText per domain"):
        sub = [r for r in rows if r["domain"] == domain]
        meta = folder / f"{domain}.json"
        if meta.exists():
            summary[domain] = read_json(meta)
            continue
        truth = [r["truth"] for r in sub]
        summary[domain] = train_domain_classifier(
            domain,
            [r["id"] for r in sub],
            [texts[r["id"]] for r in sub],
            [r["label"] for r in sub],
            config.classifier,
            folder,
            truth=truth if all(t in (0, 1) for t in truth) else None,
        )
    write_json_atomic(done, summary)
    return summary


# ----------------------------------------------------------------------------------------------- clean
def stage_clean(config: CurationConfig, paths: Paths) -> list[dict[str, Any]]:
    from curation.apply import load_shard_stats
    from curation.datatrove_steps import run_clean_stage

    missing = [
        s
        for s in range(config.input.num_shards)
        if not (paths.work / "clean" / f"shard_{s:05d}.stats.json").exists()
    ]
    if missing:
        run_clean_stage(config, paths.work)
    missing = [
        s
        for s in range(config.input.num_shards)
        if not (paths.work / "clean" / f"shard_{s:05d}.stats.json").exists()
    ]
    if missing:
        raise RuntimeError(
            f"clean stage incomplete: shards {missing[:10]} have no output yet (a cluster executor "
            f"may still be running them); rerun the same command when they finish"
        )
    return load_shard_stats(paths.work, config.input.num_shards)


# ----------------------------------------------------------------------------------------------- dedup
def stage_dedup(config: CurationConfig, paths: Paths) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    from curation.cleaning.dedup import find_near_duplicates

    out = paths.work / "dedup" / "duplicates.json"
    if out.exists():
        return read_json(out)
    ids, domains, sigs, tokens = [], [], [], []
    for s in range(config.input.num_shards):
        t = pq.read_table(paths.work / "clean" / f"shard_{s:05d}.parquet")
        ids += t.column("id").to_pylist()
        domains += t.column("domain").to_pylist()
        tokens += [len(x.split()) for x in t.column("text").to_pylist()]
        if config.cleaning.dedup.enabled:
            sigs += t.column("minhash").to_pylist()
    stats = StepStats("dedup")
    per_domain: dict[str, StepStats] = {}
    dropped: dict[str, str] = {}
    if config.cleaning.dedup.enabled and ids:
        dtype = (
            np.uint32
            if len(sigs[0]) == 4 * config.cleaning.dedup.bands * config.cleaning.dedup.rows
            else np.uint64
        )
        matrix = np.stack([np.frombuffer(b, dtype=dtype) for b in sigs])  # (N, bands*rows)
        mask, roots = find_near_duplicates(matrix, config.cleaning.dedup)
        dropped = {ids[i]: ids[r] for i, r in roots.items()}
    for doc_id, domain, n_tok in zip(ids, domains, tokens):
        step = per_domain.setdefault(domain, StepStats("dedup"))
        if doc_id in dropped:
            stats.drop("near_duplicate", tokens=n_tok)
            step.drop("near_duplicate", tokens=n_tok)
        else:
            stats.keep()
            step.keep(tokens=n_tok)
    result = {
        "stats": stats.as_dict(),
        "per_domain": {d: s.as_dict() for d, s in sorted(per_domain.items())},
        "duplicates": dict(sorted(dropped.items())),
    }
    write_json_atomic(out, result)
    return result


# ----------------------------------------------------------------------------------------------- driver
def run_pipeline(config: CurationConfig, stop_after: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report dict."""
    from curation.report import build_report
    from curation.writer import write_dataset

    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after={stop_after!r} is not one of {STAGES}")
    paths = Paths(config.output.dir)
    paths.work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.work / "config.json", config_to_dict(config))
    results: dict[str, Any] = {}
    for stage in STAGES:
        log.info("curation stage %s", stage)
        if stage == "ingest":
            results["ingest"] = stage_ingest(config, paths)
        elif stage == "sample":
            results["sample_size"] = stage_sample(config, paths).num_rows
        elif stage == "label":
            results["labels"] = stage_label(config, paths, stage_sample(config, paths))
        elif stage == "train":
            results["classifiers"] = stage_train(config, paths)
        elif stage == "clean":
            results["clean"] = stage_clean(config, paths)
        elif stage == "dedup":
            results["dedup"] = stage_dedup(config, paths)
        elif stage == "write":
            results["dataset"] = write_dataset(config, paths, results["dedup"]["duplicates"])
        elif stage == "report":
            results["report"] = build_report(config, paths, results)
        if stage == stop_after:
            break
    return results
