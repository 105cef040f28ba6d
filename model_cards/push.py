"""Publish Hub-ready folders with ``huggingface_hub`` (create the repository, upload, tag)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_cards.card import SIZE_NAMES
from model_cards.hub_folder import check_hub_folder

# Files that never belong in a published model repository (training state, scratch).
IGNORE_PATTERNS = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json",
                   "training_args.bin", "checkpoint-*/**", "*.tmp", ".*")


@dataclass
class PushPlan:
    """One folder → one repository.

    Args:
        folder: the Hub-ready folder (checked by :func:`model_cards.hub_folder.check_hub_folder`).
        repo_id: destination, ``owner/name``.
        private: create the repository as private.
        revision: branch to upload to (created when missing).
        commit_message: message of the upload commit.
    """

    folder: Path
    repo_id: str
    private: bool = False
    revision: str = "main"
    commit_message: str = "Upload RexBERT checkpoint"


def plan_all_sizes(root: str | Path, owner: str, prefix: str = "RexBERT", sizes=SIZE_NAMES,
                   private: bool = False) -> list[PushPlan]:
    """One plan per size: ``<root>/<size>`` → ``<owner>/<prefix>-<size>``. Missing sizes are an error."""
    root = Path(root)
    plans, missing = [], []
    for size in sizes:
        folder = root / size
        if not folder.is_dir():
            missing.append(str(folder))
        plans.append(PushPlan(folder=folder, repo_id=f"{owner}/{prefix}-{size}", private=private))
    if missing:
        raise FileNotFoundError(f"no model folder for: {', '.join(missing)}")
    return plans


def push(plans: list[PushPlan], token: str | None = None, dry_run: bool = False, api=None) -> list[str]:
    """Check every folder first (nothing is uploaded unless all are Hub-ready), then upload each.

    Returns the commit URLs (or, with ``dry_run``, the repository ids that would be written).
    """
    for plan in plans:
        check_hub_folder(plan.folder).raise_if_invalid()
    if dry_run:
        return [plan.repo_id for plan in plans]
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    urls = []
    for plan in plans:
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True, repo_type="model")
        if plan.revision != "main":
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        info = api.upload_folder(repo_id=plan.repo_id, folder_path=str(plan.folder), revision=plan.revision,
                                 commit_message=plan.commit_message, ignore_patterns=list(IGNORE_PATTERNS))
        urls.append(str(getattr(info, "commit_url", info)))
    return urls
