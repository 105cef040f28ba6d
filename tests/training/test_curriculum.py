"""Phase start-up: init_from for any phase (ModernBERT conversion, fp32 master weights, sparse head, RoPE θ
warning), optimizer hand-off, and no stray output on a user error."""

import warnings

import pytest
import torch
from safetensors.torch import load_file

from rexbert_common.errors import UserError
from tests.tiny_models import tiny_modernbert
from training import curriculum
from training.recipe import recipe_from_dict
from training.tokenizer import train_bpe_tokenizer

WORDS = "red blue cotton shirt laptop sleeve size large small steel bottle brand model cable phone".split()  # noqa: SIM905


@pytest.fixture(scope="module")
def tokenizer():
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) for i in range(200)]
    return train_bpe_tokenizer(texts, vocab_size=300)


def _recipe(tmp_path, **phase3):
    phase = {
        "tokens": 1000,
        "max_seq_len": 64,
        "batch_size": 2,
        "micro_batch_size": 1,
        "max_position_embeddings": 256,
        **phase3,
    }
    return recipe_from_dict(
        {
            "name": "t",
            "output_dir": str(tmp_path / "out"),
            "data": {"general": [{"name": "g", "path": "/x.txt"}]},
            "phase1": {**phase, "init_from": None},
            "phase2": phase,
            "phase3": phase,
        }
    )


def _modernbert_checkpoint(tmp_path, tokenizer, dtype=torch.bfloat16):
    model = tiny_modernbert(
        tokenizer, vocab_size=320, hidden_size=64, num_hidden_layers=3, num_attention_heads=1,
        intermediate_size=96, local_attention=32,
    )  # fmt: skip
    folder = tmp_path / "modernbert"
    model.to(dtype).save_pretrained(folder)
    return folder


def test_phase3_alone_starts_from_a_bf16_modernbert_checkpoint_in_fp32_with_the_sparse_head(
    tmp_path, tokenizer
):
    folder = _modernbert_checkpoint(tmp_path, tokenizer)
    recipe = _recipe(tmp_path, init_from=str(folder), global_rope_theta=160_000.0, local_rope_theta=10_000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same RoPE θ as the checkpoint: no warning
        model = curriculum.model_for_phase(recipe, "phase3", tokenizer, tmp_path / "out")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # fp32 master weights
    assert model.config.sparse_prediction  # a converted ModernBERT config defaults to dense
    assert model.config.max_position_embeddings == 256  # the phase's context
    saved = load_file(folder / "model.safetensors")
    state = model.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name], tensor.float(), rtol=0, atol=0)


def test_changing_the_checkpoints_rope_theta_warns(tmp_path, tokenizer):
    folder = _modernbert_checkpoint(tmp_path, tokenizer)
    recipe = _recipe(tmp_path, init_from=str(folder), global_rope_theta=80_000.0)
    with pytest.warns(
        UserWarning, match=r"changes .*modernbert's RoPE θ \(global_rope_theta 160000.0 → 80000.0\)"
    ):
        model = curriculum.model_for_phase(recipe, "phase3", tokenizer, tmp_path / "out")
    assert model.config.global_rope_theta == 80_000.0


def test_a_checkpoint_of_another_tokenizer_is_refused(tmp_path, tokenizer):
    folder = _modernbert_checkpoint(tmp_path, tokenizer)
    recipe = _recipe(tmp_path, init_from=str(folder))
    grown = train_bpe_tokenizer([" ".join(WORDS) * 30] * 300, vocab_size=400)
    with pytest.raises(UserError, match="320 embeddings but the recipe's tokenizer has .* tokens"):
        curriculum.model_for_phase(recipe, "phase3", grown, tmp_path / "out")


def test_a_later_phase_without_its_predecessor_names_both_ways_out(tmp_path, tokenizer):
    with pytest.raises(
        UserError, match="phase2 starts from .*phase1/final, which does not exist.*phase2.init_from"
    ):
        curriculum.model_for_phase(_recipe(tmp_path), "phase2", tokenizer, tmp_path / "out")


def test_optimizer_hand_off_source(tmp_path):
    from tests.training.test_checkpoints import _checkpoint

    out = tmp_path / "out"
    recipe = _recipe(tmp_path)
    last = _checkpoint(out / "phase2", 8)
    _checkpoint(out / "phase2", 4)
    assert curriculum._optimizer_start(recipe, "phase3", out, allow_fresh_optimizer=False) == last
    assert curriculum._optimizer_start(recipe, "phase1", out, allow_fresh_optimizer=False) is None
    (last / "optimizer.pt").unlink()
    with pytest.raises(
        UserError, match="phase3.carry_optimizer is on but .*phase2 has no intact last checkpoint"
    ):
        curriculum._optimizer_start(recipe, "phase3", out, allow_fresh_optimizer=False)
    assert curriculum._optimizer_start(recipe, "phase3", out, allow_fresh_optimizer=True) is None
    fresh = _recipe(tmp_path, carry_optimizer=False)
    assert curriculum._optimizer_start(fresh, "phase3", out, allow_fresh_optimizer=False) is None


def test_a_user_error_before_any_checkpoint_leaves_no_output(tmp_path, tokenizer, monkeypatch):
    from training import prepare

    recipe = _recipe(tmp_path)
    monkeypatch.setattr(prepare.PrepareLayout, "of", classmethod(lambda cls, recipe: None))  # no source read
    monkeypatch.setattr(curriculum, "_prepared_tokenizer", lambda *a: tokenizer)

    def failing_phase(*args, **kwargs):
        (tmp_path / "out" / "phase1" / "rows").mkdir(parents=True)
        raise UserError("source 'g': /x.txt: line 3 is not valid JSON")

    monkeypatch.setattr(curriculum, "run_phase", failing_phase)
    with pytest.raises(UserError, match="line 3"):
        curriculum.run_curriculum(recipe, ["phase1"])
    assert not (tmp_path / "out").exists()
    # a folder that already held a run is never removed
    (tmp_path / "out" / "phase1" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(UserError):
        curriculum.run_curriculum(recipe, ["phase1"], resume=True)
    assert (tmp_path / "out" / "phase1" / "checkpoint-2").exists()


def test_a_fresh_phase1_model_takes_its_special_ids_from_the_tokenizer(tmp_path, tokenizer):
    model = curriculum.model_for_phase(_recipe(tmp_path), "phase1", tokenizer, tmp_path / "out")
    config = model.config
    assert (config.pad_token_id, config.mask_token_id) == (tokenizer.pad_token_id, tokenizer.mask_token_id)
    assert (config.cls_token_id, config.sep_token_id) == (tokenizer.cls_token_id, tokenizer.sep_token_id)
    # ModernBERT's convention: [CLS] / [SEP] double as BOS / EOS
    assert (config.bos_token_id, config.eos_token_id) == (tokenizer.cls_token_id, tokenizer.sep_token_id)
    assert len({config.pad_token_id, config.mask_token_id, config.cls_token_id, config.sep_token_id}) == 4
