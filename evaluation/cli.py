"""``rexbert eval mlm|esci|glue|mteb|report``: evaluators writing schema JSON + Markdown (+ PNG)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _strs(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", help="Hub ids or local folders (several: compared side by side)")
    parser.add_argument("--out", default="outputs/eval", help="folder for <name>.json / .md (/ .png)")
    parser.add_argument("--name", default=None, help="file stem of the outputs (default: the subcommand)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="needed for RexBERT custom-code folders"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="compute precision: auto = bf16 autocast where the device computes bf16 natively and faster "
        "(weights stay fp32), else fp32; bf16 / fp32 force it. Recorded in each result's config",
    )
    parser.add_argument("--no-progress", action="store_true")


def _friendly(run):
    """Data / model problems the user can fix print one line (exit 2) instead of a traceback. Evaluators
    run under the ``--dtype`` precision (``rexbert_common.precision``)."""

    def wrapped(args) -> int:
        from rexbert_common import UserError
        from rexbert_common.precision import resolve_precision

        try:
            if not hasattr(args, "dtype"):  # `eval report` computes nothing
                return run(args)
            args.precision = resolve_precision(args.dtype, args.device)
            with args.precision.autocast(args.device):
                return run(args)
        except (UserError, FileNotFoundError) as error:
            print(f"rexbert eval: error: {error}", file=sys.stderr)
            return 2

    return wrapped


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate encoders: MLM recovery, similarity, GLUE, MTEB")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL")
    sub.required = True

    mlm = sub.add_parser("mlm", help="masked-token recovery on ESCI product titles/descriptions (Table 3)")
    _common(mlm)
    mlm.add_argument("--data", default=None, help="ESCI parquet file/folder or Hub id (default: local union)")
    mlm.add_argument("--split", default="test", help="ESCI split whose products are used ('all' = every row)")
    mlm.add_argument("--protocol", default="span", choices=["span", "word", "collator"])
    mlm.add_argument("--fields", type=_strs, default=("title", "description"))
    mlm.add_argument("--block-sizes", type=_ints, default=(128, 256, 512))
    mlm.add_argument("--packing", default="block", choices=["block", "truncate"])
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
    mlm.add_argument("--mask-probability", type=float, default=0.15)
    mlm.add_argument("--top-k", type=_ints, default=(1, 3, 5))
    mlm.add_argument("--seed", type=int, default=0)
    mlm.add_argument("--max-texts", type=int, default=None)
    mlm.add_argument("--max-tokens", type=int, default=16384, help="padded tokens per forward pass")
    mlm.add_argument("--head", default="auto", choices=["auto", "labels", "gather", "full"])
    mlm.set_defaults(func=_friendly(_run_mlm))

    similarity = sub.add_parser(
        "similarity",
        aliases=["esci"],
        help="CoSENT similarity on ESCI, STS-B or any pair file (Figure 4); 'esci' is the ESCI name",
    )
    _common(similarity)
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
    similarity.add_argument("--folds", type=int, default=5)
    similarity.add_argument(
        "--seeds", type=_ints, default=None, help="comma-separated seeds (default: --seed)"
    )
    similarity.add_argument("--epochs", type=float, default=1.0, help="0 = zero-shot (no fine-tuning)")
    similarity.add_argument("--learning-rate", type=float, default=2e-5)
    similarity.add_argument("--batch-size", type=int, default=16)
    similarity.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own")
    similarity.add_argument("--query-prompt", default=None, help="text prepended to queries / first texts")
    similarity.add_argument("--document-prompt", default=None, help="text prepended to documents")
    similarity.add_argument("--max-pairs", type=int, default=None)
    similarity.add_argument("--seed", type=int, default=0)
    similarity.add_argument(
        "--save-model", default=None, help="folder to save the fine-tuned sentence-transformers models to"
    )
    similarity.set_defaults(func=_friendly(_run_similarity))

    glue = sub.add_parser("glue", help="GLUE fine-tuning, mean ± sd over seeds (Table 4)")
    _common(glue)
    glue.add_argument("--tasks", type=_strs, default=("sst2", "qnli", "qqp", "mnli", "stsb"))
    glue.add_argument("--seeds", type=_ints, default=(0, 1, 2))
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
    glue.add_argument("--max-train-examples", type=int, default=None)
    glue.add_argument("--max-eval-examples", type=int, default=None)
    glue.set_defaults(func=_friendly(_run_glue))

    mteb = sub.add_parser(
        "mteb", help="MTEB tasks via the mteb package (offline: STSBenchmark, ESCIReranking)"
    )
    _common(mteb)
    mteb.add_argument("--tasks", type=_strs, default=("STSBenchmark", "ESCIReranking"))
    mteb.add_argument("--hub", action="store_true", help="MTEB's own Hub datasets (any MTEB task name)")
    mteb.add_argument(
        "--data", default=None, help="ESCI source of the offline ESCIReranking (default: local union)"
    )
    mteb.add_argument("--data-dir", default=None, help="folder with glue_stsb/ (default: $REXBERT_DATA_DIR)")
    mteb.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own")
    mteb.set_defaults(func=_friendly(_run_mteb))

    report = sub.add_parser("report", help="merge result JSON files into one Markdown report (+ bar chart)")
    report.add_argument("results", nargs="+", help="rexbert-eval/1 JSON files")
    report.add_argument("--out", required=True, help="Markdown path; a .png bar chart is written beside it")
    report.set_defaults(func=_friendly(_run_report))


def _write(args, kind: str, records: list[dict], chart: bool = False) -> int:
    from evaluation import reports

    stem = Path(args.out) / (args.name or kind)
    for record in records:
        record["config"]["precision"] = args.precision.as_dict()
    json_path = reports.write_results(stem.with_suffix(".json"), records)
    md_path = reports.write_text(stem.with_suffix(".md"), reports.markdown_report(records))
    print(f"wrote {json_path}\nwrote {md_path}")
    if chart:
        print("wrote " + str(reports.similarity_bar_chart(records, stem.with_suffix(".png"), task=kind)))
    print(reports.markdown_report(records))
    return 0


def _config_from_args(config_cls, args: argparse.Namespace):
    """An evaluator config from the parsed options that share its field names (the rest keep defaults)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in vars(args).items() if k in names})


def _run_mlm(args) -> int:
    from evaluation.mlm_recovery import MLMRecoveryConfig, run_mlm

    cfg = _config_from_args(MLMRecoveryConfig, args)
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
    records = run_mteb(
        args.models, cfg, args.trust_remote_code, args.device, output=str(Path(args.out) / "mteb_results")
    )
    return _write(args, "mteb", records)


def _run_report(args) -> int:
    from evaluation import reports

    records = reports.read_results(args.results)
    out = reports.write_text(args.out, reports.markdown_report(records))
    print(f"wrote {out}")
    if any(r["kind"] == "esci_similarity" for r in records):
        chart = reports.similarity_bar_chart(records, Path(args.out).with_suffix(".png"), task=None)
        print(f"wrote {chart}")
    return 0
