"""scripts/extrinsic_e2e.py: the verdict (pretrained above random init on every column it was evaluated on), the
table (missing fine-tuning cells of a probe-only model, CPU minutes) and the per-step cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "extrinsic_e2e.py"


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("extrinsic_e2e", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(value: float, finetune: bool = True) -> dict[str, float]:
    row = {"bbc_probe_10": value, "bbc_probe_10_std": 0.01, "bbc_probe_all": value, "trec_probe": value,
           "wnut_probe": value}
    if finetune:
        row.update({"bbc_finetune": value, "trec_finetune": value, "wnut_finetune": value})
    return row


def test_check_names_every_column_where_pretrained_is_not_above_random(e2e):
    main = _row(0.8)
    main["wnut_finetune"] = 0.3  # below random's 0.5
    results = [{"name": "main", "row": main}, {"name": "random", "row": _row(0.5)}]
    failures = e2e.check(results)
    assert len(failures) == 1 and failures[0].startswith("WNUT fine-tuned F1: main 0.3000 <= random 0.5000")
    results[0]["row"]["wnut_finetune"] = 0.5  # a tie is not a win
    assert len(e2e.check(results)) == 1
    results[0]["row"]["wnut_finetune"] = 0.51
    assert e2e.check(results) == []
    # The one-hour checkpoint is held to the same bar.
    results.append({"name": "hour", "row": {**_row(0.8), "bbc_finetune": 0.4}})
    assert e2e.check(results) == ["BBC fine-tuned: hour 0.4000 <= random 0.5000"]


def test_check_skips_columns_a_model_was_not_evaluated_on(e2e):
    results = [{"name": "main", "row": _row(0.8, finetune=False)}, {"name": "random", "row": _row(0.5)},
               {"name": "short", "row": _row(0.1)}]  # shown beside main, never checked
    assert e2e.check(results) == []
    results[0]["row"]["trec_probe"] = 0.4
    assert [f.split(":")[0] for f in e2e.check(results)] == ["TREC probe"]


def test_table_leaves_unevaluated_cells_empty_and_shows_cpu(e2e):
    results = [{"name": "reference", "row": _row(0.9, finetune=False), "evaluation_cpu_seconds": 120.0},
               {"name": "main", "row": _row(0.8), "evaluation_cpu_seconds": 600.0}]
    text = e2e.table(results, {"main": {"cpu_seconds": 390.0}})
    ref, main = text.splitlines()[2:]
    assert ref.startswith("| all-MiniLM-L6-v2 (reference) | (not ours) | - | - | - | 90.0 ± 1.0 | 90.0 |")
    assert main.startswith("| small ModernBERT, main job (1,800 steps) | 6 min | 80.0 | 80.0 | 80.0 | 80.0 ± 1.0 |")
    assert ref.endswith("| 2 min |") and main.endswith("| 10 min |")


def test_finetune_grid_cache_is_read_back(e2e, tmp_path):
    # A finished grid point is never rerun: its cached JSON (with its CPU time) is the result.
    path = tmp_path / "finetune" / "main" / "bbc_lr0.001.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"lr": 1e-3, "validation": 0.9, "test": 0.8, "cpu_seconds": 12.0}))
    assert e2e.cached(path, lambda: pytest.fail("recomputed a cached grid point"))["test"] == 0.8
    fresh = e2e.cached(tmp_path / "new.json", lambda: {"lr": 2e-4, "validation": 0.7, "test": 0.6})
    # A computed point records its CPU cost beside the result, in memory and in the cache file.
    written = json.loads((tmp_path / "new.json").read_text())
    assert isinstance(fresh["cpu_seconds"], float) and written["cpu_seconds"] == fresh["cpu_seconds"]
    assert written["test"] == 0.6


def test_seeds_per_task_average_cached_runs_and_bad_items_stop(e2e, tmp_path):
    assert e2e.parse_seeds(["bbc=3", "trec=1"]) == {"bbc": 3, "trec": 1}
    for bad in ("bbc", "sst2=3", "bbc=0", "bbc=x"):
        with pytest.raises(SystemExit, match="--seeds takes TASK=N"):
            e2e.parse_seeds([bad])
    folder = tmp_path / "finetune" / "main"
    folder.mkdir(parents=True)
    # Seed 1 keeps the one-seed file name, so a one-seed grid's cache is reused when seeds are added.
    for stem, val, test in (("bbc_lr0.001", 0.9, 0.8), ("bbc_lr0.001_seed2", 0.7, 0.6), ("bbc_lr0.001_seed3", 0.8, 1.0)):
        (folder / f"{stem}.json").write_text(json.dumps({"lr": 1e-3, "validation": val, "test": test,
                                                         "cpu_seconds": 10.0}))
    point = e2e.grid_point("bbc", "m", "pretrained", 1e-3, folder, False, 3)
    assert point["validation"] == pytest.approx(0.8) and point["test"] == pytest.approx(0.8)
    assert [s["test"] for s in point["per_seed"]] == [0.8, 0.6, 1.0] and point["cpu_seconds"] == 30.0
    assert e2e.grid_point("bbc", "m", "pretrained", 1e-3, folder, False, 1)["test"] == 0.8
