"""Training curves of one or several runs, overlaid, as PNG images (matplotlib's Agg renderer).

Figures are built with :class:`matplotlib.figure.Figure` rather than ``pyplot``: no global figure state and
no GUI backend, so reports render on headless machines and from worker threads alike.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nlp_ssl.report.runs import Run

DPI = 110
_THROUGHPUT = re.compile(r"^train/(\w+)_per_sec$")
# Keys drawn in the headline figures or not worth a curve.
_HEADLINE = {"train/loss", "eval/loss", "train/lr", "train/epoch", "eval/items", "step"}


@dataclass
class Plot:
    """A rendered figure: ``slug`` names its file in the markdown twin."""

    slug: str
    title: str
    caption: str
    png: bytes


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _colours(runs: list[Run]) -> dict[str, str]:
    cycle = [f"C{i}" for i in range(10)]
    return {run.label: cycle[i % len(cycle)] for i, run in enumerate(runs)}


def _style(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def loss_plot(runs: list[Run]) -> Plot | None:
    """Train loss (lines) and held-out loss (dashed, dots) per run; ``None`` when no run logged a loss."""
    colours = _colours(runs)
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    drawn = False
    for run in runs:
        for key, style in (("train/loss", {"linestyle": "-"}), ("eval/loss", {"linestyle": "--", "marker": "o"}),
                           ("train/loss_sum", {"linestyle": ":", "marker": "s"})):
            steps, values = run.series(key)
            if steps:
                ax.plot(steps, values, color=colours[run.label], label=f"{run.label} {key}", **style)
                drawn = True
    if not drawn:
        return None
    _style(ax, "optimizer step", "loss")
    ax.set_title("Loss: train (solid) and held-out (dashed)")
    ax.legend(fontsize="small")
    return Plot("loss", "Loss", "Training loss per logging window and held-out loss at each evaluation.", _png(fig))


def lr_plot(runs: list[Run]) -> Plot | None:
    colours = _colours(runs)
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    drawn = False
    for run in runs:
        steps, values = run.series("train/lr")
        if steps:
            ax.plot(steps, values, color=colours[run.label], label=run.label)
            drawn = True
    if not drawn:
        return None
    _style(ax, "optimizer step", "learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_title("Learning rate")
    ax.legend(fontsize="small")
    return Plot("learning_rate", "Learning rate", "Learning rate at each logged step (warmup and decay).", _png(fig))


def throughput_plot(runs: list[Run]) -> Plot | None:
    """One panel per throughput unit (tokens/s, words/s, images/s ...) with every run that logged it."""
    units = sorted({m.group(1) for run in runs for key in run.keys() if (m := _THROUGHPUT.match(key))})
    if not units:
        return None
    colours = _colours(runs)
    fig = Figure(figsize=(7.5, 3.2 * len(units)))
    for i, unit in enumerate(units):
        ax = fig.add_subplot(len(units), 1, i + 1)
        for run in runs:
            steps, values = run.series(f"train/{unit}_per_sec")
            if steps:
                ax.plot(steps, values, color=colours[run.label], label=run.label, marker=".")
        _style(ax, "optimizer step", f"{unit} / s")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    fig.suptitle("Throughput")
    fig.tight_layout()
    return Plot("throughput", "Throughput", "Training throughput per logging window (" +
                ", ".join(f"{u}/s" for u in units) + ").", _png(fig))


def other_metric_plots(runs: list[Run]) -> Plot | None:
    """Small panels for every other logged metric (accuracy, perplexity, grad norm, MFU ...)."""
    keys = sorted({k for run in runs for k in run.keys()
                   if k not in _HEADLINE and not _THROUGHPUT.match(k) and len(run.series(k)[0]) >= 1})
    if not keys:
        return None
    colours = _colours(runs)
    cols = 2 if len(keys) > 1 else 1
    rows = (len(keys) + cols - 1) // cols
    fig = Figure(figsize=(7.5, 2.6 * rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        for run in runs:
            steps, values = run.series(key)
            if steps:
                ax.plot(steps, values, color=colours[run.label], label=run.label, marker="." if len(steps) < 30 else None)
        ax.set_title(key, fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize="small")
    fig.supxlabel("optimizer step")
    fig.tight_layout()
    if len(runs) > 1:
        # One legend for all panels; a run may be missing from the first panel, so build the entries here.
        handles = [Line2D([], [], color=colours[run.label], label=run.label) for run in runs]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(runs), 4), fontsize="small",
                   bbox_to_anchor=(0.5, 1.0))
    return Plot("other_metrics", "Other logged metrics", "Every further metric in metrics.jsonl, one panel each.",
                _png(fig))


def run_plots(runs: list[Run]) -> list[Plot]:
    """Every curve figure that has data, in report order."""
    return [p for p in (loss_plot(runs), lr_plot(runs), throughput_plot(runs), other_metric_plots(runs)) if p]
