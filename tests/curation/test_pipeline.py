"""The whole pipeline on a small web-like corpus: the output does not depend on the executor or the task
count, a killed run resumes to the same output, and config / folder changes recompute what they affect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curation.pipeline import build_stages, run_pipeline
from rexbert_common.errors import UserError
from tests.curation.conftest import curation_config, dataset_rows


def _sources(corpus: Path) -> list[dict]:
    return [{"path": str(corpus), "format": "jsonl"}]


@pytest.fixture(scope="module")
def reference(small_corpus, tmp_path_factory):
    """One task, one worker: the reference output every other run is compared with."""
    out = tmp_path_factory.mktemp("ref")
    report = run_pipeline(curation_config(out, _sources(small_corpus)))
    return out, report


def _stage_dirs(out: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[0]: p for p in (out / "work").iterdir() if p.is_dir() and "-" in p.name}


@pytest.mark.slow
def test_report_counts_every_drop_from_merged_stats(reference):
    out, report = reference
    drops = {reason: n for step in report["drops"].values() for reason, n in step.items()}
    assert drops["invalid_unicode"] == 1  # the JSON-escaped lone surrogate: counted, nothing crashed
    assert drops["domain_not_selected"] == 1
    assert drops["near_duplicate"] >= 1  # the planted copy
    assert report["totals"]["docs_out"] == len(dataset_rows(out)) > 0
    kept_fashion = [r for r in dataset_rows(out) if r[1] == "fashion"]
    assert len(kept_fashion) == next(d["docs"] for d in report["domains"] if d["domain"] == "fashion")
    assert [r["prompt_version"] for r in report["audit_rounds"]][0] == "v1"
    assert report["labelling"]["gate_meaningful"] is False  # the test's auditor is the same encoder
    assert "The audit gate is not meaningful in this run" in (out / "report" / "report.md").read_text()
    from datasets import load_dataset

    # the card's config finds the parquet files; a private cache: datasets' shared cache can hand back an
    # earlier run's table for a folder with the same layout
    loaded = load_dataset(str(out / "dataset"), split="train", cache_dir=str(out / "hf_cache"))
    assert sorted(loaded["id"]) == [r[0] for r in dataset_rows(out)]
    card = (out / "dataset" / "README.md").read_text()
    assert "license: odc-by" in card and str(report["totals"]["docs_out"]) in card.replace(",", "")
    # boilerplate lines were removed from every kept page, commerce lines kept
    assert not any(
        "We use cookies" in text or "All rights reserved" in text for _, _, text in dataset_rows(out)
    )


def _files_read_per_task(out: Path) -> list[int]:
    """Input files each prepare task read (from its datatrove stats): the split was not trivial when every
    task read some."""
    import json

    counts = []
    for path in sorted((_stage_dirs(out)["prepare"] / "logs" / "stats").glob("*.json")):
        steps = json.loads(path.read_text())
        counts.append(sum(int(_total(s["stats"].get("input_files", 0))) for s in steps))
    return counts


def _total(value):
    return value.get("total", 0) if isinstance(value, dict) else value


@pytest.mark.slow
@pytest.mark.parametrize("tasks", [2, 4])
def test_more_tasks_give_the_same_dataset_as_one(reference, small_corpus, tmp_path, tasks):
    out, _ = reference
    run_pipeline(
        curation_config(tmp_path, _sources(small_corpus), **{"executor.tasks": tasks, "executor.workers": 2})
    )
    assert len(_files_read_per_task(tmp_path)) == tasks and min(_files_read_per_task(tmp_path)) >= 1
    assert dataset_rows(tmp_path) == dataset_rows(out)


@pytest.mark.slow
def test_one_task_with_a_worker_pool_gives_the_same_dataset(reference, small_corpus, tmp_path):
    """`rexbert curate --num-tasks 1` with the default workers: one-task stages run in-process, the 14-task
    bucket stage in a pool (the pool once received the finished stages' loaded fastText models)."""
    out, _ = reference
    run_pipeline(
        curation_config(tmp_path, _sources(small_corpus), **{"executor.tasks": 1, "executor.workers": -1})
    )
    assert dataset_rows(tmp_path) == dataset_rows(out)


class _CountingLabeler:
    """A deterministic stand-in for an LLM endpoint that counts the documents it is asked about."""

    identity = model_identity = "counting"
    asked = 0

    def label_batch(self, texts, prompt):
        from curation.labelers import LabelResult

        _CountingLabeler.asked += len(texts)
        return [LabelResult(len(text) % 2, "ok", "") for text in texts]


@pytest.mark.slow
def test_a_rerun_with_another_task_count_asks_the_labeler_nothing(small_corpus, tmp_path, monkeypatch):
    """--tasks 2, then --tasks 3 on the same output: every stage is recomputed (the task count is in the
    fingerprints) but every label comes from the caches -- zero labeler calls -- and the labels are equal."""
    import curation.labelers
    from curation.labelling import read_rows

    monkeypatch.setattr(curation.labelers, "make_labeler", lambda config: _CountingLabeler())
    labels = {}
    for tasks in (2, 3):
        # an audit pool smaller than the sample: most labels come from the label stage, not the audit
        overrides = {"executor.tasks": tasks, "audit.pool_per_domain": 10, "audit.subset_per_class": 4}
        config = curation_config(tmp_path, _sources(small_corpus), **overrides)
        _CountingLabeler.asked = 0
        run_pipeline(config, stop_after="label")
        label = next(s for s in build_stages(config) if s.name == "label")
        rows = read_rows(str(label.dir / "labels"), tasks, ("id", "text", "label", "status"))
        labels[tasks] = (sorted(rows, key=lambda r: r["id"]), _CountingLabeler.asked)
    (first, asked_first), (second, asked_second) = labels[2], labels[3]
    assert asked_first >= len(first) > 20 and asked_second == 0
    assert second == first


_RAY_PROBE = """
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
ray.shutdown()
"""


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for this module. A machine where Ray itself cannot start a task (checked in a
    separate process, so a hang there cannot hang the suite) skips these checks and prints why."""
    import subprocess
    import sys

    ray = pytest.importorskip("ray")
    try:
        command = [sys.executable, "-c", _RAY_PROBE]
        probe = subprocess.run(command, capture_output=True, text=True, timeout=180)
        reason = None if probe.returncode == 0 else probe.stderr.strip()[-800:]
    except subprocess.TimeoutExpired:
        reason = "a one-task Ray probe did not finish in 180 s"
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
    if reason is not None:
        pytest.skip(f"Ray cannot run a task on this machine: {reason}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_four_tasks_give_the_same_dataset_as_local_one(reference, small_corpus, tmp_path, ray_cluster):
    out, _ = reference
    overrides = {"executor.kind": "ray", "executor.tasks": 4, "executor.workers": 2}
    config = curation_config(tmp_path, _sources(small_corpus), **overrides)
    config.executor.ray = {"mem_per_cpu_gb": 0.5}
    run_pipeline(config)
    assert min(_files_read_per_task(tmp_path)) >= 1
    assert dataset_rows(tmp_path) == dataset_rows(out)


@pytest.mark.slow
def test_ray_refuses_a_task_no_node_can_hold(small_corpus, tmp_path, ray_cluster):
    config = curation_config(tmp_path, _sources(small_corpus), **{"executor.kind": "ray"})
    config.executor.ray = {"mem_per_cpu_gb": 4096}
    with pytest.raises(UserError, match=r"4096\.00 GiB per task on Ray.*executor\.ray\.stages\.prepare"):
        run_pipeline(config)
    assert not any((tmp_path / "work").glob("*/logs/completions/*"))  # refused before any task ran


class _FailOnRank:
    """A pipeline step that fails on one rank, as a worker crash would."""

    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        if rank == self.rank:
            raise RuntimeError(f"planted failure on rank {rank}")
        yield from data or ()


@pytest.mark.slow
def test_a_failed_ray_task_stops_the_run_naming_its_stage(tmp_path, ray_cluster):
    from datatrove.executor import RayPipelineExecutor

    from rexbert_common.executors import run_stage

    first = RayPipelineExecutor([_FailOnRank(1)], tasks=3, workers=2, logging_dir=str(tmp_path / "a"))
    first.mem_per_cpu_gb = 0.25
    with pytest.raises(UserError, match=r"stage 'prepare': 1 of 3 tasks did not complete \(ranks 1\)"):
        run_stage(first, "prepare")


@pytest.mark.slow
def test_rerun_is_a_no_op_and_a_deleted_stage_folder_is_recomputed(reference, small_corpus, tmp_path):
    out, _ = reference
    shutil.copytree(out, tmp_path / "run", symlinks=True)
    run = tmp_path / "run"
    config = curation_config(run, _sources(small_corpus))
    assert all(stage.done() for stage in build_stages(config))
    shutil.rmtree(_stage_dirs(run)["select"])
    assert not (run / "dataset" / "data").exists()
    run_pipeline(config)
    assert dataset_rows(run) == dataset_rows(out)


def _fingerprints(out, corpus, **overrides) -> dict[str, str]:
    return {s.name: s.fingerprint for s in build_stages(curation_config(out, _sources(corpus), **overrides))}


def _changed(base: dict[str, str], other: dict[str, str]) -> set[str]:
    return {name for name in base if base[name] != other[name]}


LABEL_SIDE = {"audit", "label", "train", "select", "finalize"}


def test_a_config_change_recomputes_exactly_the_stages_it_affects(small_corpus, tmp_path):
    base = _fingerprints(tmp_path, small_corpus)
    threshold = _fingerprints(tmp_path, small_corpus, **{"classifier.target_precision": 0.8})
    assert _changed(base, threshold) == {"train", "select", "finalize"}
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **{"audit.min_pairs": 6})) == LABEL_SIDE
    assert _changed(
        base, _fingerprints(tmp_path, small_corpus, **{"cleaning.quality.min_doc_words": 25})
    ) == set(base)  # upstream of everything
    tasks = _fingerprints(tmp_path, small_corpus, **{"executor.tasks": 3})
    assert tasks["prepare"] != base["prepare"] and tasks["select"] != base["select"]
    assert (
        _changed(base, _fingerprints(tmp_path, small_corpus, **{"executor.slurm": {"partition": "x"}}))
        == set()
    )


def test_a_config_and_its_saved_copy_have_the_same_fingerprints(small_corpus, tmp_path):
    """A float field's default (``max_avg_word_length = 10``) reloaded from a dict (``10.0``) -- how a task
    process or a rerun from a saved config sees it -- names the same stage folders."""
    from curation.config import config_from_dict, config_to_dict

    config = curation_config(tmp_path, _sources(small_corpus))
    reloaded = config_from_dict(config_to_dict(config))
    assert [s.fingerprint for s in build_stages(reloaded)] == [s.fingerprint for s in build_stages(config)]


def test_fingerprints_hash_what_the_stages_read(small_corpus, tmp_path, monkeypatch):
    """Editing a referenced file's contents (same path) or the package version recomputes exactly the stages
    that read it."""
    import shutil

    import curation.pipeline
    from curation.config import DEFAULT_PROMPTS

    words, prompts, lid = tmp_path / "words.txt", tmp_path / "prompts", tmp_path / "lid.ftz"
    words.write_text("badword\n")
    shutil.copytree(DEFAULT_PROMPTS, prompts)
    shutil.copy(curation_config(tmp_path, _sources(small_corpus)).resolved_lid_path(), lid)
    files = {
        "cleaning.adult.word_list": str(words),
        "audit.prompts_dir": str(prompts),
        "cleaning.lid.model_path": str(lid),
    }
    base = _fingerprints(tmp_path, small_corpus, **files)
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **files)) == set()  # a hash, not a timestamp
    words.write_text("badword\notherword\n")
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **files)) == set(base)  # prepare drops them
    words.write_text("badword\n")
    (prompts / "v2.yaml").write_text((prompts / "v2.yaml").read_text() + "\n# reworded\n")
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **files)) == LABEL_SIDE
    (prompts / "v2.yaml").write_text((DEFAULT_PROMPTS / "v2.yaml").read_text())
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **files)) == set()
    lid.write_bytes(lid.read_bytes() + b"\0")
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **files)) == set(base)
    shutil.copy(curation_config(tmp_path, _sources(small_corpus)).resolved_lid_path(), lid)
    monkeypatch.setattr(curation.pipeline, "package_version", lambda: "99.0")
    assert _changed(base, _fingerprints(tmp_path, small_corpus, **files)) == set(base)


@pytest.mark.slow
def test_only_directly_selected_domains(small_corpus, tmp_path, reference):
    out, _ = reference
    run_pipeline(curation_config(tmp_path, _sources(small_corpus), **{"domains.filter_required": ["travel"]}))
    rows = dataset_rows(tmp_path)
    assert rows and {domain for _, domain, _ in rows} == {"fashion"}
    assert rows == [r for r in dataset_rows(out) if r[1] == "fashion"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["prepare", "select"])
def test_killed_mid_run_and_rerun_gives_the_same_dataset(reference, small_corpus, tmp_path, stage):
    """SIGKILL the CLI as soon as the first task of ``stage`` has completed (the next one is running), then
    run the same command again: nothing lost, nothing duplicated."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from curation.config import config_to_dict

    out, _ = reference
    config = curation_config(tmp_path / "out", _sources(small_corpus), **{"executor.tasks": 4})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    command = [sys.executable, "-m", "rexbert_cli.main", "curate", "--config", str(path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = None
    while process.poll() is None and marker is None:
        marker = next((tmp_path / "out" / "work").glob(f"{stage}-*/logs/completions/00000"), None)
        time.sleep(0.02)
    assert marker is not None, "the run ended before the kill point"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stage_dir = marker.parents[2]
    assert len(list((stage_dir / "logs" / "completions").iterdir())) < 4  # really killed mid-stage
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert dataset_rows(tmp_path / "out") == dataset_rows(out)
