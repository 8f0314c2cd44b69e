"""Best-model selection (``metric_for_best_model``): keep the weights of the best evaluation so far.

Kept by the engine on every process alike (evaluation results are reduced over processes, so every process
sees the same score), saved with each checkpoint, and loaded back into the model before the export, so
``final/`` holds the selected weights and ``eval_results.json`` the evaluation that selected them.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def metric_key(name: str) -> str:
    """``accuracy``, ``eval_accuracy`` or ``eval/accuracy`` -> ``eval/accuracy`` (the engine's log key)."""
    if name.startswith("eval/"):
        return name
    if name.startswith("eval_"):
        name = name[len("eval_"):]
    return f"eval/{name}"


class BestModel:
    """The best evaluation so far by one metric, and a CPU copy of the weights that produced it.

    Args:
        metric: a key of the evaluation results (``eval/`` is prepended when missing).
        greater_is_better: None decides as ``TrainingArguments`` does: lower is better for a loss.
    """

    def __init__(self, metric: str, greater_is_better: bool | None = None) -> None:
        self.metric = metric_key(metric)
        self.greater_is_better = (not self.metric.endswith("loss")) if greater_is_better is None else greater_is_better
        self.score: float | None = None
        self.step: int | None = None
        self.metrics: dict[str, float] = {}
        self.weights: dict[str, torch.Tensor] | None = None

    def is_better(self, score: float) -> bool:
        if not math.isfinite(score):
            return self.weights is None  # a non-finite first score still beats nothing
        if self.score is None or not math.isfinite(self.score):
            return True
        # Ties keep the earlier (shorter-trained) model.
        return score > self.score if self.greater_is_better else score < self.score

    def update(self, step: int, metrics: dict[str, float], state_dict: dict[str, torch.Tensor]) -> bool:
        """Record ``metrics`` and copy ``state_dict`` if ``metrics[self.metric]`` is the best so far.

        Raises:
            KeyError: the evaluation has no such metric (the message lists the ones it has).
        """
        if self.metric not in metrics:
            known = ", ".join(sorted(k for k in metrics if k.startswith("eval/")))
            raise KeyError(f"metric_for_best_model '{self.metric}' is not among the evaluation results ({known})")
        score = float(metrics[self.metric])
        if not self.is_better(score):
            return False
        self.score, self.step = score, step
        self.metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
        return True

    def state_tree(self) -> dict[str, Any]:
        return {"metric": self.metric, "greater_is_better": self.greater_is_better, "score": self.score,
                "step": self.step, "metrics": self.metrics, "weights": self.weights or {}}

    def load_state_tree(self, tree: dict[str, Any]) -> None:
        self.score, self.step = tree.get("score"), tree.get("step")
        self.metrics = dict(tree.get("metrics") or {})
        self.weights = dict(tree.get("weights") or {}) or None
