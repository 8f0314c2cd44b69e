"""The output-directory contract and what a rerun of the same command does with it.

Layout::

    <output_dir>/.nlp_ssl_run           marks the folder as a run (only such folders are ever replaced)
    <output_dir>/.lock                  host and pid of the process running in it (while it runs)
    <output_dir>/config.yaml            the resolved config
    <output_dir>/metrics.jsonl          one JSON object per logged event ({"step": ..., "train/loss": ...})
    <output_dir>/checkpoints/step_<N>/  full training state; complete once engine_state.json (written last,
                                        with the size of every file) is there
    <output_dir>/final/                 the exported artifact (a ``save_pretrained`` folder for LMs)

What a rerun does: an interrupted run with the same config resumes from its newest readable checkpoint
(a broken one is named and skipped); a finished run is reported and left alone; a folder whose run never
got as far as a checkpoint is started again; a different config is refused with the keys that differ,
unless ``overwrite_output_dir=true`` asks to replace the run. A folder that is not an nlp_ssl run is never
replaced. A folder's location is not part of its config, so a moved run resumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nlp_ssl.atomic import atomic_write_text
from nlp_ssl.errors import UserError, first_line

# Keys a rerun may change without invalidating the checkpoints (e.g. train longer, log more often).
RESUMABLE_KEYS = {
    "output_dir", "max_steps", "max_time_minutes", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
    "report_to", "max_eval_batches", "dataloader_num_workers", "overwrite_output_dir", "per_device_eval_batch_size",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_revision", "peak_flops",
    "on_nonfinite", "max_skipped_steps",
}
MARKER = ".nlp_ssl_run"
ENGINE_STATE_FILE = "engine_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
# Leftovers of writes a kill interrupted: checkpoint and export temp folders, replaced exports, Hub staging.
_STALE = (re.compile(r"^\.step_\d+\.tmp$"), re.compile(r"^\.final\.(tmp|old)-"), re.compile(r"^\.hub-upload-"),
          re.compile(r"^\..+\.tmp-"))


class RunDirectory:
    """Inspects and manages ``output_dir`` for one run.

    After :meth:`check`: :attr:`finished` (a finished run with this config), :attr:`replace` (the folder
    will be replaced by :meth:`prepare`), and the returned checkpoint to resume from (or None).
    """

    def __init__(self, output_dir: str | Path, config: dict[str, Any], overwrite: bool = False,
                 report: Callable[[str], None] = print) -> None:
        self.root = Path(output_dir)
        self.config = config
        self.overwrite = overwrite
        self.report = report
        self.replace = False
        self.finished = False

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @staticmethod
    def step_of(checkpoint: Path) -> int:
        return int(_STEP_DIR.match(checkpoint.name).group(1))  # type: ignore[union-attr]

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints (``engine_state.json`` written), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for child in self.checkpoints.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / ENGINE_STATE_FILE).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def latest_checkpoint(self, before: int | None = None, quiet: bool = False) -> Path | None:
        """The newest checkpoint (older than step ``before``) that passes :func:`checkpoint_problem`; broken
        ones are named (unless ``quiet``) and skipped."""
        for step in reversed(self.checkpoint_steps()):
            if before is not None and step >= before:
                continue
            folder = self.checkpoints / f"step_{step}"
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder
            if not quiet:
                self.report(f"warning: skipping checkpoint {folder} ({problem}); falling back to an earlier one")
        return None

    def prune_checkpoints(self, keep: int | None) -> None:
        """Keep the ``keep`` newest good checkpoints; a broken one never counts as one of them."""
        if keep is None:
            return
        steps = self.checkpoint_steps()
        good = [s for s in steps if checkpoint_problem(self.checkpoints / f"step_{s}") is None]
        keep_steps = set(good[-keep:])
        newest_good = max(keep_steps) if keep_steps else -1
        for step in steps:
            if step not in keep_steps and step < newest_good:
                shutil.rmtree(self.checkpoints / f"step_{step}", ignore_errors=True)

    # ------------------------------------------------------------------------------------------ the check
    def check(self) -> Path | None:
        """Decide what this run does with ``output_dir``; return the checkpoint to resume from.

        Raises:
            UserError: the folder is not an nlp_ssl run, holds a run with a different config (and no
                ``overwrite_output_dir``), or its ``config.yaml`` cannot be read.
        """
        self.replace = self.finished = False
        if not self.root.exists():
            return None
        if not self.root.is_dir():
            raise UserError(f"output_dir {self.root} is a file, not a folder; choose another output_dir")
        if all(p.name == ".lock" or p.name.startswith(f".{MARKER}.tmp-") for p in self.root.iterdir()):
            return None  # empty, or a run that is starting: its lock and its marker being written (the lock decides)
        if not self.is_run_folder():
            entries = sorted(p.name for p in self.root.iterdir())
            raise UserError(f"{self.root} exists and is not an nlp_ssl run folder (it holds {', '.join(entries[:3])}"
                            f"{' ...' if len(entries) > 3 else ''}); choose another output_dir: it is never replaced")
        previous = self._previous_config()
        changed = _changed_keys(self.config, previous)
        progress = bool(self.checkpoint_steps()) or self.final.is_dir()
        if changed and progress:
            if self.overwrite:
                self.replace = True
                return None
            raise UserError(f"{self.root} holds a run with a different config ({_describe(changed, self.config, previous)}); "
                            "choose another output_dir, or pass overwrite_output_dir=true to replace that run")
        if changed:
            # A start that failed before its first checkpoint: nothing to keep.
            self.report(f"{self.root} holds a run that stopped before its first checkpoint; starting it again")
            self.replace = True
            return None
        if self._is_finished():
            if self.overwrite:
                self.replace = True
                return None
            self.finished = True
            return None
        return self.latest_checkpoint()

    def is_run_folder(self) -> bool:
        """A folder this toolkit made: its marker, or (older runs) a config.yaml next to run outputs."""
        if (self.root / MARKER).is_file():
            return True
        outputs = [self.metrics_file, self.checkpoints, self.final, self.root / "tokenizer"]
        return self.config_file.is_file() and any(p.exists() for p in outputs)

    def _previous_config(self) -> dict[str, Any] | None:
        if not self.config_file.is_file():
            return None
        try:
            loaded = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
            raise UserError(f"{self.config_file} is unreadable ({first_line(err)}); restore it, or pass "
                            "overwrite_output_dir=true to replace the run in that folder") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{self.config_file} does not hold a config mapping; restore it, or pass "
                            "overwrite_output_dir=true to replace the run in that folder")
        return loaded

    def _is_finished(self) -> bool:
        done = self.final / "trainer_state.json"
        if not done.is_file():
            return False
        try:
            state = json.loads(done.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            self.report(f"warning: {done} is unreadable; the run is treated as unfinished and resumes")
            return False
        return bool(state.get("complete")) and state.get("step", 0) >= self.config.get("max_steps", 0)

    # ------------------------------------------------------------------------------------------ writing
    def prepare(self) -> None:
        """Create the folder (clearing it first if :meth:`check` chose to replace it), mark it as a run, clean
        the leftovers of interrupted writes and write ``config.yaml``."""
        if self.replace and self.root.exists():
            if not self.is_run_folder():  # checked before; never delete what is not ours
                raise UserError(f"{self.root} is not an nlp_ssl run folder; it is never replaced")
            for child in self.root.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / MARKER, "This folder is an nlp_ssl run (see config.yaml).\n")
        self.clean_stale()
        atomic_write_text(self.config_file, yaml.safe_dump(self.config, sort_keys=False))

    def trim_metrics(self, step: int) -> None:
        """Cut ``metrics.jsonl`` back to ``step`` (the resumed checkpoint's), so replayed steps log once."""
        if self.metrics_file.exists():
            keep_until = step
            kept = []
            for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if record.get("step", 0) <= keep_until:
                    kept.append(line)
            atomic_write_text(self.metrics_file, "".join(f"{line}\n" for line in kept))

    def clean_stale(self) -> None:
        """Remove temporary folders and files that a killed checkpoint, export or upload left behind."""
        for folder in (self.root, self.checkpoints):
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if child.name != ".lock" and any(p.match(child.name) for p in _STALE):
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_manifest(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file in a checkpoint folder (recorded in its engine state)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ENGINE_STATE_FILE}


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (missing, truncated or unreadable files), or None."""
    state_file = folder / ENGINE_STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{ENGINE_STATE_FILE} unreadable: {first_line(err, 80)}"
    manifest = state.get("files") if isinstance(state, dict) else None
    if not isinstance(manifest, dict) or not manifest:
        return "no file list in its engine state"
    for name, size in manifest.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    for path in folder.glob("*.safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                handle.keys()
        except Exception as err:  # noqa: BLE001 - any parse failure means the file is unusable
            return f"{path.name} is unreadable: {first_line(err, 80)}"
    return None


# ---------------------------------------------------------------------------------------------- config diff
def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_config(tree: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys with scalar values (lists become strings), as trackers such as TensorBoard want them."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _flatten(tree).items()}


def _changed_keys(mine: dict[str, Any], theirs: dict[str, Any] | None) -> list[str]:
    if theirs is None:
        return []
    # Round-trip through YAML so tuples and lists (and other YAML-equal values) compare equal.
    a, b = _flatten(yaml.safe_load(yaml.safe_dump(mine))), _flatten(theirs)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k.split(".")[0] not in RESUMABLE_KEYS)


def _describe(changed: list[str], mine: dict[str, Any], theirs: dict[str, Any] | None) -> str:
    a, b = _flatten(mine), _flatten(theirs or {})
    shown = [f"{k}: {b.get(k)!r} -> {a.get(k)!r}" for k in changed[:4]]
    return ", ".join(shown) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


# ---------------------------------------------------------------------------------------------- the lock
class RunLock:
    """``<output_dir>/.lock``: one run at a time in a folder.

    Holds the host, pid and start time of the owner. A second run into a busy folder is refused; a lock
    left by a dead process on this host is taken over (a killed run must not block its own rerun).
    """

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / ".lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and not _stale(owner):
                    raise UserError(f"{self.path.parent} is in use by another run (pid {owner.get('pid')} on "
                                    f"{owner.get('host')}, started {owner.get('started')}); wait for it to "
                                    "finish or choose another output_dir") from None
                self.path.unlink(missing_ok=True)  # a dead process's lock: take it over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(me, handle)
            self.held = True
            return
        raise UserError(f"could not take the lock {self.path}; remove it if no run is using the folder")

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # unreadable (a write cut short): treat as stale
        return owner if isinstance(owner, dict) else None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _stale(owner: dict[str, Any]) -> bool:
    """A lock of this host whose process no longer runs (another host's lock is trusted)."""
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False
    return False
