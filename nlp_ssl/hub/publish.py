"""Push a run to the Hugging Face Hub while it trains, with ``TrainingArguments``' names and meanings.

``hub_strategy`` (as in transformers' ``TrainingArguments``):

- ``end``: push the final export (``final/``, its card and data cards) once, when training ends.
- ``every_save``: also push the model at every checkpoint save, to the repository root, so the repository
  always holds the latest weights; the final export replaces them at the end. These pushes run in a
  background thread; a save that comes while the previous push is still running is not pushed (as in
  transformers without ``hub_always_push``), and the final push always happens.
- ``checkpoint``: like ``every_save``, plus the checkpoint folder (the full training state a rerun resumes
  from) in the repository's ``last-checkpoint/`` folder.
- ``all_checkpoints``: like ``checkpoint``, but every checkpoint is kept, under ``checkpoints/step_<N>/``
  as in the run folder.

The token comes from ``HF_TOKEN`` or ``hf auth login`` (huggingface_hub reads both); the config has no
token field, so it never reaches ``config.yaml``, logs or ``metrics.jsonl``. Only the main process
publishes. An upload failure is one printed line; it never fails the run, and the line names the
``nlp-ssl push`` command that finishes the job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nlp_ssl.errors import UserError
from nlp_ssl.hub.compute import read_trainer_state
from nlp_ssl.hub.data_cards import corpora_of_config, find_data_cards, run_config, training_data_section
from nlp_ssl.hub.push import push_command
from nlp_ssl.hub.upload import (
    Export,
    commit_files,
    describe_failure,
    ensure_repo,
    export_files,
    folder_files,
    resolve_export,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

HubStrategy = Literal["end", "every_save", "checkpoint", "all_checkpoints"]
HUB_STRATEGIES: tuple[str, ...] = ("end", "every_save", "checkpoint", "all_checkpoints")


@dataclass
class HubConfig:
    """Hub settings of a run, named as in transformers' ``TrainingArguments``.

    Attributes:
        push_to_hub: push the run's export (and, per ``hub_strategy``, its saves) to the Hub.
        hub_model_id: ``namespace/name`` or ``name`` (then the token owner's namespace); default: the name
            of ``output_dir``.
        hub_strategy: what is pushed and when: ``end``, ``every_save``, ``checkpoint``, ``all_checkpoints``.
        hub_private_repo: create the repository private (``None``: the namespace's default); ignored if the
            repository exists.
        hub_revision: branch to push to (created from ``main`` when missing).
    """

    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_strategy: HubStrategy = "every_save"
    hub_private_repo: bool | None = None
    hub_revision: str | None = None

    def __post_init__(self) -> None:
        if self.hub_strategy not in HUB_STRATEGIES:
            raise UserError(f"config key 'hub_strategy' must be one of {list(HUB_STRATEGIES)}, "
                            f"got {self.hub_strategy!r}")
        if self.hub_model_id is not None:
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.hub_model_id)
            except HFValidationError:
                raise UserError(f"config key 'hub_model_id' is not a valid Hub repository id: {self.hub_model_id!r}; "
                                "use namespace/name (letters, digits, '-', '_', '.'), e.g. your-name/bert-small-ptb"
                                ) from None
        revision = self.hub_revision
        if revision is not None and (not revision.strip() or any(c.isspace() for c in revision) or ".." in revision):
            raise UserError(f"config key 'hub_revision' must be a branch name without spaces or '..', got "
                            f"{self.hub_revision!r}")


def default_repo_name(output_dir: str | Path) -> str:
    """``hub_model_id`` when none is set: the output folder's name, as transformers does."""
    name = Path(output_dir).resolve().name
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "nlp-ssl-model"


class Publisher:
    """Uploads a run to the Hub for the engine; every method is a no-op unless pushing is on and main process.

    Args:
        config: the run's hub settings (any object with :class:`HubConfig`'s attributes).
        output_dir: the run folder (its name is the default repository name; its ``config.yaml`` names the
            training corpora whose data cards travel with the model).
        is_main_process: only the main process uploads.
        export: writes the loadable artifact into a given folder (the objective's ``export``); needed for the
            model pushes of ``every_save`` / ``checkpoint`` / ``all_checkpoints``. Called synchronously in
            :meth:`on_checkpoint`, since training changes the weights right after.
        print_fn: where the one-line messages go (``accelerator.print`` in the engine).
        api: the ``HfApi`` to use (default: one built from the environment, ``HF_ENDPOINT`` included).
    """

    def __init__(self, config: HubConfig, output_dir: str | Path, *, is_main_process: bool = True,
                 export: Callable[[Path], None] | None = None, print_fn: Callable[[str], None] = print,
                 api: HfApi | None = None) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.enabled = bool(getattr(config, "push_to_hub", False)) and is_main_process
        self.repo_id = getattr(config, "hub_model_id", None) or default_repo_name(self.output_dir)
        self.strategy = getattr(config, "hub_strategy", "every_save")
        self.private = getattr(config, "hub_private_repo", None)
        self.revision = getattr(config, "hub_revision", None)
        self._export = export
        self._print = print_fn
        self._api = api
        self._full_id: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._lock = threading.Lock()
        self.skipped_steps: list[int] = []
        self.pushed_steps: list[int] = []
        self.failures: list[str] = []
        if self.enabled:
            self._warn_without_token()

    # ------------------------------------------------------------------------------------------------------
    def _warn_without_token(self) -> None:
        from huggingface_hub import get_token

        if get_token() is None:
            self._print("warning: push_to_hub is set but no Hugging Face token was found; training continues; set "
                        "HF_TOKEN or run `hf auth login` before the run ends, or push afterwards with "
                        f"`{push_command(self.output_dir / 'final', self.repo_id, self.private, self.revision)}`")

    def _hub(self) -> HfApi:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi()
        return self._api

    def _repo(self) -> str:
        """The full repository id, creating the repository (and branch) on first use."""
        if self._full_id is None:
            self._full_id = ensure_repo(self._hub(), self.repo_id, self.private, self.revision)
        return self._full_id

    def _worker(self) -> ThreadPoolExecutor:
        # One worker: uploads land in the order they were made, and the final push comes after the saves.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp-ssl-hub")
        return self._executor

    def busy(self) -> bool:
        """Whether a background upload is still running."""
        return self._pending is not None and not self._pending.done()

    # ------------------------------------------------------------------------------------------------------
    def on_checkpoint(self, folder: str | Path, step: int) -> None:
        """Called after the engine wrote checkpoint ``folder`` (``checkpoints/step_<step>``).

        The model (via ``export``) and, for ``checkpoint`` / ``all_checkpoints``, the checkpoint files are
        staged before returning (an export, and hard links that survive the checkpoint's pruning); the
        upload itself runs in the background.
        """
        if not self.enabled or self.strategy == "end":
            return
        if self.busy():
            self.skipped_steps.append(step)
            return
        staging = Path(tempfile.mkdtemp(prefix=".hub-upload-", dir=self.output_dir))
        try:
            files: dict[str, Path | bytes] = {}
            if self._export is not None:
                model_dir = staging / "model"
                model_dir.mkdir()
                self._export(model_dir)
                files.update(folder_files(model_dir))
                files["README.md"] = self._progress_card(step, model_dir).encode("utf-8")
                for card in self._cards():
                    files.setdefault(card.repo_path, card.path)
            if self.strategy in ("checkpoint", "all_checkpoints"):
                target = "last-checkpoint" if self.strategy == "checkpoint" else f"checkpoints/{Path(folder).name}"
                files.update(folder_files(_link_tree(Path(folder), staging / "checkpoint"), target))
        except Exception as err:
            shutil.rmtree(staging, ignore_errors=True)
            self._report(f"warning: could not stage step {step} for the Hub ({describe_failure(err)}); training "
                         "continues and the final model is pushed at the end")
            return
        if not files:
            shutil.rmtree(staging, ignore_errors=True)
            return
        self._pending = self._worker().submit(self._upload_save, files, step, staging)

    def _upload_save(self, files: dict[str, Path | bytes], step: int, staging: Path) -> None:
        try:
            commit_files(self._hub(), self._repo(), files, f"Training in progress, step {step}", self.revision)
            self.pushed_steps.append(step)
        except Exception as err:
            self._report(f"warning: push of step {step} to {self.repo_id} failed ({describe_failure(err)}); "
                         "training continues and the final model is pushed at the end")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def on_final(self, folder: str | Path) -> bool:
        """Push the final export ``folder`` (blocking, after any running upload). Returns whether it landed."""
        if not self.enabled:
            return False
        folder = Path(folder)
        state = read_trainer_state(folder)
        if state.get("complete", True):
            message = f"End of training (step {state['step']})" if "step" in state else "End of training"
        else:
            message = f"Training in progress, step {state.get('step', '?')} (stopped by the time budget)"
        future = self._worker().submit(self._upload_final, folder, message)
        self._pending = future
        return bool(future.result())

    def _upload_final(self, folder: Path, message: str) -> bool:
        try:
            export = resolve_export(folder)
            full_id = self._repo()
            commit_files(self._hub(), full_id, export_files(export, full_id), message, self.revision)
            branch = f" (branch {self.revision})" if self.revision else ""
            self._print(f"pushed {folder} to the Hub: {full_id}{branch}")
            return True
        except Exception as err:
            self._report(f"warning: push to {self.repo_id} failed ({describe_failure(err)}); the run's files are "
                         f"intact; finish with: {push_command(folder, self.repo_id, self.private, self.revision)}")
            return False

    def close(self) -> None:
        """Wait for pending uploads and stop the worker thread (safe to call twice)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._pending = None

    # ------------------------------------------------------------------------------------------------------
    def _report(self, line: str) -> None:
        with self._lock:
            self.failures.append(line)
        self._print(line)

    def _cards(self):
        config = run_config(self.output_dir) or {}
        return find_data_cards(corpora_of_config(config))

    def _progress_card(self, step: int, model_dir: Path) -> str:
        """A short README for the weights pushed mid-run; the final card replaces it."""
        from huggingface_hub import ModelCardData

        config = run_config(self.output_dir) or {}
        corpora = corpora_of_config(config)
        max_steps = config.get("max_steps")
        of = f" of {max_steps}" if isinstance(max_steps, int) else ""
        library = "gensim" if (model_dir / "vectors.kv").exists() else "transformers"
        data = ModelCardData(library_name=library, tags=["nlp_ssl"], license="other")
        body = (f"# {self.repo_id.split('/')[-1]}\n\nTraining in progress: this repository holds the model of an "
                f"nlp_ssl run at step {step}{of}. The final model card, with the evaluation results, replaces "
                "this text when training ends.\n\n")
        if corpora:
            body += training_data_section(corpora, find_data_cards(corpora))
        return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _link_tree(source: Path, target: Path) -> Path:
    """Hard-link ``source``'s files under ``target`` (copy across file systems); returns ``target``.

    The links keep the checkpoint's bytes readable for the background upload even if the engine prunes
    the checkpoint folder meanwhile (``save_total_limit``).
    """
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
    return target


__all__ = ["HUB_STRATEGIES", "Export", "HubConfig", "HubStrategy", "Publisher", "default_repo_name"]
