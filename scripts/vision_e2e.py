"""Reproduce the README's vision table: every pretext on Fashion-MNIST against the same model untrained.

For each config in ``recipes/configs/vision/`` (all but ``debug``) this runs the recipe in a subprocess with
one thread per process (``OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE``: the machine is shared), then evaluates
the randomly initialised version of every distinct architecture with ``nlp-ssl eval vision --init random``
under the same settings, and prints a markdown table: linear probe at 1% / 10% / 100% of the labels, kNN
(100%), k-means NMI, PixelCNN's bits/dim, and the CPU time of each pretraining (the run's CPU time minus its
end-of-run evaluation's; wall time depends on the load, CPU time much less).

    python scripts/vision_e2e.py --runs-dir runs/vision-e2e                 # full evaluation (test split)
    python scripts/vision_e2e.py --max-train-samples 10000                  # the README table (test split)
    python scripts/vision_e2e.py --split validation --quick --only simclr   # choosing settings: never the test split

Runs that finished earlier are reported, not retrained (the recipe recognises them), so the script can be
rerun after an interruption; their CPU times come from the script's record of the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["rotation", "patch_position", "jigsaw", "inpainting", "autoencoder", "denoising_autoencoder", "vae",
           "beta_vae", "pixelcnn", "simclr", "moco"]
QUICK = {"max_train_samples": 10000, "label_fractions": [0.1, 1.0], "repeats": 1}


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` with its output in ``log``; return (CPU seconds, wall seconds). Exit on failure."""
    cpu, wall = _child_cpu(), time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(cmd)}; see {log}")
    return _child_cpu() - cpu, time.perf_counter() - wall


def _eval_overrides(split: str, quick: bool, max_train: int | None) -> list[str]:
    args = [f"evaluation.split={split}"]
    if max_train and not quick:
        args.append(f"evaluation.max_train_samples={max_train}")
    if quick:
        args += [f"evaluation.max_train_samples={QUICK['max_train_samples']}",
                 f"evaluation.label_fractions={QUICK['label_fractions']}", f"evaluation.repeats={QUICK['repeats']}",
                 "evaluation.tsne_points=0", "evaluation.plots=false"]
    return args


def _eval_flags(split: str, quick: bool, max_train: int | None) -> list[str]:
    flags = ["--split", split]
    if max_train and not quick:
        flags += ["--max-train-samples", str(max_train)]
    if quick:
        flags += ["--max-train-samples", str(QUICK["max_train_samples"]), "--repeats", str(QUICK["repeats"]),
                  "--label-fractions", *map(str, QUICK["label_fractions"])]
    return flags


def _architecture(final: Path) -> str:
    """What makes two exports the same untrained model: the saved architecture (weights aside) and the size
    of the images it reads."""
    size = json.loads((final / "vision.json").read_text()).get("image_size")
    if (final / "module.json").is_file():
        return json.dumps([json.loads((final / "module.json").read_text()), size], sort_keys=True)
    config = json.loads((final / "config.json").read_text())
    keep = ("model_type", "num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_size",
            "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size", "image_size")
    return json.dumps([{k: config.get(k) for k in keep}, size], sort_keys=True)


def _arch_name(final: Path) -> str:
    if (final / "module.json").is_file():
        return json.loads((final / "module.json").read_text())["class"]
    return {"resnet": "ResNet", "vit": "ViT"}.get(json.loads((final / "config.json").read_text())["model_type"], "?")


def _row(name: str, result: dict[str, Any], cpu_minutes: float | None) -> dict[str, Any]:
    probes = {round(e["fraction"], 6): e["mean"] for e in result["linear_probe"]}
    knn = {round(e["fraction"], 6): e["mean"] for e in result["knn"]}
    return {"name": name, "probe": probes, "knn": knn.get(1.0, max(knn.values())), "nmi": result["kmeans"]["nmi"],
            "ari": result["kmeans"]["ari"], "bits_per_dim": result.get("bits_per_dim"), "cpu_minutes": cpu_minutes}


def _table(rows: list[dict[str, Any]], fractions: list[float]) -> str:
    head = ["pretext"] + [f"probe {f:.0%}" for f in fractions] + ["kNN 100%", "NMI", "bits/dim", "pretraining CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"]] + [f"{r['probe'].get(round(f, 6), float('nan')):.3f}" for f in fractions]
        cells += [f"{r['knn']:.3f}", f"{r['nmi']:.3f}",
                  f"{r['bits_per_dim']:.3f}" if r["bits_per_dim"] is not None else "",
                  f"{r['cpu_minutes']:.1f} min" if r["cpu_minutes"] is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/vision-e2e", help="where the runs go (default runs/vision-e2e)")
    parser.add_argument("--only", nargs="+", choices=CONFIGS, help="run these configs only")
    parser.add_argument("--split", default="test", choices=["test", "validation"],
                        help="score on the test split (the table) or the held-out validation images (tuning)")
    parser.add_argument("--quick", action="store_true", help="cheaper evaluation (10k probe images, 10%%/100%%)")
    parser.add_argument("--max-train-samples", type=int, metavar="N",
                        help="probe and kNN train on a class-proportional subset of N training images (default: all)")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="extra recipe overrides")
    parser.add_argument("--no-baselines", action="store_true", help="skip the random-init evaluations")
    args = parser.parse_args()

    runs = (REPO / args.runs_dir).resolve() if not Path(args.runs_dir).is_absolute() else Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    record_file = runs / "e2e_record.json"
    record: dict[str, Any] = json.loads(record_file.read_text()) if record_file.is_file() else {}
    rows, finals = [], {}
    for name in args.only or CONFIGS:
        out = runs / name
        cmd = [sys.executable, "recipes/vision.py", "--config", f"recipes/configs/vision/{name}.yaml",
               f"output_dir={out}", *_eval_overrides(args.split, args.quick, args.max_train_samples), *args.override]
        already = (out / "final" / "vision_eval.json").is_file()
        cpu, wall = _run(cmd, runs / f"{name}.log")
        result = json.loads((out / "final" / "vision_eval.json").read_text())
        if not already:  # the CPU time of this run's training: the process's minus its evaluation's
            record[name] = {"cpu_seconds": cpu - result["cpu_seconds"], "process_cpu_seconds": cpu,
                            "wall_seconds": wall, "eval_cpu_seconds": result["cpu_seconds"],
                            "train_wall_seconds": json.loads((out / "final" / "trainer_state.json").read_text())
                            .get("train_seconds")}
            record_file.write_text(json.dumps(record, indent=2) + "\n")
        spent = record.get(name, {}).get("cpu_seconds")
        rows.append(_row(name, result, spent / 60 if spent is not None else None))
        finals[name] = out / "final"
        print(f"{name}: probe {rows[-1]['probe']}, kNN {rows[-1]['knn']:.3f}, NMI {rows[-1]['nmi']:.3f}, "
              f"CPU {rows[-1]['cpu_minutes'] or 0:.1f} min", flush=True)
    fractions = sorted({f for r in rows for f in r["probe"]})
    if not args.no_baselines:
        seen: dict[str, str] = {}
        for name, final in finals.items():
            arch = _architecture(final)
            if arch in seen:
                continue
            label = f"random init ({_arch_name(final)}, as {name})"
            seen[arch] = label
            target = runs / f"random-{name}.json"
            if not target.is_file():
                _run([sys.executable, "-m", "nlp_ssl.eval.vision", str(final), "--init", "random", "--json",
                      str(target), *_eval_flags(args.split, args.quick, args.max_train_samples)], runs / f"random-{name}.log")
            rows.append(_row(label, json.loads(target.read_text()), None))
    table = _table(rows, fractions)
    (runs / f"table_{args.split}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
