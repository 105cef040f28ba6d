"""``rexbert prepare``: the same rows for every executor and task count, fingerprints that follow exactly the
fields that change rows, restarts that rebuild only missing shards, a driver that reads no document."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rexbert_common.errors import UserError
from rexbert_common.executors import ExecutorConfig
from tests.curation.test_executors import sbatch  # noqa: F401  (records sbatch scripts)
from tests.curation.test_pipeline import ray_cluster  # noqa: F401  (the module's Ray probe fixture)
from tests.training._tiny import PREPARE_OVERRIDES as EXTRA
from tests.training._tiny import prepare_recipe as recipe_for
from tests.training.conftest import copy_setup
from training.prepare import PrepareLayout, prepare_stages, prepared_rows, run_prepare


def build_rows(out: Path, phase: str = "phase1", *sets: str) -> tuple[dict, dict]:
    """(columns of the kept rows, phase summary) of the finished build for this recipe."""
    rows = prepared_rows(PrepareLayout.of(recipe_for(out, *sets)), phase)
    assert rows is not None, f"{out}: no finished build"
    return rows.table.to_pydict(), rows.summary()


def prepare(out: Path, *sets: str, tasks: int = 1, workers: int = 1, kind: str = "local", **options) -> bool:
    recipe = recipe_for(out, *sets)
    return run_prepare(recipe, ["phase1"], ExecutorConfig(kind=kind, tasks=tasks, workers=workers, **options))


def with_setup_of(reference, out: Path) -> Path:
    return copy_setup(reference[0], out)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_setup):
    """One task, in this process, through the command line: the rows every other run is compared with
    (the session's setup copied in; the setup stages are tested on their own)."""
    from rexbert_cli.main import main
    from tests.training._tiny import args

    out = copy_setup(tiny_setup, tmp_path_factory.mktemp("reference"))
    sets = [x for item in EXTRA for x in ("--set", item)]
    assert main(["prepare", *args(out), "--phase", "1", "--tasks", "1", "--workers", "1", *sets]) == 0
    return out, build_rows(out)


def test_three_tasks_give_the_rows_of_one(reference, tmp_path):
    out, (rows, summary) = reference
    layout = PrepareLayout.of(recipe_for(out))
    info = json.loads((layout.rows_dir("phase1") / "build.json").read_text())
    assert len(info["shards"]) >= 12 and info["built_by_finalize"] == []  # several shards per task below
    assert summary["tokens"] >= 20000 and summary["mined_spans"] > 0 and len(summary["docs_per_source"]) == 4
    prepare(with_setup_of(reference, tmp_path), tasks=3)
    assert build_rows(tmp_path) == (rows, summary)  # token ids, document lengths, spans, row order, stats


def test_training_builds_the_same_rows_in_process(reference, tmp_path):
    """A phase nobody prepared is built by training itself, through the same stages."""
    from training.curriculum import run_curriculum

    _, expected = reference
    recipe = recipe_for(with_setup_of(reference, tmp_path), "data.executor.tasks=2")
    run_curriculum(recipe, ["phase1"], prepare_only=True)
    assert build_rows(tmp_path) == expected


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_ray_four_tasks_give_the_rows_of_one_local_task(reference, tmp_path):
    _, expected = reference
    prepare(tmp_path, kind="ray", tasks=4, workers=2, ray={"mem_per_cpu_gb": 0.5})
    assert build_rows(tmp_path) == expected


def test_slurm_submits_the_chain_and_the_launcher_reads_no_document(sbatch, tmp_path, monkeypatch):  # noqa: F811
    from training import source_index

    def no_reading(*args, **kwargs):
        raise AssertionError("the launching process read a document")

    monkeypatch.setattr(source_index, "read_block", no_reading)
    monkeypatch.setattr(source_index, "count_blocks", no_reading)
    slurm = {"partition": "cpu-long", "time": "06:00:00", "cpus_per_task": 2}
    assert prepare(tmp_path, tasks=16, workers=8, kind="slurm", slurm=slurm) is False  # submitted, not run
    jobs = [c for c, _ in sbatch if "launch_pickled_pipeline" in c]
    names = [re.search(r"#SBATCH --job-name=(\S+)", c).group(1) for c in jobs]
    assert names == [f"rexbert_prepare_{s}" for s in ("index", "setup", "build_phase1", "finalize_phase1")]
    arrays = [re.search(r"#SBATCH --array=(\S+)", c).group(1) for c in jobs]
    files = sum(len(f) for f in PrepareLayout.of(recipe_for(tmp_path)).files)
    assert arrays == [f"0-{min(16, files) - 1}%8", "0-0%8", "0-15%8", "0-0%8"]
    ids = {c: str(1001 + k) for k, (c, _) in enumerate(sbatch)}
    for previous, job in zip(jobs, jobs[1:]):  # each stage waits for the previous one to succeed
        assert f"afterok:{ids[previous]}" in job + " ".join(a for c, a in sbatch if c == job for a in a)
    assert all("#SBATCH --partition=cpu-long" in c and "#SBATCH --cpus-per-task=2" in c for c in jobs)
    # a build task asks for its memory budget (4 GiB) + 1 GiB, over its 2 CPUs
    assert "#SBATCH --mem-per-cpu=2560M" in jobs[2], re.findall(r"#SBATCH --mem\S*", jobs[2])


# -- fingerprints -----------------------------------------------------------------------------------

ROW_FIELDS = [
    "phase1.tokens=21000",
    "phase1.max_seq_len=128",
    "phase1.mixture.domain_start=0.2",
    "phase1.mixture.domain_end=0.3",
    "phase1.mixture.schedule=cosine",
    "data.buffer_docs=16",
    "data.shard_buffers=2",
    "data.max_doc_tokens=300",
    "data.temperature=2.0",
    "data.seed=1",
    "seed=7",  # samples of the tokenizer's training text and of the miner's lexicon
    "data.miner_sample_docs=100",
    "data.general.0.weight=3.0",
    "data.general.0.max_docs=300",
    "data.general.0.text_fields=[text, title]",
    "data.general.0.doc_per_line=true",
    "data.domain.0.mine_attributes=false",
    "data.domain.1.path=${REXBERT_DATA_DIR}/icecat_products_chorus/icecat_text.parquet",
    "data.domain.0.name=icecat2",
    "tokenizer.vocab_size=600",
    "tokenizer.train_docs=200",
    "tokenizer.name_or_path=/some/tokenizer",
    "phase1.masking.guided_fraction=0",  # no Guided MLM: no spans mined
]
SAME_ROWS = [
    "phase1.lr=1e-4",
    "phase1.batch_size=16",
    "phase1.micro_batch_size=4",
    "phase1.masking.mlm_probability=0.15",
    "phase1.masking.guided_fraction=0.2",  # still mined: the share is drawn at training time
    "phase1.warmup_fraction=0.2",
    "phase2.tokens=30000",  # another phase
    "data.executor.tasks=8",
    "data.executor.workers=4",
    "data.task_memory_bytes=1000000000",
    "data.in_process_max_tokens=5",
    "data.shuffle_buffer_docs=10",
    "data.general.0.streaming=true",
    "trainer.dataloader_num_workers=2",
    "model.size=mini",
]


def _fingerprint(tmp_path, *sets):
    return PrepareLayout.of(recipe_for(tmp_path, *sets)).phase_fingerprint("phase1")


@pytest.mark.parametrize("field", ROW_FIELDS)
def test_every_field_that_changes_rows_changes_the_fingerprint(tmp_path, field):
    assert _fingerprint(tmp_path, field) != _fingerprint(tmp_path)


@pytest.mark.parametrize("field", SAME_ROWS)
def test_fields_that_leave_the_rows_alone_keep_the_fingerprint(tmp_path, field):
    assert _fingerprint(tmp_path, field) == _fingerprint(tmp_path)


def test_a_changed_source_file_changes_the_fingerprint(tmp_path, data_dir):
    page = tmp_path / "page.txt"
    page.write_text("one page of text\n")
    sets = [f"data.general.1.path={page}", "data.general.1.doc_per_line=true"]
    before = _fingerprint(tmp_path, *sets)
    page.write_text("another page of text, longer\n")
    assert _fingerprint(tmp_path, *sets) != before


def test_a_change_that_alters_rows_rebuilds_and_one_that_does_not_reuses(reference, tmp_path):
    out, (rows, _) = reference
    shutil.copytree(out, tmp_path / "out")
    out = tmp_path / "out"
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("phase1/rows-*/shard-*.arrow")}
    assert prepare_stages(recipe_for(out, "phase1.lr=1e-4"), ["phase1"], ExecutorConfig()) == []
    prepare(out, "phase1.lr=1e-4", "data.executor.tasks=5")  # nothing to do
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("phase1/rows-*/shard-*.arrow")} == kept
    assert build_rows(out, "phase1", "phase1.lr=1e-4")[0] == rows
    prepare(out, "data.seed=1")  # alters the rows: a new build replaces the old one
    assert len(list(out.glob("phase1/rows-*"))) == 1
    assert build_rows(out, "phase1", "data.seed=1")[0]["input_ids"] != rows["input_ids"]


def test_a_phase_without_guided_mlm_mines_nothing_and_keeps_its_tokens(reference, tmp_path, monkeypatch):
    """Spans serve Guided MLM only: without it the miner is never called and the rows differ only there."""
    from training.attribute_miner import AttributeMiner

    _, (rows, summary) = reference
    out = with_setup_of(reference, tmp_path)
    monkeypatch.setattr(AttributeMiner, "mine", lambda self, text: pytest.fail("mined without Guided MLM"))
    prepare(out, "phase1.masking.guided_fraction=0")
    plain, plain_summary = build_rows(out, "phase1", "phase1.masking.guided_fraction=0")
    assert summary["mined_spans"] > 0 and plain_summary["mined_spans"] == 0
    assert {k: v for k, v in plain.items() if "span" not in k} == {
        k: v for k, v in rows.items() if "span" not in k
    }


def test_a_restart_builds_only_the_missing_shards(reference, tmp_path):
    """What a SIGKILL leaves (some shards without their completion marker, no build.json) is finished by a
    rerun that rebuilds those shards only; the result is identical."""
    out, expected = reference
    shutil.copytree(out, tmp_path / "out")
    out = tmp_path / "out"
    folder = PrepareLayout.of(recipe_for(out)).rows_dir("phase1")
    (folder / "build.json").unlink()
    shutil.rmtree(folder / "build-3", ignore_errors=True)
    for index in (2, 5):
        (folder / f"shard-{index:05d}.json").unlink()  # killed between rows and marker, or before either
    (folder / "shard-00005.arrow").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.arrow")}
    prepare(out, tasks=3)
    rebuilt = {p.name for p in folder.glob("shard-*.arrow") if kept.get(p.name) != p.stat().st_mtime_ns}
    assert rebuilt == {"shard-00002.arrow", "shard-00005.arrow"}
    stats = [json.loads(p.read_text()) for p in folder.glob("build-3/logs/stats/*.json")]
    counts = [s["stats"]["shards"] for task in stats for s in task if "shards" in s["stats"]]
    built = sum(c["total"] if isinstance(c, dict) else c for c in counts)  # datatrove saves a lone count bare
    assert built == 2
    assert build_rows(out) == expected


def test_a_task_reads_only_the_documents_of_its_shards(reference, tmp_path):
    """Split into 4 tasks, each task reads about a quarter of the phase's positions (datatrove's per-task
    stats), and the tasks together read exactly the positions of the planned shards: no process reads
    every document."""
    from training.prepare import PreparedInputs

    prepare(with_setup_of(reference, tmp_path), tasks=4)
    layout = PrepareLayout.of(recipe_for(tmp_path))
    folder = layout.rows_dir("phase1")
    _, plan = PreparedInputs.load(layout).builder("phase1")
    per_task = []
    for rank in range(4):
        stats = json.loads((folder / "build-4" / "logs" / "stats" / f"{rank:05d}.json").read_text())
        read = [s["stats"].get("positions", 0) for s in stats]
        per_task.append(sum(r["total"] if isinstance(r, dict) else r for r in read))
    total = sum(r.stop - r.start for shard in range(plan.shards) for r in plan.ranges(shard))
    assert sum(per_task) == total and all(per_task), per_task
    assert max(per_task) < 0.45 * total, per_task


def test_a_task_memory_budget_too_small_is_refused_before_any_shard(reference, tmp_path):
    with pytest.raises(UserError, match=r"needs ≈ .* GiB .* over data.task_memory_bytes=1048576"):
        prepare(with_setup_of(reference, tmp_path), "data.task_memory_bytes=1048576", "data.buffer_docs=4096")
    assert not list(tmp_path.glob("phase1/rows-*/shard-*"))


def test_guided_mlm_needs_a_miner_that_learned_brands(tmp_path):
    """A mined source whose documents teach the miner no brand cannot give a guided phase its spans: the
    build stops instead of training a 'guided' phase without guidance."""
    pages = tmp_path / "pages.jsonl"
    pages.write_text(
        "".join(json.dumps({"text": f"the item {i} is nice\nno brand here"}) + "\n" for i in range(50))
    )
    sets = [f"data.domain.{k}.path={pages}" for k in (0, 1)] + [
        f"data.domain.{k}.text_fields=[text]" for k in (0, 1)
    ]
    recipe = recipe_for(
        tmp_path, *sets, "phase1.masking.guided_fraction=0.05", "phase1.mixture.domain_start=0.5"
    )
    with pytest.raises(
        UserError, match=r"phase1.masking.guided_fraction is 0.05 but the attribute miner learned no brand"
    ):
        run_prepare(recipe, ["phase1"], ExecutorConfig(tasks=1, workers=1))


def test_streaming_sources_teach_the_miner_and_guide_the_phase(tmp_path, data_dir):
    """Guided MLM over streaming sources (local parquet and JSON Lines): the miner learns its lexicon from
    the streams and the phase's guided share is met by masking its rows."""
    import pyarrow.parquet as pq

    from training.collator import STATS_KEY, PackedMLMCollator
    from training.masking import SpanMasker
    from training.phase_data import PackedDataset
    from training.tokenizer import load_tokenizer

    table = pq.read_table(data_dir / "esci_union_with_text/esci_union_with_text.parquet")
    esci = tmp_path / "esci.jsonl"
    columns = ["product_title", "product_brand", "product_description"]
    rows_json = table.select(columns).slice(0, 400).to_pylist()
    esci.write_text("".join(json.dumps(r) + "\n" for r in rows_json))
    sets = [f"data.{g}.{i}.streaming=true" for g, n in (("general", 2), ("domain", 2)) for i in range(n)]
    sets += [f"data.domain.1.path={esci}", f"data.domain.1.text_fields={json.dumps(columns)}"]
    sets += [
        "phase1.masking.guided_fraction=0.2",
        "phase1.mixture.domain_start=0.6",
        "phase1.mixture.domain_end=0.6",
    ]
    recipe = recipe_for(tmp_path, *sets)
    run_prepare(recipe, ["phase1"], ExecutorConfig(tasks=2, workers=1))
    layout = PrepareLayout.of(recipe)
    setup = json.loads((layout.setup_dir / "setup.json").read_text())
    assert setup["miner"]["documents"] > 300 and len(setup["miner"]["brands"]) >= 10
    rows = prepared_rows(layout, "phase1")
    assert rows.stats.rows_with_spans > 0.2 * rows.stats.num_rows
    tok = load_tokenizer(str(tmp_path / "tokenizer"))
    phase = recipe.phase1
    masker = SpanMasker(phase.masking, tok.mask_token_id, sorted(set(tok.all_special_ids)), len(tok))
    probability = masker.guided_row_probability(rows.stats.num_rows, rows.stats.rows_with_spans)
    collate = PackedMLMCollator(masker, seed=1, guided_probability=probability)
    dataset = PackedDataset(rows.table)
    stats = collate(dataset.__getitems__(list(range(len(dataset)))))[STATS_KEY]
    assert stats["guided_sequences"] / stats["rows"] == pytest.approx(0.2, abs=0.07), stats


def test_one_task_and_one_worker_builds_run_in_this_process(reference, tmp_path):
    """--tasks 1 / --workers 1: datatrove deep-copies the steps and runs them here (nothing to pickle)."""
    _, expected = reference
    prepare(with_setup_of(reference, tmp_path), tasks=4, workers=1)
    assert build_rows(tmp_path) == expected


def test_the_recipe_section_validates_the_executor(tmp_path):
    with pytest.raises(UserError, match="data.executor.kind"):
        recipe_for(tmp_path, "data.executor.kind=mpi")
    recipe = recipe_for(tmp_path, "data.executor={kind: ray, tasks: 64, workers: 8}")
    assert dataclasses.asdict(recipe.data.executor)["tasks"] == 64


def test_planned_shards_cover_the_budget_or_finalize_builds_more(reference):
    out, (rows, summary) = reference
    layout = PrepareLayout.of(recipe_for(out))
    info = json.loads((layout.rows_dir("phase1") / "build.json").read_text())
    assert len(info["shards"]) <= info["planned_shards"]
    lengths = np.asarray(rows["length"])
    assert lengths.sum() >= 20000 and lengths[:-1].sum() < 20000  # cut at the row that reaches the budget


@pytest.mark.slow
def test_sigkill_mid_build_leaves_no_worker_and_the_rerun_builds_the_rest_identically(tiny_setup, tmp_path):
    """`rexbert prepare` on a 2-worker pool, SIGKILLed once a few shards are on disk: no worker, fork
    server or pool manager survives it (they would go on building beside the rerun), and the rerun builds
    only the shards without a marker and ends with the rows of an uninterrupted build."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests.training._tiny import args

    sets = ["phase1.tokens=60000"]
    killed, clean = copy_setup(tiny_setup, tmp_path / "killed"), copy_setup(tiny_setup, tmp_path / "clean")
    folder = PrepareLayout.of(recipe_for(killed, *sets)).rows_dir("phase1")
    words = [x for item in [*EXTRA, *sets] for x in ("--set", item)]
    command = [sys.executable, "-m", "rexbert_cli.main", "prepare", *args(killed), "--phase", "1", *words]
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [*command, "--tasks", "4", "--workers", "2"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(folder.glob("shard-*.json"))) < 4:
            assert child.poll() is None, f"the build ended before it could be killed ({child.returncode})"
            assert time.monotonic() < deadline, "no shard was built in time"
            time.sleep(0.05)
        workers = psutil.Process(child.pid).children(recursive=True)
        assert len(workers) >= 3  # pool manager, fork server, its workers
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, [p.cmdline()[:4] for p in alive]
    assert not (folder / "build.json").exists()
    done = {
        p.name: p.stat().st_mtime_ns
        for p in folder.glob("shard-*.arrow")
        if (folder / p.name.replace(".arrow", ".json")).exists()
    }
    assert len(done) >= 4
    prepare(killed, *sets, tasks=4)
    for name, mtime in done.items():
        assert (folder / name).stat().st_mtime_ns == mtime, name  # kept, not rebuilt
    prepare(clean, *sets)
    assert build_rows(killed, "phase1", *sets) == build_rows(clean, "phase1", *sets)


def test_a_training_rank_reads_no_source_when_the_phase_is_prepared(reference, tmp_path, monkeypatch):
    """Every rank of a training job loads the tokenizer and the rows from the output folder: none reads a
    source, trains a tokenizer or fits the miner (here rank 1 of 2, the phase prepared beforehand)."""
    from unittest import mock

    from training import curriculum, source_index
    from training.attribute_miner import AttributeMiner

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)

    def forbidden(*args, **kwargs):
        raise AssertionError("a training rank read a source or rebuilt a prepared output")

    for module, name in (
        (source_index, "read_block"),
        (source_index, "count_blocks"),
        (AttributeMiner, "fit"),
    ):
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr("training.tokenizer.train_bpe_tokenizer", forbidden)
    rank1 = mock.Mock(num_processes=2, is_main_process=False)
    with mock.patch.object(curriculum, "process_state", return_value=rank1):
        curriculum.run_curriculum(recipe_for(out), ["phase1"], prepare_only=True)
