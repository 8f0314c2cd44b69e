"""Typed configs: YAML + overrides, unknown keys, type coercion, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import assert_user_error, run_entry
from nlp_ssl.config import TrainingConfig, load_config
from nlp_ssl.errors import UserError
from nlp_ssl.pipelines.language_model import CausalLMConfig, MaskedLMConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_dotted_overrides(tmp_path):
    path = write(tmp_path, "max_steps: 7\nlearning_rate: 2e-5\nmodel:\n  hidden_size: 64\n")
    cfg = load_config(MaskedLMConfig, path, ["model.num_attention_heads=8", "data.corpus=lee", "report_to=[]"])
    assert cfg.max_steps == 7
    # YAML 1.1 reads 2e-5 as a string; the float field coerces it.
    assert cfg.learning_rate == pytest.approx(2e-5) and isinstance(cfg.learning_rate, float)
    assert cfg.model.hidden_size == 64 and cfg.model.num_attention_heads == 8
    assert cfg.data.corpus == "lee" and cfg.report_to == []


def test_unknown_key_suggests_the_close_one(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'model.hiden_size'.*did you mean 'model.hidden_size'"):
        load_config(MaskedLMConfig, write(tmp_path, "model:\n  hiden_size: 3\n"))


@pytest.mark.parametrize("text, message", [
    ("max_steps: many\n", "'max_steps' must be an integer"),
    ("max_steps: 2.5\n", "'max_steps' must be an integer"),
    ("learning_rate: fast\n", "'learning_rate' must be a number"),
    ("overwrite_output_dir: maybe\n", "must be true or false"),
    ("mixed_precision: fp8\n", "'mixed_precision' must be one of"),
    ("data: ptb\n", "section 'data' must be a mapping"),
    ("max_steps: 0\n", "'max_steps' must be >= 1"),
    ("model:\n  hidden_size: 30\n  num_attention_heads: 4\n", "divisible"),
    ("mlm:\n  mask_replace_prob: 0.9\n  random_replace_prob: 0.2\n", "sum to <= 1"),
    ("- a\n- b\n", "must hold a mapping"),
    ("max_steps: [\n", "not valid YAML"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(MaskedLMConfig, write(tmp_path, text))


def test_bad_override_form_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        load_config(TrainingConfig, None, ["max_steps"])
    with pytest.raises(UserError, match="config file not found"):
        load_config(TrainingConfig, tmp_path / "nope.yaml")


def test_causal_config_has_generation_section():
    cfg = load_config(CausalLMConfig, None, ["generation.max_new_tokens=5"])
    assert cfg.generation.max_new_tokens == 5


def test_entry_point_reports_config_error_in_one_line(tmp_path):
    result = run_entry(["recipes/mlm.py", "--config", "recipes/configs/mlm/debug.yaml",
                        f"output_dir={tmp_path / 'out'}", "model.hidden_sise=8"])
    assert_user_error(result, "model.hidden_sise", "did you mean 'model.hidden_size'")
    assert not (tmp_path / "out").exists()


def test_every_shipped_config_validates():
    result = run_entry(["-m", "nlp_ssl.cli", "validate"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.count("ok ") >= 4
