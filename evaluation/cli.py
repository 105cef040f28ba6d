"""``rexbert eval mlm|esci|glue|mteb|report``: evaluators writing schema JSON + Markdown (+ PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rexbert_common.config import override_config


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _strs(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _common(parser: argparse.ArgumentParser, set_example: str) -> None:
    from rexbert_common.config import add_override_argument
    from rexbert_common.outputs import add_output_dir_argument

    parser.add_argument("models", nargs="+", help="Hub ids or local folders (several: compared side by side)")
    add_output_dir_argument(
        parser,
        "folder for <name>.json / .md / .png (default: outputs/eval)",
        "outputs/eval",
        old=("--out",),
    )
    parser.add_argument("--name", default=None, help="file stem of the outputs (default: the subcommand)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="needed for RexBERT custom-code folders"
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N or mps")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="compute precision: auto = bf16 autocast where the device computes bf16 natively and faster "
        "(weights stay fp32), else fp32; bf16 / fp32 force it. Recorded in each result's config",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_override_argument(parser, set_example)


def _preflight(args) -> None:
    """What can be checked before any data or model is loaded: the output folder, every model source, the
    device (a CUDA device on a CPU-only build)."""
    from evaluation.models import model_source
    from rexbert_common.devices import check_device
    from rexbert_common.outputs import check_output_dir

    check_output_dir(args.output_dir)
    for name in args.models:
        model_source(name)
    check_device(args.device)


def _checked(run):
    """The evaluator after :func:`_preflight`, under the ``--dtype`` precision (``rexbert_common.precision``);
    errors are reported by the ``rexbert`` entry point."""

    def wrapped(args) -> int:
        if args.eval_command == "report":
            return run(args)
        _preflight(args)  # before any heavy import (the precision probe imports torch)
        from rexbert_common.locks import output_lock
        from rexbert_common.precision import resolve_precision

        args.precision = resolve_precision(args.dtype, args.device)
        # one run per result name (two runs writing <out>/<name>.json at once would interleave); the lock
        # sits beside the folder, so a refused or failed run creates nothing in it
        out, name = Path(args.output_dir), args.name or args.eval_command
        lock = output_lock(out.with_name(f"{out.name}.{name}"), what=str(out / f"{name}.json"))
        with lock, args.precision.autocast(args.device):
            return run(args)

    return wrapped


def register(subparsers) -> None:
    from rexbert_common.outputs import add_output_dir_argument

    parser = subparsers.add_parser("eval", help="evaluate encoders: MLM recovery, similarity, GLUE, MTEB")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL")
    sub.required = True

    mlm = sub.add_parser("mlm", help="masked-token recovery on ESCI product titles/descriptions (Table 3)")
    _common(mlm, "mask_probability=0.3")
    mlm.add_argument("--data", default=None, help="ESCI parquet file/folder or Hub id (default: local union)")
    mlm.add_argument("--split", default="test", help="ESCI split whose products are used ('all' = every row)")
    mlm.add_argument(
        "--protocol",
        default="span",
        choices=["span", "word", "collator"],
        help="span: whole-word spans, same tokenizer (paper); word: across tokenizers; collator: 80/10/10",
    )
    mlm.add_argument(
        "--fields", type=_strs, default=("title", "description"), help="comma-separated: title,description"
    )
    mlm.add_argument(
        "--block-sizes", type=_ints, default=(128, 256, 512), help="comma-separated tokens per block"
    )
    mlm.add_argument(
        "--packing",
        default="truncate",
        choices=["truncate", "block"],
        help="truncate: one text per block (default); block: texts concatenated (other texts can be copied)",
    )
    mlm.add_argument(
        "--baselines",
        type=_baselines,
        default=("copy",),
        help="model-free rows on the same masks: 'copy' (the leak floor, default) or 'none'",
    )
    mlm.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="pack texts in file order (leaks; old runs)",
    )
    mlm.add_argument("--block-tokenizer", default=None, help="word protocol: tokenizer that cuts the blocks")
    mlm.add_argument(
        "--tokenizer-mismatch",
        default="refuse",
        choices=["refuse", "word"],
        help="span/collator with differing tokenizers: refuse, or switch to the word protocol",
    )
    mlm.add_argument("--mask-probability", type=float, default=0.15, help="share of tokens masked (0.15)")
    mlm.add_argument("--top-k", type=_ints, default=(1, 3, 5), help="comma-separated k of top-k accuracy")
    mlm.add_argument("--seed", type=int, default=0, help="text order and masks")
    mlm.add_argument("--max-texts", type=int, default=None, help="first N distinct texts per field (quick)")
    mlm.add_argument("--max-tokens", type=int, default=16384, help="padded tokens per forward pass")
    mlm.add_argument(
        "--head",
        default="auto",
        choices=["auto", "labels", "gather", "full"],
        help="how the MLM head runs on masked positions only (auto picks per model)",
    )
    mlm.set_defaults(func=_checked(_run_mlm))

    similarity = sub.add_parser(
        "similarity",
        aliases=["esci"],
        help="CoSENT similarity on ESCI, STS-B or any pair file (Figure 4); 'esci' is the ESCI name",
    )
    _common(similarity, "learning_rate=3e-5")
    similarity.add_argument("--task", default="esci", help="esci | stsb | PATH of a pair file")
    similarity.add_argument(
        "--protocol",
        default="cv",
        choices=["cv", "official"],
        help="cv: grouped folds in the test data; official: train split -> test split",
    )
    similarity.add_argument("--split", default="dev", choices=["dev", "test"], help="STS-B split evaluated")
    similarity.add_argument(
        "--data", default=None, help="ESCI parquet file/folder or Hub id (default: local union)"
    )
    similarity.add_argument(
        "--data-dir", default=None, help="folder with glue_stsb/ (default: $REXBERT_DATA_DIR)"
    )
    similarity.add_argument("--hub", action="store_true", help="STS-B from the Hub")
    similarity.add_argument("--folds", type=int, default=5, help="query-grouped folds of the cv protocol")
    similarity.add_argument(
        "--seeds", type=_ints, default=None, help="comma-separated seeds (default: --seed)"
    )
    similarity.add_argument("--epochs", type=float, default=1.0, help="0 = zero-shot (no fine-tuning)")
    similarity.add_argument("--learning-rate", type=float, default=2e-5, help="CoSENT fine-tuning LR")
    similarity.add_argument("--batch-size", type=int, default=16, help="pairs per fine-tuning step")
    similarity.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own")
    similarity.add_argument("--query-prompt", default=None, help="text prepended to queries / first texts")
    similarity.add_argument("--document-prompt", default=None, help="text prepended to documents")
    similarity.add_argument("--max-pairs", type=int, default=None, help="first N pairs (quick runs)")
    similarity.add_argument("--seed", type=int, default=0, help="folds, data order and head initialisation")
    similarity.add_argument(
        "--save-model", default=None, help="folder to save the fine-tuned sentence-transformers models to"
    )
    similarity.set_defaults(func=_checked(_run_similarity))

    glue = sub.add_parser("glue", help="GLUE fine-tuning, mean ± sd over seeds (Table 4)")
    _common(glue, "hparams.sst2.epochs=1")
    glue.add_argument(
        "--tasks",
        type=_strs,
        default=("sst2", "qnli", "qqp", "mnli", "stsb"),
        help="comma-separated GLUE tasks (default: sst2,qnli,qqp,mnli,stsb)",
    )
    glue.add_argument("--seeds", type=_ints, default=(0, 1, 2), help="comma-separated fine-tuning seeds")
    glue.add_argument(
        "--data-dir", default=None, help="folder with glue_<task>/ TSVs (default: $REXBERT_DATA_DIR)"
    )
    glue.add_argument("--hub", action="store_true", help="load nyu-mll/glue from the Hub")
    glue.add_argument("--epochs", type=float, default=None, help="override every task's epochs")
    glue.add_argument("--learning-rate", type=float, default=None, help="override every task's learning rate")
    glue.add_argument("--batch-size", type=int, default=None, help="override every task's batch size")
    glue.add_argument("--size", default="base", help="model size whose per-task settings are used")
    glue.add_argument(
        "--sweep-learning-rates",
        type=lambda t: tuple(float(v) for v in t.split(",") if v.strip()),
        default=(),
        help="comma-separated learning rates tried on a held-out slice of train (best one is used); "
        "ModernBERT's GLUE sweeps drew from 1e-5,3e-5,5e-5,8e-5",
    )
    glue.add_argument("--max-train-examples", type=int, default=None, help="first N training rows (quick)")
    glue.add_argument("--max-eval-examples", type=int, default=None, help="first N evaluation rows (quick)")
    glue.set_defaults(func=_checked(_run_glue))

    mteb = sub.add_parser(
        "mteb", help="MTEB tasks via the mteb package (offline: STSBenchmark, ESCIReranking)"
    )
    _common(mteb, "max_seq_length=256")
    mteb.add_argument(
        "--tasks",
        type=_strs,
        default=("STSBenchmark", "ESCIReranking"),
        help="comma-separated MTEB task names (offline: STSBenchmark, ESCIReranking)",
    )
    mteb.add_argument("--hub", action="store_true", help="MTEB's own Hub datasets (any MTEB task name)")
    mteb.add_argument(
        "--data", default=None, help="ESCI source of the offline ESCIReranking (default: local union)"
    )
    mteb.add_argument("--data-dir", default=None, help="folder with glue_stsb/ (default: $REXBERT_DATA_DIR)")
    mteb.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own")
    mteb.set_defaults(func=_checked(_run_mteb))

    report = sub.add_parser("report", help="merge result JSON files into one Markdown report (+ bar chart)")
    report.add_argument("results", nargs="+", help="rexbert-eval/1 JSON files")
    add_output_dir_argument(
        report, "folder for <name>.md (+ <name>.png, a bar chart) (default: outputs/eval)"
    )
    report.add_argument("--name", default="report", help="file stem of the outputs (default: report)")
    # the old spelling named the Markdown file itself
    report.add_argument("--out", dest="report_file", default=None, help=argparse.SUPPRESS)
    report.set_defaults(func=_checked(_run_report))


def _write(args, kind: str, records: list[dict], chart: bool = False) -> int:
    """Write <name>.json / .md (/ .png); print one line naming them, then the results table."""
    from evaluation import reports

    stem = Path(args.output_dir) / (args.name or kind)
    for record in records:
        record["config"]["precision"] = args.precision.as_dict()
    written = [reports.write_results(stem.with_suffix(".json"), records)]
    written.append(reports.write_text(stem.with_suffix(".md"), reports.markdown_report(records)))
    if chart:
        written.append(reports.similarity_bar_chart(records, stem.with_suffix(".png"), task=kind))
    print(f"wrote {', '.join(Path(p).name for p in written)} in {stem.parent}")
    print(reports.markdown_report(records))
    return 0


def _config_from_args(config_cls, args: argparse.Namespace):
    """An evaluator config from the parsed options that share its field names (the rest keep defaults)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in vars(args).items() if k in names})


def _baselines(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else _strs(text)


def _run_mlm(args) -> int:
    from evaluation.mlm_recovery import MLMRecoveryConfig, run_mlm

    cfg = _config_from_args(MLMRecoveryConfig, args)
    cfg = override_config(cfg, args.overrides)
    records = run_mlm(
        args.models,
        cfg,
        args.data,
        None if args.split == "all" else args.split,
        args.trust_remote_code,
        args.device,
        not args.no_progress,
    )
    return _write(args, "mlm", records)


def _run_similarity(args) -> int:
    from evaluation.esci_similarity import SimilarityConfig, run_similarity

    cfg = _config_from_args(SimilarityConfig, args)
    cfg = override_config(cfg, args.overrides)
    records = run_similarity(
        args.models,
        cfg,
        args.data,
        args.data_dir,
        args.hub,
        args.trust_remote_code,
        args.device,
        not args.no_progress,
    )
    return _write(args, cfg.task_name, records, chart=True)


def _run_glue(args) -> int:
    from evaluation.glue import GlueConfig, run_glue

    overrides = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("learning_rate", args.learning_rate),
            ("batch_size", args.batch_size),
        )
        if v is not None
    }
    cfg = GlueConfig(
        tasks=args.tasks,
        seeds=args.seeds,
        size=args.size,
        sweep_learning_rates=args.sweep_learning_rates,
        overrides=overrides,
        max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples,
    )
    cfg = override_config(cfg, args.overrides)
    records = run_glue(
        args.models, cfg, args.data_dir, args.hub, args.trust_remote_code, args.device, not args.no_progress
    )
    return _write(args, "glue", records)


def _run_mteb(args) -> int:
    from evaluation.mteb_eval import MTEBConfig, run_mteb

    cfg = MTEBConfig(
        tasks=args.tasks,
        hub=args.hub,
        max_seq_length=args.max_seq_length,
        esci_data=args.data,
        data_dir=args.data_dir,
    )
    cfg = override_config(cfg, args.overrides)
    records = run_mteb(
        args.models,
        cfg,
        args.trust_remote_code,
        args.device,
        output=str(Path(args.output_dir) / "mteb_results"),
    )
    return _write(args, "mteb", records)


def _run_report(args) -> int:
    from evaluation import reports
    from rexbert_common.outputs import check_output_dir, check_output_file

    if args.report_file:
        check_output_file(args.report_file, "--out")
    else:
        check_output_dir(args.output_dir or "outputs/eval")
    records = reports.read_results(args.results)
    path = Path(args.report_file or Path(args.output_dir or "outputs/eval") / f"{args.name}.md")
    out = reports.write_text(path, reports.markdown_report(records))
    written = [str(out)]
    if any(r["kind"] == "esci_similarity" for r in records):
        written.append(str(reports.similarity_bar_chart(records, path.with_suffix(".png"), task=None)))
    print(f"wrote {' and '.join(written)}")
    return 0
