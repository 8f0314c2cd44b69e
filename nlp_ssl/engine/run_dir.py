"""The output-directory contract and what a rerun of the same command does with it.

Layout::

    <output_dir>/config.yaml            the resolved config
    <output_dir>/metrics.jsonl          one JSON object per logged event ({"step": ..., "train/loss": ...})
    <output_dir>/checkpoints/step_<N>/  full training state (accelerate ``save_state`` + our train state)
    <output_dir>/final/                 the exported artifact (a ``save_pretrained`` folder for LMs)

Rerunning a command whose run was interrupted continues from the latest checkpoint; rerunning a finished
run, or a different config into the same folder, is refused rather than overwriting earlier results.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from nlp_ssl.atomic import atomic_write_text
from nlp_ssl.errors import UserError

# Keys a rerun may change without invalidating the checkpoints (e.g. train longer, log more often).
RESUMABLE_KEYS = {
    "output_dir", "max_steps", "max_time_minutes", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
    "report_to", "max_eval_batches", "dataloader_num_workers", "overwrite_output_dir", "per_device_eval_batch_size",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_revision", "peak_flops",
}
_STEP_DIR = re.compile(r"^step_(\d+)$")


class RunDirectory:
    """Inspects and manages ``output_dir`` for one run."""

    def __init__(self, output_dir: str | Path, config: dict[str, Any], overwrite: bool = False) -> None:
        self.root = Path(output_dir)
        self.config = config
        self.overwrite = overwrite
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

    def latest_checkpoint(self) -> Path | None:
        steps = self.checkpoint_steps()
        return self.checkpoints / f"step_{steps[-1]}" if steps else None

    def checkpoint_steps(self) -> list[int]:
        if not self.checkpoints.is_dir():
            return []
        found = []
        for child in self.checkpoints.iterdir():
            match = _STEP_DIR.match(child.name)
            # The engine writes engine_state.json last: a folder without it is not a complete checkpoint.
            if match and (child / "engine_state.json").is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def check(self) -> Path | None:
        """Decide what this run does with an existing ``output_dir``; return the checkpoint to resume from.

        An interrupted run with the same config resumes (even under ``overwrite_output_dir``, so that
        rerunning a killed command never throws its progress away). A finished run with the same config sets
        :attr:`finished` (the runner reports it and exits successfully) unless ``overwrite_output_dir=true``
        asks to train it again. A different config is refused, or, with ``overwrite_output_dir=true``, marked
        to be replaced by :meth:`prepare`.

        Raises:
            UserError: the folder holds a run with a different config, or something that is not a run.
        """
        self.replace = self.finished = False
        if not self.root.exists():
            return None
        problem = self._conflict()
        if problem is None:
            if self._is_finished():
                if self.overwrite:
                    self.replace = True
                    return None
                self.finished = True
                return None
            return self.latest_checkpoint()
        if self.overwrite:
            self.replace = True
            return None
        raise UserError(problem)

    def _conflict(self) -> str | None:
        previous = self._previous_config()
        if previous is not None:
            mine, theirs = _flatten(self.config), _flatten(previous)
            changed = sorted(k for k in mine.keys() | theirs.keys()
                             if mine.get(k) != theirs.get(k) and k.split(".")[0] not in RESUMABLE_KEYS)
            if changed:
                shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
                return (f"{self.root} holds a run with a different config ({shown}); choose another output_dir "
                        "or pass overwrite_output_dir=true to replace it")
        elif any(self.root.iterdir()):
            return (f"{self.root} exists and is not an nlp_ssl run folder; choose another output_dir "
                    "or pass overwrite_output_dir=true to replace it")
        return None

    def _is_finished(self) -> bool:
        done = self.final / "trainer_state.json"
        if not done.is_file():
            return False
        state = json.loads(done.read_text())
        return bool(state.get("complete")) and state.get("step", 0) >= self.config.get("max_steps", 0)

    def _previous_config(self) -> dict[str, Any] | None:
        if not self.config_file.is_file():
            return None
        loaded = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        return loaded if isinstance(loaded, dict) else None

    def prepare(self, resume_step: int | None) -> None:
        """Create the folder (clearing it first if :meth:`check` chose to replace it) and write ``config.yaml``.

        On resume, ``metrics.jsonl`` is cut back to the checkpoint's step so the log reads as one run.
        """
        if self.replace and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, yaml.safe_dump(self.config, sort_keys=False))
        if self.metrics_file.exists():
            keep_until = resume_step or 0
            kept = []
            for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if record.get("step", 0) <= keep_until:
                    kept.append(line)
            atomic_write_text(self.metrics_file, "".join(f"{line}\n" for line in kept))

    def prune_checkpoints(self, keep: int | None) -> None:
        if keep is None:
            return
        for step in self.checkpoint_steps()[:-keep]:
            shutil.rmtree(self.checkpoints / f"step_{step}", ignore_errors=True)


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
