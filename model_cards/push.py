"""Publish Hub-ready folders with ``huggingface_hub`` (create the repository, upload, tag)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from model_cards.hub_folder import IGNORE_PATTERNS, check_hub_folder, check_size, files_to_upload
from rexbert_common.errors import UserError

# git's ref-name rules, the part a user can get wrong on the command line
_BAD_REVISION = re.compile(r"(^[-/.])|(\.\.)|([\s~^:?*\[\\])|(/$)|(\.lock$)|(@\{)")


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` as the Hub accepts it (huggingface_hub's own validator), else a one-line UserError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise UserError(f"repo id {repo_id!r}: expected 'owner/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(f"repo id {repo_id!r}: {' '.join(str(error).split())}") from None
    return repo_id


def check_revision(revision: str) -> str:
    if not revision or _BAD_REVISION.search(revision):
        raise UserError(f"revision {revision!r} is not a valid branch name")
    return revision


@dataclass
class PushPlan:
    """One folder → one repository.

    Args:
        folder: the Hub-ready folder (checked by :func:`model_cards.hub_folder.check_hub_folder`).
        repo_id: destination, ``owner/name``.
        private: create the repository as private.
        revision: branch to upload to (created when missing).
        commit_message: message of the upload commit.
        size: the paper size the repository is named after (micro / mini / base / large): the folder's
            parameter count must be that size's, checked before anything is uploaded (None: no check).
    """

    folder: Path
    repo_id: str
    private: bool = False
    revision: str = "main"
    commit_message: str = "Upload RexBERT checkpoint"
    size: str | None = None

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        check_repo_id(self.repo_id)
        check_revision(self.revision)


def plan_all_sizes(
    root: str | Path,
    owner: str,
    prefix: str = "RexBERT",
    sizes: tuple[str, ...] = ("micro", "mini", "base", "large"),  # modeling_rexbert.SIZE_PRESETS
    private: bool = False,
    revision: str = "main",
) -> list[PushPlan]:
    """One plan per size: ``<root>/<size>`` → ``<owner>/<prefix>-<size>``. Missing sizes are an error."""
    if not owner:
        raise UserError("--all-sizes needs --owner (your Hub user or organisation)")
    root = Path(root)
    missing = [str(root / size) for size in sizes if not (root / size).is_dir()]
    if missing:
        raise UserError(f"no model folder for: {', '.join(missing)}")
    return [
        PushPlan(
            folder=root / size,
            repo_id=f"{owner}/{prefix}-{size}",
            private=private,
            revision=revision,
            size=size,
        )
        for size in sizes
    ]


def push(plans: list[PushPlan], token: str | None = None, dry_run: bool = False, api=None) -> list[str]:
    """Check every folder first (nothing is uploaded unless all are Hub-ready and each size folder has its
    size's parameter count), then upload each.

    Returns the commit URLs, or with ``dry_run`` one line per plan: the destination and the files it
    would upload.
    """
    for plan in plans:
        check_hub_folder(plan.folder).raise_if_invalid()
        if plan.size is not None:
            check_size(plan.folder, plan.size)
    if dry_run:
        return [
            f"{plan.folder} -> {plan.repo_id}@{plan.revision}: {', '.join(files_to_upload(plan.folder))}"
            for plan in plans
        ]
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    urls = []
    for plan in plans:
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True, repo_type="model")
        if plan.revision != "main":
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=str(plan.folder),
            revision=plan.revision,
            commit_message=plan.commit_message,
            ignore_patterns=list(IGNORE_PATTERNS),
        )
        urls.append(str(getattr(info, "commit_url", info)))
    return urls
