"""Read what a run folder holds: ``metrics.jsonl``, ``config.yaml`` and the export in ``final/``.

A run folder is any folder with a ``metrics.jsonl`` (the engine's contract, see
:mod:`nlp_ssl.engine.run_dir`). A fine-tuning output folder holds one run per seed (``seed_<s>/``, and
``<task>/seed_<s>/`` for ``task=all``); naming it reports all of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlp_ssl.errors import UserError

METRICS_FILE = "metrics.jsonl"


@dataclass
class Run:
    """One run's logged curves and exported results.

    Attributes:
        label: short unique name used in legends and tables.
        records: ``metrics.jsonl`` events in file order, a repeated event (same step and keys) kept once.
        eval_results: ``final/eval_results.json`` (``{metric: value}``), empty without an export.
        intrinsic: ``final/intrinsic.json`` of word vectors, else ``None``.
        images: every PNG under ``final/`` (e.g. ``final/plots/*.png``), sorted.
    """

    label: str
    folder: Path
    records: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    final: Path | None = None
    eval_results: dict[str, Any] = field(default_factory=dict)
    intrinsic: dict[str, Any] | None = None
    trainer_state: dict[str, Any] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)

    def keys(self) -> set[str]:
        return {k for r in self.records for k, v in r.items() if k != "step" and _is_number(v)}

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(steps, values)`` of ``key``, in logging order, finite values only."""
        steps, values = [], []
        for record in self.records:
            value = record.get(key)
            if _is_number(value) and math.isfinite(float(value)) and _is_number(record.get("step")):
                steps.append(float(record["step"]))
                values.append(float(value))
        return steps, values

    def last(self, key: str) -> float | None:
        _, values = self.series(key)
        return values[-1] if values else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """Parse ``metrics.jsonl``; a line cut short by a kill is skipped, an exact repeat is kept once."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        key = json.dumps(record, sort_keys=True)
        if key not in seen:
            seen.add(key)
            records.append(record)
    return records


def load_run(folder: Path, label: str | None = None) -> Run:
    """Read one run folder (it must hold ``metrics.jsonl``)."""
    folder = Path(folder)
    metrics = folder / METRICS_FILE
    if not metrics.is_file():
        raise UserError(f"{folder} is not a run folder (no {METRICS_FILE}); pass a run's output_dir")
    records = read_records(metrics)
    config = {}
    if (folder / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            config = {}
    final = folder / "final" if (folder / "final").is_dir() else None
    run = Run(label or folder.name, folder, records, config, final)
    if final is not None:
        results = _read_json(final / "eval_results.json")
        run.eval_results = results if isinstance(results, dict) else {}
        intrinsic = _read_json(final / "intrinsic.json")
        run.intrinsic = intrinsic if isinstance(intrinsic, dict) else None
        state = _read_json(final / "trainer_state.json")
        run.trainer_state = state if isinstance(state, dict) else {}
        run.images = sorted(p for p in final.rglob("*.png") if p.is_file())
    return run


def _run_folders(path: Path) -> list[Path]:
    if (path / METRICS_FILE).is_file():
        return [path]
    # A fine-tuning output folder: one run per seed, per task for task=all.
    found = sorted(p.parent for p in path.glob(f"seed_*/{METRICS_FILE}"))
    found += sorted(p.parent for p in path.glob(f"*/seed_*/{METRICS_FILE}"))
    return found


def discover_runs(paths: list[Path]) -> list[Run]:
    """Load every run named by ``paths``; labels are made unique by adding parent folder names."""
    folders: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"no run folder at {path}; pass a run's output_dir (the folder holding {METRICS_FILE})")
        found = _run_folders(path)
        if not found:
            raise UserError(f"{path} is not a run folder (no {METRICS_FILE}); pass a run's output_dir")
        folders += [f for f in found if f.resolve() not in {g.resolve() for g in folders}]
    labels = _unique_labels(folders)
    return [load_run(folder, label) for folder, label in zip(folders, labels)]


def _unique_labels(folders: list[Path]) -> list[str]:
    depth = 1
    while True:
        labels = ["/".join(f.resolve().parts[-depth:]) for f in folders]
        if len(set(labels)) == len(labels) or depth >= max(len(f.resolve().parts) for f in folders):
            return labels
        depth += 1
