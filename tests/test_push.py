"""Pushing to the Hub, end to end against a local server that speaks the Hub's HTTP API (tests/fake_hub.py).

``nlp-ssl push`` runs as a subprocess with ``HF_ENDPOINT`` pointing at the server, so huggingface_hub reads
the endpoint at import exactly as it does for users. The Publisher runs in-process with an ``HfApi`` bound
to the server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO, assert_user_error
from fake_hub import TOKEN, FakeHub, make_mlm_run, ptb_lines, save_tiny_bert, unreachable_url


@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    return make_mlm_run(tmp_path_factory.mktemp("template") / "mlm-tiny")


@pytest.fixture
def run(run_template, tmp_path) -> Path:
    """A private copy of the finished run, so a test may not alter another's files."""
    return Path(shutil.copytree(run_template, tmp_path / "mlm-tiny"))


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def hub_env(endpoint: str, tmp_path: Path, token: str = TOKEN) -> dict[str, str]:
    # HF_HOME in the test folder: no token file or cache of the machine takes part.
    return dict(os.environ, HF_ENDPOINT=endpoint, HF_TOKEN=token, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf_home"),
                HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def push(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlp_ssl.cli", "push", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_token_in(folder: Path, token: str = TOKEN) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), f"token written to {path}"


# ---------------------------------------------------------------------------------------------- nlp-ssl push
def test_push_uploads_the_export_card_and_data_cards_in_one_commit(run, hub, tmp_path):
    from nlp_ssl.hub.model_card import check_card

    result = push(hub_env(hub.url, tmp_path), str(run), "me/tiny-bert")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pushed transformers export" in result.stdout and "me/tiny-bert" in result.stdout
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (commit.repo_id, commit.revision, commit.message) == ("me/tiny-bert", "main", "Upload mlm-tiny with nlp_ssl")
    assert commit.authorization == f"Bearer {TOKEN}"
    # Every authenticated call carried the token from HF_TOKEN; the registry fetch carries none.
    assert {auth for method, path, auth in hub.requests if "agent-harnesses" not in path} == {f"Bearer {TOKEN}"}
    final = run / "final"
    local = {p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file()}
    assert set(commit.files) == local | {"data_cards/ptb.md"}
    for name in local - {"README.md"}:
        assert commit.files[name] == (final / name).read_bytes(), name
    assert commit.files["data_cards/ptb.md"] == (REPO / "data_cards" / "ptb.md").read_bytes()
    card = commit.files["README.md"].decode()
    assert "model='me/tiny-bert'" in card and str(final) not in card and str(tmp_path) not in card
    assert "[data_cards/ptb.md](data_cards/ptb.md)" in card
    (tmp_path / "hub_README.md").write_text(card)
    assert check_card(tmp_path / "hub_README.md") == []
    assert_no_token_in(run)


def test_pushing_again_without_changes_makes_no_commit(run, hub, tmp_path):
    env = hub_env(hub.url, tmp_path)
    first = push(env, str(run / "final"), "me/tiny-bert")
    assert first.returncode == 0, first.stderr[-3000:]
    again = push(env, str(run / "final"), "me/tiny-bert")
    assert again.returncode == 0, again.stderr[-3000:]
    # The pre-upload answer names every file as already there, so huggingface_hub sends no empty commit.
    assert len(hub.commits) == 1
    assert hub.commits[0].oid in again.stdout


@pytest.mark.parametrize("failure", ["unreachable", "refused token", "interrupted"])
def test_failed_push_is_one_line_keeps_files_and_a_rerun_completes(failure, run, hub, tmp_path):
    before = digest(run)
    env = hub_env(hub.url, tmp_path)
    if failure == "unreachable":
        env = hub_env(unreachable_url(), tmp_path)
    elif failure == "refused token":
        hub.refuse_token = True
    else:
        hub.drop_commits = 1
    failed = push(env, str(run), "me/tiny-bert")
    assert_user_error(failed, "push to me/tiny-bert failed", "the local files are intact",
                      "nlp-ssl push")
    assert failed.stdout.strip() == ""
    assert hub.commits == []  # a dropped commit leaves the repository untouched, as on the Hub
    if failure == "interrupted":
        assert hub.dropped == ["me/tiny-bert"]
    if failure == "refused token":
        assert "Invalid credentials" in failed.stderr
    assert digest(run) == before

    hub.refuse_token = False
    rerun = push(hub_env(hub.url, tmp_path), str(run), "me/tiny-bert")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(hub.commits) == 1
    exported = {k.removeprefix("final/") for k in before if k.startswith("final/")}
    assert set(hub.files("me/tiny-bert")) == exported | {"data_cards/ptb.md"}
    assert digest(run) == before
    assert_no_token_in(run)


def test_push_to_a_branch_creates_it(run, hub, tmp_path):
    result = push(hub_env(hub.url, tmp_path), str(run), "me/tiny-bert", "--revision", "step-20", "--private")
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.repos["me/tiny-bert"].private
    assert hub.commits[0].revision == "step-20"
    assert "README.md" in hub.files("me/tiny-bert", "step-20") and hub.files("me/tiny-bert", "main") == {}


def test_push_without_a_namespace_goes_to_the_token_owner(run, hub, tmp_path):
    result = push(hub_env(hub.url, tmp_path), str(run), "tiny-bert")
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.commits[0].repo_id == "tester/tiny-bert"
    assert "model='tester/tiny-bert'" in hub.commits[0].files["README.md"].decode()


# ---------------------------------------------------------------------------------------------- artifact kinds
@pytest.fixture(scope="module")
def word_vectors(tmp_path_factory) -> Path:
    """A word2vec run's final/ as the recipe exports it: gensim vectors trained on PTB, and its card."""
    from gensim.models import Word2Vec

    from nlp_ssl.hub.model_card import CardInfo, write_model_card

    root = tmp_path_factory.mktemp("w2v") / "w2v-tiny"
    final = root / "final"
    final.mkdir(parents=True)
    (root / "config.yaml").write_text(f"output_dir: {root}\ndata:\n  corpus: mixed\n")
    (root / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss_sum": 1.5e4}) + "\n")
    model = Word2Vec([line.split() for line in ptb_lines()], vector_size=16, window=3, min_count=3, epochs=1,
                     workers=1, seed=0)
    model.wv.save(str(final / "vectors.kv"))
    model.wv.save_word2vec_format(str(final / "vectors.bin"), binary=True)
    (final / "eval_results.json").write_text(json.dumps({"wordsim353/spearman": 0.1, "questions-words/covered": 9.0}))
    write_model_card(final, CardInfo(
        model_name="w2v-tiny", objective="word2vec skip-gram", task_type="feature-extraction", dataset_name="mixed",
        dataset_type="mixed", steps=1, command="nlp-ssl run word2vec", usage="KeyedVectors.load('vectors.kv')",
        config_yaml=(root / "config.yaml").read_text(), metrics={"wordsim353/spearman": 0.1,
                                                                 "questions-words/covered": 9.0}))
    return root


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    """A sentence encoder (BERT encoder + tokenizer + pooling file) and a vision encoder (ViT + processor)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    root = tmp_path_factory.mktemp("encoders")
    sentence = root / "sentence"
    save_tiny_bert(sentence, head="encoder")
    (sentence / "sentence_pooling.json").write_text(json.dumps({"pooling": "mean"}))
    (sentence / "README.md").write_text("---\nlibrary_name: transformers\n---\n# sentence encoder\n")
    vision = root / "vision"
    ViTModel(ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)).save_pretrained(vision)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vision)
    (vision / "README.md").write_text("---\nlibrary_name: transformers\n---\n# vision encoder\n")
    return {"sentence": sentence, "vision": vision}


def test_every_artifact_kind_is_recognised(run, word_vectors, encoders):
    from nlp_ssl.hub.push import check_export

    assert check_export(run / "final") == "transformers"
    assert check_export(word_vectors / "final") == "word-vectors"
    assert check_export(encoders["sentence"]) == "sentence-encoder"
    assert check_export(encoders["vision"]) == "vision-encoder"  # no tokenizer needed


def test_word_vectors_push_carries_every_mixed_corpus_card(word_vectors, hub, tmp_path):
    result = push(hub_env(hub.url, tmp_path), str(word_vectors), "me/w2v-tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.commits[0].files
    assert {"vectors.kv", "vectors.bin", "README.md", "eval_results.json"} <= set(files)
    assert {"data_cards/ptb.md", "data_cards/bbc_news.md", "data_cards/shakespeare.md"} <= set(files)
    card = files["README.md"].decode()
    assert "library_name: gensim" in card and "snapshot_download('me/w2v-tiny')" in card


def test_vision_encoder_push(encoders, hub, tmp_path):
    result = push(hub_env(hub.url, tmp_path), str(encoders["vision"]), "me/vit-tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(hub.commits[0].files)


def test_incomplete_or_foreign_folders_are_refused_before_any_request(run, tmp_path, hub):
    (run / "final" / "tokenizer.json").unlink()
    (run / "final" / "tokenizer_config.json").unlink()
    missing = push(hub_env(hub.url, tmp_path), str(run), "me/tiny-bert")
    assert_user_error(missing, "not a complete export", "tokenizer")
    (tmp_path / "empty").mkdir()
    foreign = push(hub_env(hub.url, tmp_path), str(tmp_path / "empty"), "me/x")
    assert_user_error(foreign, "neither a transformers model")
    bad_id = push(hub_env(hub.url, tmp_path), str(run), "me/bad id")
    assert_user_error(bad_id)
    assert not [r for r in hub.requests if "agent-harnesses" not in r[1]]


# ---------------------------------------------------------------------------------------------- HubConfig
def test_hub_config_validates_with_one_line_errors():
    from nlp_ssl.config import from_dict
    from nlp_ssl.errors import UserError
    from nlp_ssl.hub.publish import HubConfig

    assert HubConfig().hub_strategy == "every_save" and HubConfig().push_to_hub is False
    ok = from_dict(HubConfig, {"push_to_hub": "true", "hub_model_id": "me/x", "hub_strategy": "checkpoint"})
    assert (ok.push_to_hub, ok.hub_model_id, ok.hub_strategy) == (True, "me/x", "checkpoint")
    for bad, fragment in [({"hub_strategy": "sometimes"}, "hub_strategy"), ({"hub_model_id": "me/a b"}, "hub_model_id"),
                          ({"hub_revision": "my branch"}, "hub_revision"), ({"hub_token": "x"}, "unknown config key")]:
        with pytest.raises(UserError) as err:
            from_dict(HubConfig, bad)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    assert "token" not in {f.name for f in dataclasses.fields(HubConfig)} - {"hub_model_id"}


# ---------------------------------------------------------------------------------------------- Publisher
class Lines(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def make_publisher(run: Path, hub: FakeHub, strategy: str, monkeypatch, **extra):
    import huggingface_hub.constants as constants
    from huggingface_hub import HfApi

    from nlp_ssl.hub.publish import HubConfig, Publisher

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run with HF_HUB_OFFLINE=1 (conftest)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    lines = Lines()

    def export(folder: Path) -> None:  # what the objective's export writes: the model and tokenizer
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(run / "final" / name, folder / name)

    config = HubConfig(push_to_hub=True, hub_model_id="me/live", hub_strategy=strategy, **extra)
    return Publisher(config, run, export=export, print_fn=lines, api=HfApi(endpoint=hub.url)), lines


def make_checkpoint(run: Path, step: int) -> Path:
    """A checkpoint folder with accelerate's file names (weights, optimizer state, RNG state)."""
    folder = run / "checkpoints" / f"step_{step}"
    folder.mkdir(parents=True)
    shutil.copy(run / "final" / "model.safetensors", folder / "model.safetensors")
    (folder / "optimizer.bin").write_bytes(hashlib.sha256(b"optimizer %d" % step).digest() * 64)
    (folder / "random_states_0.pkl").write_bytes(b"rng %d" % step)
    return folder


def test_publisher_checkpoint_strategy_pushes_model_and_last_checkpoint_then_final(run, hub, monkeypatch):
    publisher, lines = make_publisher(run, hub, "checkpoint", monkeypatch)
    ckpt = make_checkpoint(run, 10)
    publisher.on_checkpoint(ckpt, 10)
    publisher.close()  # wait for the background upload
    assert [c.message for c in hub.commits] == ["Training in progress, step 10"]
    files = hub.commits[0].files
    assert {"config.json", "model.safetensors", "README.md", "data_cards/ptb.md", "last-checkpoint/optimizer.bin",
            "last-checkpoint/model.safetensors", "last-checkpoint/random_states_0.pkl"} <= set(files)
    assert files["last-checkpoint/optimizer.bin"] == (ckpt / "optimizer.bin").read_bytes()
    assert "Training in progress" in files["README.md"].decode()
    assert publisher.on_final(run / "final") is True
    publisher.close()
    assert [c.message for c in hub.commits][-1] == "End of training (step 20)"
    assert "model-index" in hub.files("me/live")["README.md"].decode()
    assert publisher.failures == [] and not any(".hub-upload" in p.name for p in run.iterdir())
    assert lines and lines[-1].startswith("pushed ")
    assert_no_token_in(run)


def test_publisher_skips_a_save_while_an_upload_runs_and_uploads_pruned_checkpoints(run, hub, monkeypatch):
    publisher, lines = make_publisher(run, hub, "all_checkpoints", monkeypatch)
    import fake_hub

    # Hold the first commit on the server: the upload cannot finish before the second save arrives.
    gate = threading.Event()
    original = fake_hub._Handler._commit

    def held_commit(handler, repo_id, revision):
        gate.wait(timeout=60)
        return original(handler, repo_id, revision)

    monkeypatch.setattr(fake_hub._Handler, "_commit", held_commit)
    first = make_checkpoint(run, 10)
    publisher.on_checkpoint(first, 10)
    second = make_checkpoint(run, 20)
    publisher.on_checkpoint(second, 20)  # the step-10 upload is still running: skipped, as transformers does
    shutil.rmtree(first)  # save_total_limit pruning while the upload runs
    gate.set()
    publisher.close()
    assert publisher.skipped_steps == [20] and publisher.pushed_steps == [10]
    assert [c.message for c in hub.commits] == ["Training in progress, step 10"]
    assert "checkpoints/step_10/optimizer.bin" in hub.commits[0].files
    assert lines == []


def test_publisher_failures_are_one_line_and_never_raise(run, hub, monkeypatch):
    publisher, lines = make_publisher(run, hub, "every_save", monkeypatch, hub_revision="dev")
    hub.refuse_token = True
    before = digest(run / "final")
    publisher.on_checkpoint(make_checkpoint(run, 10), 10)
    assert publisher.on_final(run / "final") is False
    publisher.close()
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].startswith("warning: push of step 10 to me/live failed (")
    assert lines[1].startswith("warning: push to me/live failed (") and "Invalid credentials" in lines[1]
    assert "the run's files are intact; finish with: nlp-ssl push " in lines[1] and lines[1].endswith(
        "final me/live --revision dev")
    assert hub.commits == [] and digest(run / "final") == before
    assert_no_token_in(run)


def test_publisher_is_silent_off_the_main_process_and_when_disabled(run, hub, monkeypatch):
    from nlp_ssl.hub.publish import HubConfig, Publisher

    for publisher in (Publisher(HubConfig(push_to_hub=True), run, is_main_process=False),
                      Publisher(HubConfig(push_to_hub=False), run)):
        publisher.on_checkpoint(make_checkpoint(run, 10) if not (run / "checkpoints").exists() else
                                run / "checkpoints" / "step_10", 10)
        assert publisher.on_final(run / "final") is False
        publisher.close()
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------- a recipe
def test_recipe_with_push_to_hub_pushes_its_saves_and_export(hub, tmp_path):
    out = tmp_path / "mlm-push"
    env = hub_env(hub.url, tmp_path)
    result = subprocess.run(
        [sys.executable, "recipes/mlm.py", "--config", "recipes/configs/mlm/debug.yaml", f"output_dir={out}",
         "push_to_hub=true", "hub_model_id=me/mlm-debug", "hub_strategy=checkpoint"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    messages = [c.message for c in hub.commits]
    assert messages[0] == "Training in progress, step 10" and messages[-1] == "End of training (step 20)"
    files = hub.files("me/mlm-debug")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "eval_results.json",
            "data_cards/ptb.md"} <= set(files)
    assert any(name.startswith("last-checkpoint/") for name in files)
    assert files["model.safetensors"] == (out / "final" / "model.safetensors").read_bytes()
    assert_no_token_in(out)


def test_publisher_without_a_token_warns_once_at_the_start(run, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    from nlp_ssl.hub.publish import HubConfig, Publisher

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    lines = Lines()
    Publisher(HubConfig(push_to_hub=True, hub_model_id="me/x"), run, print_fn=lines).close()
    assert len(lines) == 1 and "no Hugging Face token" in lines[0] and "nlp-ssl push " in lines[0]


def test_fine_tuning_pushes_the_selected_model_once(hub, tmp_path):
    """Several seeds, one published model: the task's final/ (the median seed's), not every seed's run."""
    from test_finetune_recipes import GLUE_DEBUG, write_sst2

    data = write_sst2(tmp_path / "glue", n_train=64, n_dev=32)
    model = tmp_path / "tiny"
    save_tiny_bert(model)
    out = tmp_path / "sst2-tiny"
    result = subprocess.run(
        [sys.executable, "recipes/finetune_glue.py", "--config", str(GLUE_DEBUG), f"data_dir={data}", f"model={model}",
         f"output_dir={out}", "seeds=[1,2]", "num_train_epochs=1", "push_to_hub=true", "hub_model_id=me/sst2-tiny"],
        cwd=REPO, env=hub_env(hub.url, tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(hub.commits) == 1 and hub.commits[0].message.startswith("End of training")
    files = hub.files("me/sst2-tiny")
    assert files["model.safetensors"] == (out / "final" / "model.safetensors").read_bytes()
    assert "finetune_result.json" in files
    assert_no_token_in(out)
