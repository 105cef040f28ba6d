"""Overrides that shrink the shipped tiny recipe to a seconds-long run for tests."""

from pathlib import Path

RECIPE = str(Path(__file__).resolve().parents[2] / "training" / "recipes" / "tiny.yaml")

TINY_OVERRIDES = [
    "model.overrides={num_hidden_layers: 2, hidden_size: 64, intermediate_size: 96, num_attention_heads: 1, "
    "local_attention: 32}",
    "tokenizer.vocab_size=512",
    "tokenizer.train_docs=300",
    "data.general.0.max_docs=400",
    "data.general.1.max_docs=200",
    "data.domain.0.max_docs=400",
    "data.domain.1.max_docs=200",
    "measure_peak_flops=false",
    "data.max_doc_tokens=200",
    # tests compare losses across process counts and resumes to 1e-4 on any CPU: fp32 everywhere (`auto`
    # would be bf16 on CPUs with native bf16 only); bf16 training has its own tests
    "trainer.mixed_precision=fp32",
]
# batch-size warmup is on: the global batch grows by `step_rows` (two processes × micro_batch_size, so 1- and
# 2-process runs train the same steps) up to `batch`, over the first third of each phase's tokens
_PHASES = (("phase1", 3000, 64, 8, 2), ("phase2", 1500, 128, 4, 1), ("phase3", 4000, 128, 4, 1))
for _phase, _tokens, _seq, _batch, _micro in _PHASES:
    TINY_OVERRIDES += [
        f"{_phase}.tokens={_tokens}",
        f"{_phase}.max_seq_len={_seq}",
        f"{_phase}.batch_size={_batch}",
        f"{_phase}.micro_batch_size={_micro}",
        f"{_phase}.logging_steps=1",
        f"{_phase}.save_steps=3",
        f"{_phase}.batch_warmup_tokens={_tokens // 3}",
        f"{_phase}.batch_warmup_step_rows={2 * _micro}",
    ]


def args(out, *extra):
    result = ["--recipe", RECIPE, "--output-dir", str(out)]
    for item in TINY_OVERRIDES:
        result += ["--set", item]
    return result + list(extra)


# ~15 shards of 8-document buffers in phase 1: enough shards for 3 or 4 preparation tasks to split unevenly
# phase 1 with Guided MLM, so the rows compared across executors carry mined spans
PREPARE_OVERRIDES = [
    "phase1.tokens=20000",
    "data.buffer_docs=8",
    "data.shard_buffers=1",
    "phase1.masking.guided_fraction=0.05",
]


def prepare_recipe(out, *sets):
    """The tiny recipe with the test overrides (+ ``sets``), writing to ``out``."""
    from training.recipe import load_recipe

    recipe = load_recipe(RECIPE, [*TINY_OVERRIDES, *PREPARE_OVERRIDES, *sets])
    recipe.output_dir = str(out)
    return recipe
