"""``nlp-ssl push``: upload an exported folder (model or vectors, card, data cards) to the Hugging Face Hub.

Works for every artifact nlp_ssl exports (transformers models, sentence and vision encoders, word vectors)
and for a run folder (its ``final/`` is pushed). The token comes from ``HF_TOKEN`` or ``hf auth login``.
The upload is one commit: after an interrupted or failed push, rerunning the same command completes it.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from nlp_ssl.errors import UserError
from nlp_ssl.hub.upload import (
    artifact_kind,
    commit_files,
    describe_failure,
    ensure_repo,
    export_files,
    resolve_export,
)


def check_export(folder: Path) -> str:
    """Return the artifact kind of ``folder``; raise a :class:`UserError` naming what is missing."""
    return artifact_kind(Path(folder))


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"'{repo_id}' is not a valid Hub repository id ({str(err).splitlines()[0][:120]}); "
                        "use namespace/name, e.g. your-name/bert-small-ptb") from None


def push_command(folder: Path, repo_id: str, private: bool | None = None, revision: str | None = None) -> str:
    """The ``nlp-ssl push`` line that (re)does a push on this machine (it is printed, never published)."""
    absolute = Path(folder).resolve()
    relative = os.path.relpath(absolute)
    shown = relative if not relative.startswith("..") else str(absolute)
    flags = (" --private" if private else "") + (f" --revision {shlex.quote(revision)}" if revision else "")
    return f"nlp-ssl push {shlex.quote(shown)} {repo_id}{flags}"


def push_folder(folder: Path, repo_id: str, private: bool | None = None, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` (or a run folder's ``final/``) in one commit.

    Returns the commit URL. Raises a one-line :class:`UserError` when the upload fails; the local files are
    never touched.
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)
    export = resolve_export(Path(folder))
    api = HfApi()
    run_name = export.folder.parent.name if export.folder.name == "final" else export.folder.name
    try:
        full_id = ensure_repo(api, repo_id, private, revision)
        return commit_files(api, full_id, export_files(export, full_id),
                            commit_message or f"Upload {run_name} with nlp_ssl", revision)
    except Exception as err:
        raise UserError(f"push to {repo_id} failed ({describe_failure(err)}); the local files are intact; "
                        f"rerun `{push_command(folder, repo_id, private, revision)}` to finish") from None


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    push = subparsers.add_parser("push", help="upload an exported folder (or a run's final/) to the Hugging Face Hub")
    push.add_argument("folder", type=Path, help="a run folder or its final/ folder")
    push.add_argument("repo_id", help="e.g. your-name/bert-small-ptb")
    push.add_argument("--private", action="store_true", help="create the repository private (ignored if it exists)")
    push.add_argument("--revision", help="branch to push to (created from main if missing)")
    push.add_argument("--message", help="commit message")
    push.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded")
    push.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    export = resolve_export(args.folder)
    if args.dry_run:
        files = export_files(export, args.repo_id)
        cards = ", ".join(card.repo_path for card in export.data_cards) or "none"
        print(f"{export.folder} is a complete {export.kind} export ({len(files)} files with data cards: {cards}); "
              f"would upload to {args.repo_id}")
        return 0
    from huggingface_hub.utils import disable_progress_bars, logging

    # One line per outcome: huggingface_hub's retry logs and bars would bury it.
    logging.set_verbosity_error()
    disable_progress_bars()
    url = push_folder(args.folder, args.repo_id, private=args.private or None, revision=args.revision,
                      commit_message=args.message)
    print(f"pushed {export.kind} export {export.folder} to {args.repo_id}: {url}")
    return 0
