"""End-to-end: the tiny recipe through run.py, phase hand-off, Hub-ready folders, resume, 2 processes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training._tiny import args
from training.checkpoints import ResumeError
from training.run import main

REPO = Path(__file__).resolve().parents[2]


def _losses(final_dir):
    summary = json.loads((Path(final_dir) / "phase_summary.json").read_text())
    return [(e["step"], e["loss"]) for e in summary["log_history"]]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("tiny_all")
    assert main(args(out)) == 0
    return out


def test_three_phases_hand_off_and_hub_folders(full_run):
    configs = {}
    for phase in ("phase1", "phase2", "phase3"):
        final = full_run / phase / "final"
        for name in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "phase_summary.json",
        ):
            assert (final / name).exists(), final / name
        configs[phase] = json.loads((final / "config.json").read_text())
        summary = json.loads((final / "phase_summary.json").read_text())
        entry = summary["log_history"][-1]
        for key in (
            "loss",
            "masked_accuracy",
            "tokens_per_second",
            "batch_rows",
            "packing_efficiency",
            "learning_rate",
            "guided_sequences",
        ):
            assert key in entry, key
    for phase in ("phase1", "phase2", "phase3"):
        final = full_run / phase / "final"
        # only what belongs on the Hub: no training_args.bin (a pickle) or other Trainer state
        names = sorted(p.name for p in final.iterdir())
        # plain ModernBERT: no remote code, no auto_map (transformers loads it without a prompt)
        assert names == [
            "config.json", "model.safetensors", "phase_summary.json", "tokenizer.json",
            "tokenizer_config.json",
        ]  # fmt: skip
        assert configs[phase]["model_type"] == "modernbert" and "auto_map" not in configs[phase]
        assert configs[phase]["architectures"] == ["ModernBertForMaskedLM"]
        tokenizer_config = json.loads((final / "tokenizer_config.json").read_text())
        assert tokenizer_config["model_max_length"] == configs[phase]["max_position_embeddings"]
        assert "local_files_only" not in tokenizer_config
    # phases 2 and 3 continue from the optimizer moments the previous phase ended with
    for phase, previous in (("phase2", "phase1"), ("phase3", "phase2")):
        summary = json.loads((full_run / phase / "final" / "phase_summary.json").read_text())
        assert summary["optimizer_state"].startswith(f"carried from {full_run / previous}/checkpoint-")
    assert json.loads((full_run / "phase1" / "final" / "phase_summary.json").read_text())[
        "optimizer_state"
    ] == ("fresh")
    assert configs["phase1"]["rope_parameters"]["full_attention"]["rope_theta"] == 10_000
    assert configs["phase2"]["rope_parameters"]["full_attention"]["rope_theta"] == 160_000
    assert (full_run / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"  # beside recipe.json, every phase
    summary3 = json.loads((full_run / "phase3" / "final" / "phase_summary.json").read_text())
    shares = [s for _, s in summary3["data"]["domain_share"]]
    assert shares[0] < shares[-1]  # phase 3 anneals toward the domain corpus
    assert summary3["data"]["mined_spans"] > 0


def test_the_rows_training_built_are_what_rexbert_prepare_builds(full_run, tmp_path):
    """Training built each phase through the preparation stages: `rexbert prepare` with the same recipe
    finds every phase done, and a 3-task build of phase 3 is the same rows."""
    from rexbert_common.executors import ExecutorConfig
    from tests.training.conftest import copy_setup
    from training.prepare import PrepareLayout, prepare_stages, prepared_rows, run_prepare
    from training.recipe import PHASES, load_recipe

    recipe = load_recipe(str(full_run / "recipe.json"), [])
    layout = PrepareLayout.of(recipe)
    assert prepare_stages(recipe, list(PHASES), ExecutorConfig(tasks=4)) == []
    for name in PHASES:
        summary = json.loads((full_run / name / "final" / "phase_summary.json").read_text())
        assert summary["data"] == json.loads(json.dumps(prepared_rows(layout, name).summary()))
    recipe.output_dir = str(copy_setup(full_run, tmp_path))
    run_prepare(recipe, ["phase3"], ExecutorConfig(tasks=3, workers=1))
    again = prepared_rows(PrepareLayout.of(recipe), "phase3").table
    assert again.to_pydict() == prepared_rows(layout, "phase3").table.to_pydict()


def test_final_folder_loads_in_a_fresh_process_without_code_or_prompt(full_run):
    """The README's and the card's loading lines, in a process without this repository and with input
    closed: plain transformers classes, no "run custom code? [y/N]" question, the same logits as RexBERT."""
    from modeling_rexbert import RexBertForMaskedLM

    final = full_run / "phase3" / "final"
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForMaskedLM, AutoTokenizer\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "m = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()\n"
        "enc = t(['Color: ' + t.mask_token + ' cotton shirt'], return_tensors='pt')\n"
        "with torch.no_grad(): out = m(**enc)\n"
        "assert out.logits.shape[-1] == m.config.vocab_size >= len(t)\n"
        "torch.save(out.logits, sys.argv[2])\n"
        "print(type(m).__name__, enc['input_ids'].tolist())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    logits_path = final.parent / "fresh_logits.pt"
    done = subprocess.run(
        [sys.executable, "-c", code, str(final), str(logits_path)],
        cwd="/",
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "custom code" not in done.stdout + done.stderr
    name, ids = done.stdout.strip().split(" ", 1)
    assert name == "ModernBertForMaskedLM"
    ours = RexBertForMaskedLM.from_pretrained(final).eval()
    with torch.no_grad():
        expected = ours(input_ids=torch.tensor(json.loads(ids))).logits
    torch.testing.assert_close(torch.load(logits_path), expected, atol=1e-5, rtol=1e-4)


def test_phase_two_starts_from_phase_one(full_run, tmp_path):
    from modeling_rexbert import RexBertConfig

    # with a vanishing LR and no decay, phase 2's final weights equal phase 1's: phase 2 loaded them
    # (and the phase's own NTK RoPE scaling lands in its config)
    scaling = "phase2.global_rope_scaling={rope_type: ntk, factor: 2.0}"
    extra = ["--set", "phase2.lr=1e-12", "--set", "phase2.weight_decay=0", "--set", scaling]
    # phase 2 already ran in this folder: rerunning it silently would discard that run
    with pytest.raises(
        ResumeError, match=r"phase2 already holds a run \(checkpoint-\d+.*--resume.*--overwrite"
    ):
        main(args(full_run, "--phase", "2", *extra))
    assert (full_run / "phase2" / "final" / "config.json").exists()
    assert main(args(full_run, "--phase", "2", "--overwrite", *extra)) == 0
    config = json.loads((full_run / "phase2" / "final" / "config.json").read_text())
    # the plain ModernBERT config carries NTK scaling folded into the global layers' RoPE base
    scaled = RexBertConfig.from_pretrained(full_run / "phase1" / "final")
    scaled.global_rope_theta, scaled.global_rope_scaling = 160_000.0, {"rope_type": "ntk", "factor": 2.0}
    expected = scaled.rope_theta_for("full_attention")
    assert expected > 160_000 and config["rope_parameters"]["full_attention"]["rope_theta"] == expected
    before = load_file(full_run / "phase1" / "final" / "model.safetensors")
    after = load_file(full_run / "phase2" / "final" / "model.safetensors")
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=1e-6)


def test_resume_reproduces_the_uninterrupted_losses(full_run, tmp_path):
    reference = _losses(full_run / "phase1" / "final")
    assert len(reference) >= 5
    out = tmp_path / "resumed"
    assert main(args(out, "--phase", "1", "--stop-after-steps", "3")) == 0
    assert not (out / "phase1" / "final").exists() and (out / "phase1" / "checkpoint-3").exists()
    (build,) = (out / "phase1").glob("rows-*/build.json")
    built_at = build.stat().st_mtime_ns
    assert main(args(out, "--phase", "1", "--resume")) == 0
    assert build.stat().st_mtime_ns == built_at  # the resumed run reused the finished on-disk rows
    resumed = _losses(out / "phase1" / "final")
    assert [s for s, _ in resumed] == [s for s, _ in reference]
    for (step, a), (_, b) in zip(reference, resumed):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), step
    # the reported train loss covers the whole phase, not only the steps after the resume
    assert _train_loss(out / "phase1" / "final") == pytest.approx(
        _train_loss(full_run / "phase1" / "final"), rel=1e-6
    )


def _train_loss(final_dir):
    return json.loads((Path(final_dir) / "phase_summary.json").read_text())["train"]["train_loss"]


def _same_weights(a, b):
    """Bit-identical safetensors tensors (the files' bytes also hold the run's metadata)."""
    first, second = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_resume_falls_back_past_damaged_checkpoints_to_the_uninterrupted_weights(full_run, tmp_path, capsys):
    """The issue's fault: random bytes inside the latest optimizer.pt (same length), and a truncated RNG
    state in the one before: both are refused, the run resumes from the one before them and ends with the
    uninterrupted run's weights, bit for bit."""
    from training.checkpoints import MANIFEST

    out = tmp_path / "damaged"
    extra = ["--phase", "1", "--set", "phase1.save_steps=2", "--set", "phase1.save_total_limit=3"]
    assert main(args(out, *extra, "--stop-after-steps", "6")) == 0
    phase = out / "phase1"
    assert [p.name for p in sorted(phase.glob("checkpoint-*"))] == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6",
    ]  # fmt: skip
    assert all((phase / f"checkpoint-{s}" / MANIFEST).is_file() for s in (2, 4, 6))
    optimizer = phase / "checkpoint-6" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)
    optimizer.write_bytes(bytes(data))
    rng = phase / "checkpoint-4" / "rng_state.pth"
    rng.write_bytes(rng.read_bytes()[:100])
    capsys.readouterr()
    assert main(args(out, *extra, "--resume")) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint {optimizer.parent} is damaged (optimizer.pt does not match its checksum" in printed
    assert f"checkpoint {rng.parent} is damaged (rng_state.pth has 100 bytes" in printed
    summary = json.loads((phase / "final" / "phase_summary.json").read_text())
    assert summary["resumed_from"] == str(phase / "checkpoint-2")
    assert summary["status"] == "complete" and summary["skipped_nonfinite_steps"] == []
    reference = _losses(full_run / "phase1" / "final")
    assert _losses(phase / "final") == reference
    assert _same_weights(phase / "final", full_run / "phase1" / "final")
    _assert_every_planned_row_trained_once(summary)


def test_sigterm_checkpoints_at_the_step_boundary_and_resumes_to_the_same_weights(
    full_run, tmp_path, capsys, monkeypatch
):
    """SIGTERM during step 4 (a pre-emption notice): step 4 finishes, is checkpointed with its manifest,
    the run stops with one line (exit status 143) naming the checkpoint; --resume ends on the uninterrupted
    run's weights, bit for bit."""
    import signal

    from training.checkpoints import MANIFEST
    from training.run import script_main
    from training.trainer import RexBertTrainer

    original = RexBertTrainer.training_step

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step + 1 == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (main) thread
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(RexBertTrainer, "training_step", training_step)
    out = tmp_path / "terminated"
    capsys.readouterr()
    assert script_main(args(out, "--phase", "1")) == 143
    checkpoint = out / "phase1" / "checkpoint-4"
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM; saved {checkpoint} at step 4 of 9: resume with --resume"
    )
    assert "Traceback" not in err
    assert (checkpoint / MANIFEST).is_file() and not (out / "phase1" / "final").exists()
    monkeypatch.setattr(RexBertTrainer, "training_step", original)
    assert script_main(args(out, "--phase", "1", "--resume")) == 0
    assert _same_weights(out / "phase1" / "final", full_run / "phase1" / "final")
    # the summary counts the whole phase, not only the steps after the resume
    summary = json.loads((out / "phase1" / "final" / "phase_summary.json").read_text())
    _assert_every_planned_row_trained_once(summary)


def test_a_resumed_phase_still_says_where_its_optimizer_moments_came_from(full_run, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(full_run / "tokenizer", out / "tokenizer")
    shutil.copytree(full_run / "phase1", out / "phase1", ignore=shutil.ignore_patterns("rows"))
    assert main(args(out, "--phase", "2", "--stop-after-steps", "2")) == 0
    assert main(args(out, "--phase", "2", "--resume")) == 0
    summary = json.loads((out / "phase2" / "final" / "phase_summary.json").read_text())
    assert summary["resumed_from"] == str(out / "phase2" / "checkpoint-2")
    assert summary["optimizer_state"].startswith(f"carried from {out / 'phase1'}/checkpoint-")
    _assert_every_planned_row_trained_once(summary)


def test_missing_optimizer_state_is_an_error_unless_allowed(tmp_path, data_dir):
    decaying = ["--phase", "1", "--set", "phase1.decay_fraction=0.9"]  # an LR that changes every step
    out, reference = tmp_path / "no_optimizer", tmp_path / "reference"
    assert main(args(reference, *decaying)) == 0
    assert main(args(out, *decaying, "--stop-after-steps", "3")) == 0
    (out / "phase1" / "checkpoint-3" / "optimizer.pt").unlink()
    with pytest.raises(ResumeError, match="checkpoint-3 has no optimizer.pt.*--allow-fresh-optimizer"):
        main(args(out, *decaying, "--resume"))
    assert not (out / "phase1" / "final").exists()
    assert main(args(out, *decaying, "--resume", "--allow-fresh-optimizer")) == 0

    # fresh moments, but the LR schedule continues where it stopped (the scheduler state is restored)
    def rates(folder):
        summary = json.loads((folder / "phase1" / "final" / "phase_summary.json").read_text())
        return [(e["step"], e["learning_rate"]) for e in summary["log_history"]]

    assert len({rate for _, rate in rates(reference)}) >= 4
    assert rates(out) == rates(reference)


def test_malformed_jsonl_source_names_source_path_and_line_and_leaves_nothing(tmp_path, data_dir, capsys):
    from training.run import script_main

    source = tmp_path / "web.jsonl"
    source.write_text('{"text": "a first page"}\n{"text": "a second page"}\n{"text": broken\n')
    out = tmp_path / "out"
    code = script_main(args(out, "--set", f"data.general.1.path={source}"))
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the datasets progress bar
    # one line: the preparation stage and task that met it, then the source, the file and the line
    assert code == 2 and error.startswith("rexbert train: error: prepare stage 'index'"), error
    assert f"source 'gutenberg': {source}: line 3 is not valid JSON (Expecting value)" in error
    assert not out.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")  # a zero-length input
    assert script_main(args(out, "--set", f"data.general.1.path={empty}")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("rexbert train: error: ")
    assert f"source 'gutenberg': no usable document in {empty}" in error
    assert not out.exists()


def test_phase3_alone_anneals_from_a_modernbert_checkpoint(full_run, tmp_path):
    """The paper's path: phase 3 alone, from an (8k) ModernBERT checkpoint stored in bf16."""
    from modeling_rexbert import RexBertForMaskedLM
    from modeling_rexbert.conversion import export_to_modernbert
    from training.tokenizer import load_tokenizer

    source = full_run / "phase1" / "final"  # global RoPE θ 10k: phase 3's 160k changes it
    modernbert = tmp_path / "modernbert"
    model = RexBertForMaskedLM.from_pretrained(source).to(torch.bfloat16)
    export_to_modernbert(model, modernbert, tokenizer=load_tokenizer(str(source)))
    assert json.loads((modernbert / "config.json").read_text())["model_type"] == "modernbert"
    out = tmp_path / "anneal"
    extra = [
        "--phase",
        "3",
        "--set",
        f"phase3.init_from={modernbert}",
        "--set",
        f"tokenizer.name_or_path={modernbert}",
        "--set",
        "phase3.warmup_fraction=0.2",
        "--set",
        "phase3.decay_fraction=0.8",
    ]
    with pytest.warns(
        UserWarning, match=r"changes .*modernbert's RoPE θ \(global_rope_theta 10000.0 → 160000.0\)"
    ):
        assert main(args(out, *extra)) == 0
    final = out / "phase3" / "final"
    summary = json.loads((final / "phase_summary.json").read_text())
    assert summary["optimizer_state"] == "fresh" and summary["steps"] > 0
    config = json.loads((final / "config.json").read_text())
    # trained with the sparse head (in memory); published with transformers' default: dense logits
    assert config["model_type"] == "modernbert" and config["sparse_prediction"] is False
    assert {t.dtype for t in load_file(final / "model.safetensors").values()} == {torch.float32}
    assert not (out / "phase1").exists() and not (out / "phase2").exists()


def test_resume_with_nothing_to_resume_names_the_folder_and_starts_nothing(tmp_path, capsys):
    """A mistyped --output-dir with --resume must not silently train from scratch."""
    from rexbert_cli.main import main as rexbert

    out = tmp_path / "typo"
    (out / "phase1" / "rows").mkdir(parents=True)  # built rows are a cache, not a run to resume
    argv = ["train", *args(out, "--phase", "1", "--resume")]
    assert rexbert(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume: nothing to resume in {out} (no checkpoint" in err
    assert sorted(p.name for p in out.rglob("*")) == ["phase1", "rows"]
    # a requeued job's first attempt: --resume-or-start starts the run, a later attempt continues it
    assert rexbert(["train", *args(out, "--phase", "1", "--resume-or-start", "--stop-after-steps", "2")]) == 0
    assert (out / "phase1" / "checkpoint-2").is_dir() and not (out / "phase1" / "final").exists()
    assert rexbert(["train", *args(out, "--phase", "1", "--resume-or-start")]) == 0
    assert "resuming from" in capsys.readouterr().out and (out / "phase1" / "final").is_dir()


def test_an_unreachable_hub_tokenizer_is_one_line_and_leaves_no_output(tmp_path, capsys):
    """Offline (HF_HUB_OFFLINE=1 in tests), a Hub id cannot load: the run stops in one line and leaves no
    output folder behind (no stray recipe.json)."""
    from rexbert_cli.main import main as rexbert

    out = tmp_path / "run"
    argv = args(out, "--phase", "1", "--set", "tokenizer.name_or_path=acme/not-here")
    assert rexbert(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rexbert train: error: tokenizer 'acme/not-here' cannot be loaded: ")
    assert err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--output-dir", "output_dir"])
def test_an_output_folder_under_a_file_is_refused_before_any_work(tmp_path, capsys, flag):
    import subprocess

    (tmp_path / "file").write_text("x")
    target = str(tmp_path / "file" / "run")
    argv = args(target) if flag == "--output-dir" else [*args(target)[:2], "--set", f"output_dir={target}"]
    code = (
        "import sys\nfrom training.run import script_main\nstatus = script_main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'heavy imports before the check'\nsys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(f"{target} cannot be created: {tmp_path / 'file'} is a file")
    assert result.stderr.count("\n") == 1


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    from rexbert_common.errors import UserError

    with pytest.raises(UserError, match="--resume and --overwrite exclude each other"):
        main(args(tmp_path / "out", "--resume", "--overwrite"))
    assert not (tmp_path / "out").exists()


def test_cli_registers_train():
    from rexbert_cli.main import build_parser

    argv = ["train", "--recipe", "x.yaml", "--phase", "2", "--set", "phase2.lr=1"]
    parsed = build_parser().parse_args(argv)
    assert parsed.phase == "2" and parsed.overrides == ["phase2.lr=1"] and callable(parsed.func)
    flags = build_parser().parse_args([*argv, "--overwrite", "--allow-fresh-optimizer"])
    assert flags.overwrite and flags.allow_fresh_optimizer and not flags.resume


def test_recipe_typo_fails_before_any_work(tmp_path):
    from training.recipe import RecipeError

    with pytest.raises(RecipeError, match="phase1.lrr -- did you mean 'lr'"):
        main(args(tmp_path / "typo", "--set", "phase1.lrr=1"))
    assert not (tmp_path / "typo").exists()


def _assert_every_planned_row_trained_once(summary):
    planned = summary["planned_rows"]
    assert summary["trained_rows"] == planned
    assert summary["trained_row_id_sum"] == planned * (planned - 1) // 2  # rows 0 .. planned-1


def test_batch_warmup_plan_in_the_single_process_run(full_run):
    summary = json.loads((full_run / "phase1" / "final" / "phase_summary.json").read_text())
    rows_per_step = [e["batch_rows"] for e in summary["log_history"]]
    assert rows_per_step[0] == 4 and rows_per_step[-1] == 8  # warmup: 2 → 4 micro-batches of 2 rows
    assert [e["micro_batches_per_step"] for e in summary["log_history"]] == [r / 2 for r in rows_per_step]
    assert len(summary["log_history"]) == summary["steps"] == summary["global_step"]  # logged every step
    _assert_every_planned_row_trained_once(summary)


@pytest.mark.slow
def test_two_processes_with_batch_warmup_match_one_process(full_run, tmp_path):
    """Acceptance: 2 CPU processes with batch-size warmup on reach exactly the planned steps, train every
    planned row once, and log the 1-process run's losses (tolerance: float reduction order only)."""
    from scripts.chaos import launch_command

    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = launch_command(REPO / "training" / "run.py", *args(tmp_path, "--phase", "1"), processes=2)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "phase1" / "final" / "phase_summary.json").read_text())
    single = json.loads((full_run / "phase1" / "final" / "phase_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == single["steps"]
    assert summary["global_step"] == summary["steps"]
    _assert_every_planned_row_trained_once(summary)
    assert summary["planned_rows"] == single["planned_rows"]
    two = [(e["step"], e["batch_rows"], e["loss"]) for e in summary["log_history"]]
    one = [(e["step"], e["batch_rows"], e["loss"]) for e in single["log_history"]]
    assert [s[:2] for s in two] == [s[:2] for s in one]  # same steps, same warmup batch sizes
    for (step, _, a), (_, _, b) in zip(two, one):
        assert a == pytest.approx(b, rel=1e-4), step
    # only rank 0 builds the phase's rows (the other process waits, then memory-maps the same file)
    assert done.stdout.count("phase1: building") == 1, done.stdout[-3000:]


def test_world_size_is_checked_before_anything_is_built(tmp_path):
    from training.batch_plan import WorldSizeError, check_world_size
    from training.recipe import PhaseConfig

    check_world_size(PhaseConfig(batch_size=8, micro_batch_size=2), 4)
    with pytest.raises(WorldSizeError, match=r"phase2.batch_size \(8\) must be a multiple .* \(2 × 3\)"):
        check_world_size(PhaseConfig(batch_size=8, micro_batch_size=2), 3, "phase2")
    with pytest.raises(WorldSizeError, match="batch_warmup_step_rows"):
        check_world_size(PhaseConfig(batch_size=8, micro_batch_size=2, batch_warmup_step_rows=2), 2)
    # run_curriculum checks before reading a source: a process count that does not fit writes nothing
    from unittest import mock

    from tests.training._tiny import RECIPE
    from training import curriculum
    from training.recipe import load_recipe

    recipe = load_recipe(
        RECIPE, ["phase1.batch_size=6", "phase1.micro_batch_size=3", "phase1.batch_warmup_step_rows=0"]
    )
    recipe.output_dir = str(tmp_path / "never")
    state = mock.Mock(num_processes=4, is_main_process=True)
    patched = mock.patch.object(curriculum, "process_state", return_value=state)
    with patched, pytest.raises(WorldSizeError, match="phase1.batch_size"):
        curriculum.run_curriculum(recipe, ["phase1"])
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_sigkill_during_training_then_resume_gives_the_uninterrupted_losses(tmp_path, data_dir):
    """Acceptance: the training process is SIGKILLed mid-phase (whenever its second checkpoint appears --
    possibly while it is still being written), then resumed: same steps, same losses as a run that was
    never interrupted, and every planned row trained once."""
    import signal
    import time

    longer = ["--phase", "1", "--set", "phase1.tokens=12000", "--set", "phase1.save_steps=4"]
    reference = tmp_path / "reference"
    assert main(args(reference, *longer)) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, str(REPO / "training" / "run.py"), *args(out, *longer)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not (out / "phase1" / "checkpoint-8").exists() and child.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "phase1" / "final").exists()
    assert main(args(out, *longer, "--resume")) == 0
    expected, resumed = _losses(reference / "phase1" / "final"), _losses(out / "phase1" / "final")
    assert [s for s, _ in resumed] == [s for s, _ in expected]
    for (step, a), (_, b) in zip(expected, resumed):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), step
    summary = json.loads((out / "phase1" / "final" / "phase_summary.json").read_text())
    assert summary["resumed_from"] is not None
    assert _train_loss(out / "phase1" / "final") == pytest.approx(_train_loss(reference / "phase1" / "final"))


def test_guided_mlm_without_a_mined_source_is_an_error(tmp_path):
    from rexbert_common import UserError

    overrides = [
        "--set",
        "data.domain.0.mine_attributes=false",
        "--set",
        "data.domain.1.mine_attributes=false",
    ]
    with pytest.raises(UserError, match="phase3.masking.guided_fraction is 0.05 but no data source sets"):
        main(args(tmp_path / "never", *overrides))
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_streaming_phase3_guides_five_percent_of_sequences(full_run, tmp_path):
    """Acceptance: with every source streaming, the miner is fitted on a bounded sample of the streams and
    phase 3 (guided_fraction 0.05) masks 5% ± 1% of its ~3,000 trained sequences on mined spans."""
    import shutil

    out = tmp_path / "stream"
    shutil.copytree(full_run / "tokenizer", out / "tokenizer")
    shutil.copytree(full_run / "phase2" / "final", out / "phase2" / "final")
    streaming = [f"data.{g}.{i}.streaming=true" for g in ("general", "domain") for i in range(2)]
    streaming += ["data.miner_sample_docs=300"]
    phase3 = ["tokens=100000", "max_seq_len=32", "batch_size=64", "micro_batch_size=32", "logging_steps=50"]
    phase3 += [
        "batch_warmup_step_rows=0",
        "save_steps=1000",
        "carry_optimizer=false",
        "warmup_fraction=0.1",
        "decay_fraction=0.9",
    ]
    sets = [x for o in streaming + [f"phase3.{p}" for p in phase3] for x in ("--set", o)]
    assert main(args(out, "--phase", "3", *sets)) == 0
    summary = json.loads((out / "phase3" / "final" / "phase_summary.json").read_text())
    assert (
        summary["planned_rows"] > 2500 and summary["data"]["rows_with_spans"] > 0.3 * summary["data"]["rows"]
    )
    guided = summary["guided_mlm"]
    assert guided["target_share"] == 0.05 and abs(guided["share"] - 0.05) <= 0.01, guided
    assert guided["spans_per_guided_sequence"] >= 1.0, guided


@pytest.mark.slow
def test_prepare_only_builds_the_rows_that_training_then_reuses(tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(args(out, "--phase", "1", "--prepare-only")) == 0
    printed = capsys.readouterr().out
    # what the preparation made (sources, tokenizer, miner) is reported before any build
    assert printed.index("sources (documents): wikitext2 ") < printed.index("phase1: building")
    (build,) = (out / "phase1").glob("rows-*/build.json")
    assert build.exists() and not (out / "phase1" / "final").exists()
    assert not list((out / "phase1").glob("checkpoint-*"))
    built_at = build.stat().st_mtime_ns
    assert main(args(out, "--phase", "1")) == 0
    assert "phase1: building" not in capsys.readouterr().out
    assert build.stat().st_mtime_ns == built_at and (out / "phase1" / "final" / "config.json").exists()


def test_script_defaults_the_data_folder_to_the_embedded_sample(monkeypatch, tmp_path, capsys):
    """`accelerate launch training/run.py` on a fresh clone reads sample_data/ like the `rexbert` CLI."""
    from rexbert_common.data import SAMPLE_DIR
    from training.run import script_main

    monkeypatch.delenv("REXBERT_DATA_DIR", raising=False)
    assert script_main(["--recipe", str(tmp_path / "missing.yaml")]) == 2
    assert os.environ["REXBERT_DATA_DIR"] == str(SAMPLE_DIR.resolve())
    assert "missing.yaml" in capsys.readouterr().err


def test_a_multi_process_job_refuses_an_unprepared_large_phase_with_the_command(tmp_path, capsys):
    """Instead of building on one rank while the others idle: refused at once, with the exact command; a
    phase under the threshold is still built in-process (by the main process)."""
    import shlex
    from unittest import mock

    from rexbert_common.errors import UserError
    from training import curriculum

    state = mock.Mock(num_processes=2, is_main_process=True)
    out = tmp_path / "run"
    extra = ["--phase", "1", "--set", "data.in_process_max_tokens=2999", "--set", "data.executor.tasks=8"]
    with mock.patch.object(curriculum, "process_state", return_value=state):
        with pytest.raises(UserError, match="phase1 is not prepared and has 3,000 tokens") as refused:
            main(args(out, *extra))
        assert not out.exists()  # nothing read, nothing written
        command = re.search(r"run `([^`]+)` first", str(refused.value)).group(1)
        words = shlex.split(command)
        assert words[:2] == ["rexbert", "prepare"] and words[words.index("--tasks") + 1] == "8"
        assert words[words.index("--output-dir") + 1] == str(out) and words[words.index("--phase") + 1] == "1"
        from rexbert_cli.main import main as rexbert

        assert rexbert(words[1:]) == 0  # the command prepares exactly what the job needs
        assert main(args(out, *extra, "--prepare-only")) == 0  # and the job now finds it
        assert "phase1: building" not in capsys.readouterr().out
        small = ["--phase", "1", "--set", "data.in_process_max_tokens=3000"]
        assert main(args(tmp_path / "small", *small, "--prepare-only")) == 0  # small: built in-process
        assert list((tmp_path / "small" / "phase1").glob("rows-*/build.json"))


def test_summary_records_the_tokens_trained_and_the_card_tables_them(full_run):
    """trained_tokens is the length of the rows the plan trained ([0, planned_rows), BatchPlan), and the
    card's training table shows those numbers for every phase of the run, not the recipe's budgets."""
    import pyarrow as pa

    from model_cards.card import training_rows

    rows = training_rows(full_run / "phase3" / "final")
    assert [row["name"] for row in rows] == ["phase1", "phase2", "phase3"]
    for row in rows:
        summary = json.loads((full_run / row["name"] / "final" / "phase_summary.json").read_text())
        (rows,) = (full_run / row["name"]).glob("rows-*")  # the phase's prepared rows
        build = json.loads((rows / "build.json").read_text())
        lengths = []
        for shard in build["shards"]:
            reader = pa.ipc.open_file(pa.memory_map(str(rows / shard["file"])))
            lengths += reader.read_all().column("length").to_pylist()[: shard["rows"]]
        assert summary["trained_tokens"] == sum(lengths[: summary["planned_rows"]]) > 0
        assert row["tokens"] == f"{summary['trained_tokens']:,}" and row["steps"] == summary["global_step"]


@pytest.mark.parametrize("verbose", [False, True])
def test_without_verbose_training_prints_one_line_per_stage(tmp_path, verbose):
    """The preparation's stages (datatrove's one line per stage), what they made (sources, tokenizer,
    miner), then per phase its build, rows, precision and end (loss, final folder, loss plot), plus the
    Trainer's progress bar with the loss in it; the per-step dicts, epochs, packing and guided-MLM details
    only with --verbose."""
    import re

    from tests.console import console_lines

    argv = args(tmp_path / "run", "--phase", "1", *(["--verbose"] if verbose else []))
    result = subprocess.run(
        [sys.executable, str(REPO / "training" / "run.py"), *argv],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out, err = console_lines(result.stdout), console_lines(result.stderr)
    task = r"1 task done in \d+ s"
    stages = [
        r"\[rexbert train\] preparing the tokenizer, the attribute miner and the sources' document sizes",
        rf"\[prepare\] index: {task}",
        rf"\[prepare\] setup: {task}",
        r"\[rexbert train\] sources \(documents\): \w+ [\d,]+, .*; tokenizer: [\d,]+ tokens; "
        r"attribute miner: [\d,]+ brands from [\d,]+ documents",
        r"\[rexbert train\] phase1: building [\d,]+ tokens of packed rows into ",
        rf"\[prepare\] build_phase1: {task}",
        rf"\[prepare\] finalize_phase1: {task}",
        r"\[rexbert train\] phase1: [\d,]+ rows × 64 \([\d,]+ tokens\), \d+ steps",
        r"\[rexbert train\] precision: (bf16|fp32) \(",
        r"\[rexbert train\] phase1: done, mean training loss",
    ]
    if verbose:
        assert len(out) > len(stages) and any(
            "'loss'" in line for line in out + err
        )  # details and the Trainer's dicts
        return
    assert len(out) == len(stages), out
    for line, stage in zip(out, stages):
        assert re.match(stage, line), (line, stage)
    assert out[-1].endswith(
        f"→ {tmp_path / 'run' / 'phase1' / 'final'} (loss plot: {tmp_path / 'run' / 'loss_curves.png'})"
    )
    assert err == [], err
