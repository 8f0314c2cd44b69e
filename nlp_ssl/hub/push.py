"""``nlp-ssl push``: upload an exported folder (model + tokenizer + card) to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlp_ssl.errors import UserError

# What a folder needs before it is worth publishing, by kind of artifact.
_REQUIRED = {
    "transformers": ["config.json", "README.md"],
    "word-vectors": ["vectors.kv", "README.md"],
}


def check_export(folder: Path) -> str:
    """Return the artifact kind of ``folder``; raise a :class:`UserError` naming what is missing."""
    if not folder.is_dir():
        raise UserError(f"no exported folder at {folder}; point push at a run's final/ folder")
    kind = "word-vectors" if (folder / "vectors.kv").exists() else "transformers"
    missing = [name for name in _REQUIRED[kind] if not (folder / name).exists()]
    if kind == "transformers" and not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        missing.append("a tokenizer (tokenizer.json)")
    if kind == "transformers" and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        missing.append("model weights (*.safetensors)")
    if missing:
        raise UserError(f"{folder} is not a complete export: missing {', '.join(missing)}")
    return kind


def push_folder(folder: Path, repo_id: str, private: bool = False, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    check_export(folder)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                 commit_message=commit_message or f"Upload {folder.name} with nlp_ssl",
                                 ignore_patterns=["trainer_state.json.tmp*", ".*"])
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"push to {repo_id} failed ({first[:200]}); check `hf auth login` and the network") from None
    return str(getattr(info, "commit_url", info))


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    push = subparsers.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    push.add_argument("folder", type=Path, help="a run's final/ folder")
    push.add_argument("repo_id", help="e.g. your-name/bert-small-ptb")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision")
    push.add_argument("--dry-run", action="store_true", help="check the folder, upload nothing")
    push.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    kind = check_export(args.folder)
    files = sorted(p.name for p in args.folder.iterdir())
    if args.dry_run:
        print(f"{args.folder} is a complete {kind} export ({len(files)} files); would upload to {args.repo_id}")
        return 0
    print(push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision))
    return 0
