"""``rexbert plan`` and the launch checks: the estimates' arithmetic against the training code's own
accounting, the memory verdict, and every refusal before a source is read."""

import json
import sys
from pathlib import Path

import pytest

from rexbert_cli.main import main as rexbert
from rexbert_common.errors import UserError
from training import plan as plan_module
from training.batch_plan import WorldSizeError
from training.dry_run import StepShape, synthetic_micro_batch
from training.mfu import MlmFlops
from training.plan import (
    FSDP_REFUSAL,
    GPUS,
    PREP_MINED_TOKENS_PER_CORE_SECOND,
    PREP_TOKENS_PER_CORE_SECOND,
    RUNTIME_RESERVE_GIB,
    check_launch,
    disk_bytes,
    flops_per_token,
    model_config,
    plan_recipe,
    prep_rate,
)
from training.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"
JSON_KEYS = {
    "tokens",
    "steps",
    "gpu_hours",
    "wall_hours",
    "peak_memory_gib",
    "fits",
    "prep_core_hours",
    "disk_gib",
}


@pytest.fixture
def data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("REXBERT_DATA_DIR", str(tmp_path))  # the recipes' ${REXBERT_DATA_DIR}: nothing is read


def _recipe(name, *overrides):
    return load_recipe(RECIPES / f"{name}.yaml", list(overrides))


@pytest.fixture(scope="module")
def tiny_plans():
    """The tiny recipe planned on 1 and 2 GPUs (its 4-layer model: a dry run takes a second)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REXBERT_DATA_DIR", "/data")
        recipe = load_recipe(RECIPES / "tiny.yaml")
    return {n: plan_recipe(recipe, n) for n in (1, 2)}


def test_flops_per_token_is_what_the_trainer_counts_for_one_document_rows(data_dir):
    """The plan's FLOPs/token = MlmFlops on the stats the training collator reports for rows that are one
    document each (what the trainer's MFU log counts), with the masked count at its expected value."""
    recipe = _recipe("base")
    for phase_name in ("phase1", "phase2"):
        phase = recipe.phase(phase_name)
        config = model_config(recipe, phase_name, 50368)
        shape = StepShape(rows=1, row_tokens=phase.max_seq_len, masking=phase.masking, docs_per_row=1)
        stats = synthetic_micro_batch(config, shape, seed=0)["rexbert_stats"]
        tokens = stats["real_tokens"]
        assert abs(stats["selected"] - phase.masking.mlm_probability * tokens) <= 1  # stochastic rounding
        expected = MlmFlops(config).step(
            tokens, phase.masking.mlm_probability * tokens, stats["global_pairs"], stats["local_pairs"]
        )
        assert flops_per_token(config, phase) == pytest.approx(expected / tokens, rel=1e-9)


def test_default_mfu_reproduces_modernberts_published_pace(data_dir):
    """ModernBERT-base: 1.719T tokens in 194 h on 8 x H100. Our base phase 1 (the same model at 512-token
    rows, a little less attention per token) at the default MFU lands within 10% of it."""
    recipe = _recipe("base")
    fpt = flops_per_token(model_config(recipe, "phase1", 50368), recipe.phase1)
    hours = 1.719e12 * fpt / (plan_module.DEFAULT_MFU * GPUS["h100"].bf16_tflops * 1e12) / 3600 / 8
    assert 0.9 * 194 < hours < 1.1 * 194, hours


def test_data_preparation_and_disk(data_dir):
    recipe = _recipe("base")
    phase1 = recipe.phase1
    two_bytes = disk_bytes(phase1, 50368)  # uint16 ids: ModernBERT's 50,368 fit
    assert two_bytes == pytest.approx(2 * phase1.tokens, rel=0.02)
    assert disk_bytes(phase1, 70000) == pytest.approx(4 * phase1.tokens, rel=0.02)  # int32 ids


def test_each_phase_is_prepared_at_the_rate_of_its_kind(tiny_plans, monkeypatch):
    """Only phases with Guided MLM mine their text: phase 1 (none) at the plain rate, phase 3 (5%) at the
    mined one."""
    assert PREP_MINED_TOKENS_PER_CORE_SECOND < PREP_TOKENS_PER_CORE_SECOND
    monkeypatch.setenv("REXBERT_DATA_DIR", "/data")
    recipe = load_recipe(RECIPES / "tiny.yaml")
    assert recipe.phase1.masking.guided_fraction == 0 < recipe.phase3.masking.guided_fraction
    assert [prep_rate(recipe.phase(n)) for n in ("phase1", "phase3")] == [
        PREP_TOKENS_PER_CORE_SECOND,
        PREP_MINED_TOKENS_PER_CORE_SECOND,
    ]
    phases = tiny_plans[1].phases
    for name, rate in (
        ("phase1", PREP_TOKENS_PER_CORE_SECOND),
        ("phase3", PREP_MINED_TOKENS_PER_CORE_SECOND),
    ):
        assert phases[name].prep_core_hours == pytest.approx(phases[name].tokens / rate / 3600)


def test_plan_json_has_every_key_and_the_totals_add_up(tiny_plans):
    data = tiny_plans[2].as_dict()
    assert set(data["phases"]) == {"phase1", "phase2", "phase3"}
    for phase in data["phases"].values():
        assert set(phase) >= JSON_KEYS
    total = data["total"]
    for key in ("tokens", "steps", "gpu_hours", "prep_core_hours", "disk_gib"):
        assert total[key] == pytest.approx(sum(p[key] for p in data["phases"].values()))
    assert total["peak_memory_gib"] == max(p["peak_memory_gib"] for p in data["phases"].values())
    assert data["phases"]["phase1"]["tokens"] == 40000 and data["gpus"] == 2


def test_time_scales_with_gpus_and_mfu_and_memory_adds_ddp_buckets(tiny_plans, data_dir):
    one, two = tiny_plans[1], tiny_plans[2]
    for name in one.phases:
        a, b = one.phases[name], two.phases[name]
        assert a.gpu_hours == pytest.approx(b.gpu_hours)  # the same work...
        assert b.wall_hours == pytest.approx(a.wall_hours / 2)  # ...on twice the GPUs
        assert a.peak_memory_gib == pytest.approx(a.step_tensors_gib + RUNTIME_RESERVE_GIB)
        weights = b.memory_at_peak_gib["parameters"]
        assert b.peak_memory_gib == pytest.approx(
            b.step_tensors_gib + weights + RUNTIME_RESERVE_GIB, rel=1e-6
        )
    slow = plan_recipe(_recipe("tiny"), 2, mfu=0.125)
    assert slow.phases["phase1"].gpu_hours == pytest.approx(2 * two.phases["phase1"].gpu_hours)
    # the steps are the batch plan's: phase 1 warms its batch up (8 then 16 rows), phases 2-3 do not
    assert one.phases["phase1"].steps == two.phases["phase1"].steps > 40000 // (16 * 128)


def test_a_step_that_does_not_fit_is_reported(monkeypatch, data_dir):
    small = plan_module.Gpu("test GPU", 100.0, 1.0, "none")
    monkeypatch.setitem(GPUS, "h100", small)
    plan = plan_recipe(_recipe("tiny"), 1)
    assert not plan.total()["fits"] and not plan.phases["phase1"].fits  # 1 GiB runtime reserve > 0.9 GiB


def test_cli_prints_the_table_and_json(capsys, data_dir):
    assert rexbert(["plan", "--recipe", str(RECIPES / "tiny.yaml"), "--gpus", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["phases"]["phase2"]) >= JSON_KEYS and data["gpu"]["name"].startswith("NVIDIA H100")
    assert rexbert(["plan", "--recipe", str(RECIPES / "tiny.yaml"), "--gpus", "1", "--gpu", "a100"]) == 0
    text = capsys.readouterr().out
    assert "A100" in text and "phase3" in text and "Assumptions" in text and "total" in text


def test_cli_errors_are_one_line_and_come_before_heavy_imports(capsys, data_dir):
    """A bad argument or recipe value is reported before torch is imported (checked in a fresh
    interpreter), with one line and status 2."""
    import subprocess

    args = ["plan", "--recipe", str(RECIPES / "tiny.yaml"), "--gpus", "8", "--set", "phase1.lr=x"]
    code = f"import sys; from rexbert_cli.main import main; print(main({args!r}), 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["2", "False"]
    assert (
        result.stderr.strip().endswith("phase1.lr must be a number, got 'x'")
        and result.stderr.count("\n") == 1
    )
    assert rexbert(["plan", "--recipe", str(RECIPES / "tiny.yaml"), "--gpus", "0"]) == 2
    assert rexbert(["plan", "--recipe", str(RECIPES / "tiny.yaml"), "--gpus", "1", "--mfu", "1.5"]) == 2
    assert rexbert(["plan", "--recipe", str(RECIPES / "base.yaml"), "--gpus", "3"]) == 2  # world size
    err = capsys.readouterr().err
    assert "--gpus must be >= 1" in err and "--mfu must be in (0, 1]" in err and "phase1.batch_size" in err


# -- at launch --------------------------------------------------------------------------------------------


def test_launch_refuses_fsdp_and_a_bad_world_size(monkeypatch, data_dir):
    recipe = _recipe("tiny")
    check_launch(recipe, ["phase1"], 2)
    with pytest.raises(WorldSizeError, match="phase1.batch"):
        check_launch(recipe, ["phase1"], 3)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    with pytest.raises(UserError, match="FSDP is not supported"):
        check_launch(recipe, ["phase1"], 2)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    with pytest.raises(UserError, match="FSDP is not supported"):
        check_launch(_recipe("tiny", "trainer.extra={fsdp: full_shard}"), ["phase1"], 2)


def test_launch_refuses_a_step_larger_than_the_gpu(monkeypatch, data_dir):
    """The micro recipe on 8 GPUs: phase 1's step needs ≈ 2.3 GiB, phase 2's (4 x 8,192 tokens) ≈ 5.1 GiB;
    a step may use 90% of the GPU."""
    recipe = _recipe("micro")
    monkeypatch.setattr(plan_module, "cuda_memory_gib", lambda: 5.0)
    check_launch(recipe, ["phase1"], 8)
    with pytest.raises(
        UserError, match=r"phase2: a training step needs ≈ 5\.\d GiB per GPU \(micro_batch_size 4 × 8192"
    ):
        check_launch(recipe, ["phase1", "phase2"], 8)
    monkeypatch.setattr(plan_module, "cuda_memory_gib", lambda: 80.0)
    check_launch(recipe, ["phase2"], 8)


@pytest.mark.parametrize(
    "refusal",
    [("ACCELERATE_USE_FSDP", "FSDP is not supported"), ("cuda_memory_gib", "a training step needs")],
)
def test_the_run_refuses_before_reading_a_source(refusal, monkeypatch, tmp_path, data_dir):
    """run_curriculum calls the launch checks first: the recipe's sources do not exist (REXBERT_DATA_DIR is
    an empty folder), so reading one first would fail with another message; no folder is written."""
    from training.curriculum import run_curriculum

    if refusal[0] == "ACCELERATE_USE_FSDP":
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    else:
        monkeypatch.setattr(plan_module, "cuda_memory_gib", lambda: 0.5)
    recipe = load_recipe(RECIPES / "tiny.yaml", [f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match=refusal[1]):
        run_curriculum(recipe, ["phase1"])
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()  # without the refusal, the same call fails on the missing source
    monkeypatch.setenv("REXBERT_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="wiki"):
        run_curriculum(load_recipe(RECIPES / "tiny.yaml", [f"output_dir={tmp_path / 'run'}"]), ["phase1"])


def test_the_cli_offers_every_gpu_of_the_table():
    from training.plan_cli import GPU_CHOICES

    assert set(GPU_CHOICES) == set(GPUS)


@pytest.mark.slow
def test_accelerate_launch_with_fsdp_is_refused_before_anything_is_built(tmp_path):
    """`accelerate launch --use_fsdp` on 2 CPU processes: every rank prints the refusal as its first error
    (accelerate's own traceback used to come first) and no output folder is written."""
    import os
    import subprocess

    repo = RECIPES.parents[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["REXBERT_DATA_DIR"] = str(tmp_path)  # never read
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--use_fsdp", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [
        str(repo / "training" / "run.py"),
        "--recipe",
        str(RECIPES / "tiny.yaml"),
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    # the main process's one line (the other ranks stop silently), before the launcher's own report
    assert errors[0] == f"rexbert train: error: {FSDP_REFUSAL}", done.stderr[-2000:]
    assert sum(FSDP_REFUSAL in line for line in errors) == 1
    assert not out.exists()


def test_vocabulary_from_a_local_tokenizer_else_modernberts(data_dir, tmp_path):
    """A local tokenizer folder gives its size (rounded up to 64); a Hub id not in the cache is assumed to
    be ModernBERT's 50,368 ids, and the plan says so; a trained BPE is its target size."""
    from benchmarks._common import bert_tokenizer
    from training.plan import vocab_size

    bert_tokenizer().save_pretrained(tmp_path / "tok")  # 30,522 ids
    assert vocab_size(_recipe("tiny", f"tokenizer.name_or_path={tmp_path / 'tok'}"))[0] == 30528
    size, note = vocab_size(_recipe("base", "tokenizer.name_or_path=nobody/not-a-cached-tokenizer"))
    assert size == 50368 and "assumed" in note and "nobody/not-a-cached-tokenizer" in note
    assert vocab_size(_recipe("tiny", "tokenizer.vocab_size=5000"))[0] == 5056
