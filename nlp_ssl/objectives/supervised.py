"""Supervised fine-tuning objectives: sequence classification (GLUE) and token classification (NER).

Both keep what evaluation needs in :class:`StepOutput.predictions` / ``references`` so the engine can gather
them from every process and hand the whole eval set to :meth:`compute_metrics` (F1, Matthews correlation
and entity-level seqeval scores are not means of per-batch values). The first eval split is the
*selection split*: the engine's ``metric_for_best_model`` names one of its metrics and exports the weights
of the best evaluation.

Eval batches may hold several splits at once (MNLI matched + mismatched, validation + test): each example
carries a ``split_id`` and metrics are reported per split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nlp_ssl.data.task_data import IGNORE_INDEX
from nlp_ssl.eval.metrics import compute_metric, seqeval_metric
from nlp_ssl.objectives.base import Objective, StepOutput, model_state



# --- losses as pure functions -------------------------------------------------------------------------


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss of a sequence classifier, as BERT fine-tuning defines it (Devlin et al., 2019, sec. 4.1).

    Args:
        logits: ``[B, C]`` class scores, or ``[B, 1]`` for a regression task (STS-B).
        labels: ``[B]`` class ids (int64), or ``[B]`` real targets for regression.

    Returns:
        Scalar: cross-entropy ``mean_b -log softmax(logits_b)[y_b]`` for classification, mean squared error
        ``mean_b (logits_b - y_b)^2`` for regression (what transformers' ``*ForSequenceClassification``
        compute for ``num_labels == 1``). Computed in fp32 so mixed precision does not change the loss.
    """
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over labelled tokens.

    Args:
        logits: ``[B, T, C]``.
        labels: ``[B, T]`` tag ids; ``-100`` marks positions without a label (special tokens, padding and,
            by default, the non-first sub-tokens of each word).

    Returns:
        ``(loss, count)``: the mean over the ``count`` labelled positions (zero, still attached to the graph,
        when there are none), and ``count`` (a 0-d tensor: no device sync) so the engine weights micro-batches
        by tokens, not by sentences.
    """
    count = (labels != IGNORE_INDEX).sum()
    total = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten().long(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total / count.clamp(min=1), count


# --- evaluation splits --------------------------------------------------------------------------------


def split_prefix(names: Sequence[str], index: int) -> str:
    """Metric-name prefix of eval split ``index``: empty with one split, else ``matched/``, ``test/``...

    ``validation_matched`` becomes ``matched/``: the GLUE split names carry the word validation twice over.
    """
    if len(names) == 1:
        return ""
    name = names[index]
    return (name[len("validation_"):] if name.startswith("validation_") else name) + "/"


class _FineTuneObjective(Objective):
    """What both fine-tuning objectives share: the model and tokenizer, and the eval splits.

    Best-on-dev selection is the engine's (``metric_for_best_model``): it loads the best evaluation's weights
    back before :meth:`export`.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, eval_splits: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.eval_splits = list(eval_splits)

    def export(self, output_dir: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        self.model.save_pretrained(output_dir, state_dict=model_state(state_dict))
        self.tokenizer.save_pretrained(output_dir)


# --- sequence classification --------------------------------------------------------------------------


class SequenceClassificationObjective(_FineTuneObjective):
    """Fine-tune a ``*ForSequenceClassification`` model; metrics from :mod:`nlp_ssl.eval.metrics`.

    Batch: ``{"input_ids": [B, T], "attention_mask": [B, T], ("token_type_ids": [B, T]), "labels": [B],
    "split_id": [B]}``; ``split_id`` indexes ``eval_splits`` and is only needed in eval batches.

    Args:
        model: the classifier (``num_labels`` outputs; 1 for regression).
        tokenizer: saved next to the model on export.
        metric: metric family of the task (``accuracy``, ``f1``, ``matthews_correlation``,
            ``pearson_spearman``).
        eval_splits: names of the splits in the eval set, the selection split first.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, metric: str,
                 eval_splits: Sequence[str]) -> None:
        super().__init__(model, tokenizer, eval_splits)
        self.metric = metric
        self.regression = metric == "pearson_spearman"

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[StepOutput, torch.Tensor]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        logits = self.model(**inputs).logits  # [B, C]
        labels = batch["labels"]
        loss = sequence_classification_loss(logits, labels)
        metrics = {}
        if not self.regression:
            metrics["accuracy"] = (logits.argmax(-1) == labels).float().mean().detach()
        out = StepOutput(loss=loss, num_items=labels.shape[0], metrics=metrics,
                         num_inputs=batch["attention_mask"].sum())
        return out, logits

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(batch)[0]

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out, logits = self._step(batch)
        out.predictions = logits.detach().float()  # [B, C]: kept whole so any metric can be derived later
        label_dtype = torch.float32 if self.regression else torch.long
        split_id = batch.get("split_id", torch.zeros_like(batch["labels"]))
        out.references = torch.stack([batch["labels"].to(label_dtype), split_id.to(label_dtype)], dim=1)  # [B, 2]
        return out

    def compute_metrics(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        """Per-split task metrics from gathered ``predictions`` ``[N, C]`` and ``references`` ``[N, 2]``.

        ``references[:, 0]`` is the gold label, ``references[:, 1]`` the split id.
        """
        result: dict[str, float] = {}
        scores = predictions.squeeze(-1) if self.regression else predictions.argmax(-1)
        for index, _ in enumerate(self.eval_splits):
            rows = references[:, 1].long() == index
            if not bool(rows.any()):
                continue
            gold = references[rows, 0]
            pred = scores[rows]
            values = compute_metric(self.metric, pred.numpy(), (gold if self.regression else gold.long()).numpy())
            prefix = split_prefix(self.eval_splits, index)
            result.update({f"{prefix}{k}": v for k, v in values.items()})
        return result

# --- token classification -----------------------------------------------------------------------------


class TokenClassificationObjective(_FineTuneObjective):
    """Fine-tune a ``*ForTokenClassification`` model (NER); entity-level scores with seqeval.

    Batch: ``{"input_ids": [B, T], "attention_mask": [B, T], ("token_type_ids": [B, T]), "labels": [B, T],
    "sentence_id": [B], "split_id": [B]}``. ``labels`` is ``-100`` except at the positions that carry a word's
    tag (the first sub-token of each word, see :func:`nlp_ssl.data.conll.align_labels_with_tokens`);
    ``sentence_id`` (unique in the eval set) and ``split_id`` are only needed in eval batches.

    Args:
        model: the token classifier, ``len(label_names)`` outputs.
        tokenizer: saved next to the model on export.
        label_names: tag id -> IOB2 tag (``O``, ``B-PER``...).
        eval_splits: names of the splits in the eval set, the selection split first.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, label_names: Sequence[str],
                 eval_splits: Sequence[str]) -> None:
        super().__init__(model, tokenizer, eval_splits)
        self.label_names = list(label_names)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[StepOutput, torch.Tensor]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        logits = self.model(**inputs).logits  # [B, T, C]
        labels = batch["labels"]
        loss, count = token_classification_loss(logits, labels)
        correct = ((logits.argmax(-1) == labels) & (labels != IGNORE_INDEX)).sum()
        metrics = {"accuracy": (correct / count.clamp(min=1)).float().detach()}
        return StepOutput(loss=loss, num_items=count, metrics=metrics,
                          num_inputs=batch["attention_mask"].sum()), logits

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(batch)[0]

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out, logits = self._step(batch)
        labels = batch["labels"]
        valid = labels != IGNORE_INDEX  # [B, T]
        # Only labelled positions are kept: sequences differ in length from batch to batch, so a [B, T] tensor
        # could not be concatenated over the eval set. Row-major order keeps each word sequence in order.
        sentence = batch["sentence_id"].unsqueeze(1).expand_as(labels)[valid]
        split = batch.get("split_id", torch.zeros_like(batch["sentence_id"])).unsqueeze(1).expand_as(labels)[valid]
        out.predictions = logits.argmax(-1)[valid]  # [N]
        out.references = torch.stack([labels[valid], sentence, split], dim=1)  # [N, 3]
        return out

    def compute_metrics(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        """seqeval scores per split from word-level ``predictions`` ``[N]`` and ``references`` ``[N, 3]``.

        ``references`` columns: gold tag id, sentence id, split id. Returns ``overall_precision``,
        ``overall_recall``, ``overall_f1``, ``overall_accuracy`` and ``<TYPE>/precision|recall|f1|number``,
        prefixed by the split when there are several.
        """
        result: dict[str, float] = {}
        for index, _ in enumerate(self.eval_splits):
            rows = references[:, 2] == index
            if not bool(rows.any()):
                continue
            gold_seqs, pred_seqs = self._sequences(predictions[rows], references[rows, 0], references[rows, 1])
            scores = seqeval_metric(pred_seqs, gold_seqs)
            prefix = split_prefix(self.eval_splits, index)
            for key, value in scores.items():
                if isinstance(value, dict):
                    result.update({f"{prefix}{key}/{name}": float(v) for name, v in value.items()})
                else:
                    result[f"{prefix}{key}"] = float(value)
        return result

    def _sequences(self, pred: torch.Tensor, gold: torch.Tensor, sentence: torch.Tensor
                   ) -> tuple[list[list[str]], list[list[str]]]:
        """Regroup flat word tags into one tag sequence per sentence, in word order."""
        order = torch.argsort(sentence, stable=True)  # stable: words of a sentence keep their order
        sentence, pred, gold = sentence[order], pred[order], gold[order]
        _, counts = torch.unique_consecutive(sentence, return_counts=True)
        names = self.label_names
        gold_seqs, pred_seqs = [], []
        for g, p in zip(gold.split(counts.tolist()), pred.split(counts.tolist())):
            gold_seqs.append([names[i] for i in g.tolist()])
            pred_seqs.append([names[i] for i in p.tolist()])
        return gold_seqs, pred_seqs
