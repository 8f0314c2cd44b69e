"""The vision recipe and ``nlp-ssl eval vision`` through their real entry points, on the debug config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel

from nlp_ssl.cli import main as cli_main

from conftest import REPO, assert_user_error, run_entry

DEBUG = "recipes/configs/vision/debug.yaml"


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def test_debug_run_exports_an_evaluated_encoder_and_eval_vision_scores_it(tmp_path, capsys):
    out = tmp_path / "rotation"
    result = run_entry(["recipes/vision.py", "--config", DEBUG, f"output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pretext rotation after 20 steps" in result.stdout and "linear probe" in result.stdout
    final = out / "final"
    encoder = AutoModel.from_pretrained(final)  # the encoder alone: no head in the export
    assert type(encoder).__name__ == "ResNetModel"
    from safetensors.torch import load_file

    assert not any(k.startswith("head") for k in load_file(str(final / "model.safetensors")))
    processor = json.loads((final / "preprocessor_config.json").read_text())
    meta = json.loads((final / "vision.json").read_text())
    assert processor["image_mean"] == meta["mean"] and meta["data"]["images"] == "mnist"
    report = json.loads((final / "vision_eval.json").read_text())
    assert [e["fraction"] for e in report["linear_probe"]] == [0.1, 1.0] and report["plots"] == ["plots/tsne.png"]
    assert (final / "plots" / "tsne.png").stat().st_size > 1000
    metrics = json.loads((final / "eval_results.json").read_text())
    assert {"eval/loss", "eval/accuracy", "test/probe_100pct_accuracy", "test/knn_10pct_accuracy",
            "test/kmeans_nmi", "test/kmeans_ari"} <= set(metrics)
    assert "test/probe_100pct_accuracy" in (final / "README.md").read_text()

    # The same numbers from the command line (same settings), then the untrained baseline of the same model.
    cli = ["eval", "vision", str(final), "--label-fractions", "10%", "1", "--repeats", "2",
           "--max-train-samples", "1000", "--max-eval-samples", "300"]
    assert cli_main([*cli, "--json", str(tmp_path / "again.json")]) == 0
    assert "linear probe" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["linear_probe"] == report["linear_probe"] and again["kmeans"] == report["kmeans"]
    assert cli_main([*cli, "--init", "random", "--json", str(tmp_path / "random.json"),
                     "--plots", str(tmp_path / "random_plots")]) == 0
    baseline = json.loads((tmp_path / "random.json").read_text())
    assert baseline["init"] == "random" and baseline["linear_probe"] != report["linear_probe"]
    assert (tmp_path / "random_plots" / "tsne.png").is_file()
    _assert_one_line_error(capsys, lambda: cli_main([*cli, "--json", str(tmp_path / "again.json")]), "already exists")
    _assert_one_line_error(capsys, lambda: cli_main(["eval", "vision", str(tmp_path)]), "neither a vision export")
    _assert_one_line_error(capsys, lambda: cli_main(["eval", "vision", str(tmp_path / "missing")]), "does not exist")


def _assert_one_line_error(capsys, call, fragment: str) -> None:
    """An entry point called in this process stops with exit status 2 and one ``error:`` line naming ``fragment``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        call()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("pretext, figures", [
    ("vae", ["tsne.png", "reconstructions.png", "interpolations.png", "traversals.png"]),
    ("pixelcnn", ["tsne.png", "pixelcnn_samples.png"]),
])
def test_generative_pretexts_export_their_model_and_figures(tmp_path, pretext, figures):
    out = tmp_path / pretext
    result = run_entry(["recipes/vision.py", "--config", DEBUG, f"output_dir={out}", f"pretext.name={pretext}",
                        "max_steps=4", "save_steps=4", "eval_steps=4"])
    assert result.returncode == 0, result.stderr[-3000:]
    final = out / "final"
    assert (final / "module.json").is_file() and (final / "module.safetensors").is_file()
    assert not (final / "config.json").exists()
    report = json.loads((final / "vision_eval.json").read_text())
    assert sorted(Path(p).name for p in report["plots"]) == sorted(figures)
    if pretext == "pixelcnn":
        metrics = json.loads((final / "eval_results.json").read_text())
        assert 0 < metrics["test/bits_per_dim"] < 8.5 and "eval/bits_per_dim" in metrics


def _grey_images(folder: Path, sizes: list[int], mode: str = "L") -> None:
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        cls = folder / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(cls / f"{i}.png")


def test_bad_input_through_the_recipe_script_is_one_line():
    result = run_entry(["recipes/vision.py", "--config", DEBUG, "output_dir=/nonexistent/never-written",
                        "pretext.name=simclr", "views.saturation=0.8"])
    assert_user_error(result, "views: saturation need RGB images but this image set has 1 channel(s)",
                      "set saturation: 0")


@pytest.mark.parametrize("case, overrides, fragment", [
    ("empty folder", ["data.images={folder}"], "holds no image files"),
    ("mixed sizes", ["data.images={folder}", "data.validation_size=2"], "mixes image sizes"),
    ("grey with colour jitter", ["pretext.name=moco"], "saturation, hue, grayscale_p need RGB images"),
    ("patch grid too large", ["pretext.name=patch_position", "pretext.patch_position.patch=9"],
     "needs 35x35 pixels but the images are 28x28"),
    ("jigsaw grid too large", ["pretext.name=jigsaw", "pretext.jigsaw.tile=9", "pretext.jigsaw.gap=2"],
     "needs 31x31 pixels but the images are 28x28"),
    ("pixelcnn on colour", ["data.images={folder}", "data.validation_size=2", "pretext.name=pixelcnn"],
     "grey images only"),
])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, capsys, case, overrides, fragment):
    """Called in this process (the same entry point as the script, without a new interpreter per case)."""
    from nlp_ssl.registry import recipe_main

    folder = tmp_path / "images"
    folder.mkdir()
    if case == "empty folder":
        (folder / "readme.txt").write_text("no images here")
    elif case == "mixed sizes":
        _grey_images(folder, [16, 16, 20, 20, 16, 20])
    elif case == "pixelcnn on colour":
        _grey_images(folder, [12] * 6, mode="RGB")
    out = tmp_path / "out"
    args = ["--config", str(REPO / DEBUG), f"output_dir={out}", "views.crop_scale=[0.3, 1.0]"]
    if case == "grey with colour jitter":  # the ViewConfig defaults: SimCLR's colour settings
        args = ["--config", str(REPO / DEBUG), f"output_dir={out}"]
        args += ["views.saturation=0.8", "views.hue=0.2", "views.grayscale_p=0.2"]
    _assert_one_line_error(capsys, lambda: recipe_main("vision")([*args, *[o.format(folder=folder) for o in overrides]]),
                           fragment)
    assert not out.exists()


def test_an_image_folder_with_a_resize_trains(tmp_path):
    folder = tmp_path / "images"
    _grey_images(folder, [16, 20] * 30)
    out = tmp_path / "out"
    result = run_entry(["recipes/vision.py", "--config", DEBUG, f"output_dir={out}", f"data.images={folder}",
                        "data.image_size=16", "data.validation_size=10", "max_steps=2", "save_steps=2",
                        "eval_steps=2", "per_device_train_batch_size=8", "evaluation.split=validation",
                        "evaluation.label_fractions=[1.0]", "evaluation.tsne_points=0"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "final" / "vision_eval.json").read_text())
    assert report["eval"]["images"] == 10 and report["train"]["images"] == 50


def _launch(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "accelerate.commands.launch", "--config_file",
                     str(REPO / "recipes/configs/accelerate/cpu_2proc.yaml"), "--main_process_port", "29561"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run(launcher + ["recipes/vision.py", "--config", DEBUG, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_the_global_batch(tmp_path):
    """SimCLR on a ViT (no batch norm): the gathered NT-Xent and the per-example views make two processes
    with 16 images each follow one process with 32, step by step."""
    common = ["pretext.name=simclr", "model.arch=vit", "max_steps=6", "logging_steps=1", "save_steps=6",
              "eval_steps=6", "evaluation.enabled=false"]
    ddp = _launch([*common, f"output_dir={tmp_path / 'ddp'}", "per_device_train_batch_size=16"], processes=2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints" / "step_6").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    single = _launch([*common, f"output_dir={tmp_path / 'single'}", "per_device_train_batch_size=32"])
    assert single.returncode == 0, single.stderr[-3000:]
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "single"), rel=2e-4)


@pytest.mark.slow
def test_a_killed_moco_run_resumes_exactly(tmp_path):
    """kill -9 after a checkpoint, rerun the same command: the same per-step losses (views, queue and momentum
    encoder come back from the checkpoint) and the same exported encoder."""
    common = ["pretext.name=moco", "max_steps=16", "logging_steps=1", "save_steps=6", "eval_steps=8",
              "save_total_limit=null", "evaluation.enabled=false"]
    straight = tmp_path / "straight"
    assert _launch([*common, f"output_dir={straight}"]).returncode == 0
    resumed = tmp_path / "resumed"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "recipes/vision.py", "--config", DEBUG, *common,
                             f"output_dir={resumed}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(30_000):  # poll for the step-6 checkpoint (about 10 minutes at most)
        if (resumed / "checkpoints" / "step_6" / "engine_state.json").is_file():
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before its step-6 checkpoint")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "final").exists(), "the run finished before it could be killed"
    result = _launch([*common, f"output_dir={resumed}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout + result.stderr
    assert _losses(resumed) == _losses(straight) and sorted(_losses(straight)) == list(range(1, 17))
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "final" / "model.safetensors")) for d in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
