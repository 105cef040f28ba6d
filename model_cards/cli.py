"""``rexbert card`` and ``rexbert push``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _card(args: argparse.Namespace) -> int:
    from model_cards.card import CardInputs, write_model_card

    inputs = CardInputs(
        model_dir=args.model_dir,
        repo_id=args.repo_id,
        size=args.size,
        results_files=[Path(p) for p in args.results],
        result_model_name=args.result_model_name,
    )
    print(f"wrote {write_model_card(inputs)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from model_cards.push import PushPlan, plan_all_sizes, push
    from rexbert_common.errors import UserError

    if args.all_sizes:
        plans = plan_all_sizes(
            args.folder, owner=args.owner, prefix=args.prefix, private=args.private, revision=args.revision
        )
    else:
        if not args.repo_id:
            raise UserError("--repo-id is required unless --all-sizes is given")
        plans = [
            PushPlan(
                folder=Path(args.folder), repo_id=args.repo_id, private=args.private, revision=args.revision
            )
        ]
    for line in push(plans, token=args.token, dry_run=args.dry_run):
        print(("would upload " if args.dry_run else "pushed ") + line)
    return 0


def register(subparsers) -> None:
    card = subparsers.add_parser("card", help="write a Hub model card (README.md) into a model folder")
    card.add_argument("model_dir", help="Hub-ready model folder (e.g. outputs/tiny/phase3/final)")
    card.add_argument("--repo-id", required=True, help="Hub repository the card documents (owner/name)")
    card.add_argument(
        "--size",
        choices=["micro", "mini", "base", "large", "custom"],
        default=None,
        help="paper size, checked against the parameter count (default: the size that count matches)",
    )
    card.add_argument("--results", nargs="*", default=[], help="`rexbert eval` results JSON files")
    card.add_argument(
        "--result-model-name",
        default=None,
        help="take the records of this model name or path (default: those whose path is MODEL_DIR)",
    )
    card.set_defaults(func=_card)

    push = subparsers.add_parser("push", help="upload Hub-ready folder(s) to the Hugging Face Hub")
    push.add_argument("folder", help="a model folder (--all-sizes: a folder of micro/ mini/ base/ large/)")
    push.add_argument("--repo-id", help="destination owner/name (single folder)")
    push.add_argument("--all-sizes", action="store_true", help="push <folder>/{micro,mini,base,large}")
    push.add_argument("--owner", default=None, help="Hub user or organisation (required with --all-sizes)")
    push.add_argument("--prefix", default="RexBERT", help="repository name prefix for --all-sizes")
    push.add_argument("--private", action="store_true", help="create new repositories as private")
    push.add_argument("--revision", default="main", help="branch to upload to (created when missing)")
    push.add_argument("--token", default=None, help="Hub token (default: the cached login / HF_TOKEN)")
    push.add_argument("--dry-run", action="store_true", help="check the folders, upload nothing")
    push.set_defaults(func=_push)
