"""Model cards: metadata the Hub indexes (checked with huggingface_hub's own parsing), body, portable commands."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fake_hub import make_mlm_run, ptb_lines


def metadata(card: Path) -> dict:
    return yaml.safe_load(card.read_text().split("---", 2)[1])


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cards") / "mlm-tiny"
    # The command as a user on another machine would have typed it: venv interpreter, absolute paths.
    argv = [sys.executable, str(REPO / "recipes" / "mlm.py"), "--config", str(REPO / "recipes/configs/mlm/debug.yaml"),
            f"output_dir={root}", "model.hidden_size=16"]
    return make_mlm_run(root, command=argv)


# ---------------------------------------------------------------------------------------------- portable commands
def test_portable_command_drops_machine_paths(tmp_path, monkeypatch):
    from nlp_ssl.hub.portable import portable_command

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    venv_script = str(Path(sys.prefix) / "bin" / "nlp-ssl")
    argv = [venv_script, "run", "mlm", "--config", str(project / "configs" / "my.yaml"), f"output_dir={project}/runs/a b",
            "data.corpus=/mnt/scratch/corpus.txt", f"--json={Path.home() / 'results.json'}", "max_steps=10"]
    line = portable_command(argv)
    assert line == ("nlp-ssl run mlm --config configs/my.yaml 'output_dir=runs/a b' data.corpus=.../corpus.txt "
                    "'--json=~/results.json' max_steps=10")
    assert portable_command([sys.executable, "-m", "nlp_ssl.cli", "push", "runs/x/final", "me/x"]) == \
        "python -m nlp_ssl.cli push runs/x/final me/x"
    assert portable_command([str(REPO / "recipes" / "clm.py"), "--config", str(REPO / "recipes/configs/clm/debug.yaml")]) \
        == "python recipes/clm.py --config recipes/configs/clm/debug.yaml"
    assert portable_command([str(REPO / "nlp_ssl" / "cli.py"), "ls"]) == "nlp-ssl ls"
    # Idempotent: a portable command stays as it is.
    assert portable_command(shlex.split(line)) == line


# ---------------------------------------------------------------------------------------------- transformers card
def test_card_metadata_holds_only_scores_and_validates(mlm_run):
    from huggingface_hub import ModelCard

    from nlp_ssl.hub.model_card import check_card, read_card_metrics

    card_path = mlm_run / "final" / "README.md"
    assert check_card(card_path) == []
    meta = metadata(card_path)
    assert meta["library_name"] == "transformers" and meta["license"] == "other"
    assert meta["pipeline_tag"] == "fill-mask" and {"nlp_ssl", "masked-lm"} <= set(meta["tags"])
    assert read_card_metrics(mlm_run / "final") == {"eval/accuracy": 0.0239, "eval/loss": 6.7679,
                                                    "eval/perplexity": 869.46}
    results = ModelCard.load(card_path).data.eval_results
    assert {r.metric_type for r in results} == {"accuracy", "loss", "perplexity"}
    assert {(r.dataset_type, r.dataset_split) for r in results} == {("ptb", "validation")}


def test_card_body_says_what_how_and_at_what_cost(mlm_run):
    text = (mlm_run / "final" / "README.md").read_text()
    body = text.split("---", 2)[2]
    assert "`BertForMaskedLM`" in body and "vocab size 400" in body
    assert "Recipe: `mlm` (`recipes/mlm.py`)" in body
    assert "| eval/items | 586 |" in body  # a count: in the body, not in the model-index
    assert "| optimizer steps | 20 |" in body and "| tokens seen | 10,240 |" in body
    assert "| wall time (training loop) | 0.4 s |" in body and "| hardware | CPU only: " in body
    assert "[data_cards/ptb.md](data_cards/ptb.md)" in body
    assert "```yaml\nmax_steps: 20" in body or "max_steps: 20" in body
    command = next(line for line in body.splitlines() if line.startswith("- Trained with nlp_ssl:"))
    relative = os.path.relpath(mlm_run)
    shown = relative if not relative.startswith("..") else ".../mlm-tiny"  # outside the working directory
    assert command == ("- Trained with nlp_ssl: `python recipes/mlm.py --config recipes/configs/mlm/debug.yaml "
                       f"output_dir={shown} model.hidden_size=16`")
    for secret in (sys.prefix, str(REPO), str(mlm_run.parent), str(Path.home()) + "/"):
        assert secret not in text, secret


# ---------------------------------------------------------------------------------------------- word vectors card
def test_word_vector_card_is_gensim_with_eval_sets_as_datasets(tmp_path):
    from gensim.models import Word2Vec

    from nlp_ssl.hub.model_card import CardInfo, check_card, write_model_card

    model = Word2Vec([line.split() for line in ptb_lines(1000)], vector_size=8, min_count=3, epochs=1, workers=1, seed=0)
    model.wv.save(str(tmp_path / "vectors.kv"))
    metrics = {"wordsim353/spearman": 0.23, "wordsim353/pearson": 0.16, "wordsim353/coverage": 0.28,
               "questions-words/3cosadd/overall_accuracy": 0.01, "questions-words/covered": 719.0,
               "questions-words/total": 19544.0, "questions-words/coverage": 0.0368, "simlex999/spearman_p": 0.2}
    write_model_card(tmp_path, CardInfo(
        model_name="w2v", objective="skip-gram", task_type="feature-extraction", dataset_name="wiki_sample",
        dataset_type="wiki_sample", steps=58, command="nlp-ssl run word2vec --config recipes/configs/word2vec/debug.yaml",
        usage="KeyedVectors.load('vectors.kv')", config_yaml="data:\n  corpus: wiki_sample\n", metrics=metrics,
        dataset_split="train", license="cc-by-sa-3.0"))
    card = tmp_path / "README.md"
    assert check_card(card) == []
    meta = metadata(card)
    assert meta["library_name"] == "gensim" and meta["license"] == "cc-by-sa-3.0"
    index = meta["model-index"][0]["results"]
    scored = {(r["dataset"]["type"], m["name"]) for r in index for m in r["metrics"]}
    assert scored == {("wordsim353", "wordsim353/spearman"), ("wordsim353", "wordsim353/pearson"),
                      ("questions-words", "questions-words/3cosadd/overall_accuracy")}
    body = card.read_text().split("---", 2)[2]
    assert "| questions-words/total | 19,544 |" in body and "| wordsim353/coverage | 0.2800 |" in body
    assert f"{len(model.wv.index_to_key):,} words x 8 dimensions" in body
    assert "data_cards/wiki_sample.md" in body


# ---------------------------------------------------------------------------------------------- the check can fail
@pytest.mark.parametrize("broken, problem", [
    ("model-index:\n- name: x\n  results:\n  - task: {type: fill-mask}\n    metrics:\n    - {type: loss, value: 1.0}\n",
     "does not parse"),
    ("model-index:\n- name: x\n  results:\n  - task: {type: fill-mask}\n    dataset: {name: ptb, type: ptb}\n"
     "    metrics:\n    - {type: loss, value: high}\n", "non-numeric"),
    ("library_name: transformers\n", "no license"),
])
def test_check_card_reports_broken_metadata(tmp_path, broken, problem):
    from nlp_ssl.hub.model_card import check_card

    card = tmp_path / "README.md"
    card.write_text(f"---\n{broken}---\n\n# x\n")
    problems = check_card(card)
    assert problems and any(problem in p for p in problems), problems


def test_push_card_matches_the_roundtrip_of_its_eval_results(mlm_run):
    """eval_results.json, the card's model-index and the body table agree (scores only in the index)."""
    from nlp_ssl.hub.model_card import read_card_metrics, split_metrics

    results = json.loads((mlm_run / "final" / "eval_results.json").read_text())
    scores, others = split_metrics(results)
    assert read_card_metrics(mlm_run / "final") == scores and set(others) == {"eval/items"}


def test_portable_text_leaves_ratios_and_urls_alone():
    from nlp_ssl.hub.portable import portable_text

    text = "masked LM (80%/10%/10% mask/random/keep), see https://hf.co/a/b and /home/me/data/t.txt"
    assert portable_text(text, cwd=Path("/nowhere")) == ("masked LM (80%/10%/10% mask/random/keep), see "
                                                         "https://hf.co/a/b and .../t.txt")
