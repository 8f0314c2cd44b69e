"""Figures for intrinsic evaluation: 2-D projections of word vectors and per-section analogy accuracy.

matplotlib runs with the non-interactive Agg backend so the figures render on headless machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from gensim.models import KeyedVectors

from nlp_ssl.errors import UserError

__all__ = ["plot_projection", "plot_analogy_categories", "COUNTRY_CAPITALS", "DEFAULT_WORDS"]

# Country -> capital pairs in the spirit of the PCA figure of Mikolov et al. (2013), "Distributed
# Representations of Words and Phrases and their Compositionality", Fig. 2.
COUNTRY_CAPITALS: tuple[tuple[str, str], ...] = (
    ("china", "beijing"),
    ("russia", "moscow"),
    ("japan", "tokyo"),
    ("turkey", "ankara"),
    ("poland", "warsaw"),
    ("germany", "berlin"),
    ("france", "paris"),
    ("italy", "rome"),
    ("greece", "athens"),
    ("spain", "madrid"),
    ("portugal", "lisbon"),
)
DEFAULT_WORDS: tuple[str, ...] = tuple(w for pair in COUNTRY_CAPITALS for w in pair)
DPI = 150


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and in tests)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _row(kv: KeyedVectors, word: str) -> int | None:
    """Row of ``word``: exact key, else its lower-case form (uncased vocabularies)."""
    for key in (word, word.lower()):
        if key in kv.key_to_index:
            return int(kv.key_to_index[key])
    return None


def plot_projection(
    kv: KeyedVectors,
    words: Sequence[str] | None,
    path: str | Path,
    method: str = "pca",
    title: str | None = None,
) -> dict[str, Any]:
    """Scatter the vectors of ``words`` in 2-D (PCA or t-SNE) with word labels, saved as a PNG.

    With PCA, country -> capital pairs that are both plotted are joined by a line, as in Mikolov et al. 2013
    (a consistent direction means the relation is linear in the space). t-SNE distances between clusters are
    not meaningful, so no lines are drawn there; its perplexity is capped below the number of points.

    Args:
        kv: word vectors, ``kv.vectors`` of shape ``(vocab, dim)``.
        words: words to plot; None uses :data:`DEFAULT_WORDS` (countries and capitals).
        path: PNG file to write (parent folders are created).
        method: ``"pca"`` or ``"tsne"``.
        title: figure title (default names the method).

    Returns:
        dict with ``path``, ``method``, ``plotted`` (words drawn), ``skipped`` (OOV words) and, for t-SNE,
        ``perplexity``; for PCA ``explained_variance`` of the two components.

    Raises:
        UserError: unknown method, or fewer in-vocabulary words than the method needs.
    """
    method = method.lower()
    if method not in ("pca", "tsne"):
        raise UserError(f"unknown projection method {method!r}; use 'pca' or 'tsne'")
    words = list(DEFAULT_WORDS if words is None else words)
    plotted: list[str] = []
    rows: list[int] = []
    skipped: list[str] = []
    for w in dict.fromkeys(words):  # de-duplicate, keep order
        r = _row(kv, w)
        if r is None:
            skipped.append(w)
        else:
            plotted.append(w)
            rows.append(r)
    needed = 2 if method == "pca" else 3
    if len(plotted) < needed:
        raise UserError(
            f"only {len(plotted)} of {len(words)} words are in the vocabulary, {method} needs {needed}; "
            "pass other words"
        )
    x = np.asarray(kv.vectors[rows], dtype=np.float64)  # (n, dim)
    # Unit-normalise so the picture reflects cosine geometry, the one the evaluation uses.
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    info: dict[str, Any] = {"path": str(path), "method": method, "plotted": plotted, "skipped": skipped}
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=0)
        xy = pca.fit_transform(x)
        info["explained_variance"] = [float(v) for v in pca.explained_variance_ratio_]
    else:
        from sklearn.manifold import TSNE

        # sklearn requires perplexity < n_samples; a third of the points keeps neighbourhoods local for
        # small word lists while the usual 30 applies to large ones.
        perplexity = float(min(30.0, max(1.0, (len(plotted) - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=0)
        xy = tsne.fit_transform(x)
        info["perplexity"] = perplexity

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.5))
    if method == "pca":
        where = {w: i for i, w in enumerate(plotted)}
        for country, capital in COUNTRY_CAPITALS:
            i, j = where.get(country), where.get(capital)
            if i is None or j is None:
                # Also accept capitalised input lists ("China", "Beijing").
                i, j = where.get(country.title(), i), where.get(capital.title(), j)
            if i is not None and j is not None:
                ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="0.6", lw=0.9, ls="--", zorder=1)
    ax.scatter(xy[:, 0], xy[:, 1], s=28, color="tab:blue", zorder=2)
    for (px, py), w in zip(xy, plotted):
        ax.annotate(w, (px, py), xytext=(4, 3), textcoords="offset points", fontsize=10, zorder=3)
    label = "PCA" if method == "pca" else f"t-SNE (perplexity {info['perplexity']:g})"
    ax.set_title(title or f"Word vectors, {label}")
    if method == "pca":
        ev = info["explained_variance"]
        ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% variance)")
        ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}% variance)")
    ax.grid(True, alpha=0.25)
    ax.margins(0.12)  # room for labels at the edges
    if skipped:
        shown = ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        fig.text(0.01, 0.01, f"not in vocabulary: {shown}", fontsize=8, color="0.4")
    _save(fig, path)
    plt.close(fig)
    return info


def plot_analogy_categories(results: dict[str, Any], path: str | Path, title: str | None = None) -> dict[str, Any]:
    """Horizontal bars of per-section analogy accuracy for 3CosAdd and 3CosMul, with coverage annotated.

    Args:
        results: an :func:`nlp_ssl.eval.intrinsic.evaluate_analogies` result, or a
            :func:`~nlp_ssl.eval.intrinsic.run_intrinsic` result (its first analogy set is drawn).
        path: PNG file to write.
        title: figure title (default names the set).

    Returns:
        dict with ``path`` and ``sections`` (names drawn, top to bottom).
    """
    if "sections" not in results:
        sets = results.get("analogy") or []
        if not sets:
            raise UserError("no analogy results to plot; run the analogy evaluation first")
        results = sets[0]
    methods = list(results["methods"])
    labels = {"3cosadd": "3CosAdd", "3cosmul": "3CosMul"}
    colours = {"3cosadd": "tab:blue", "3cosmul": "tab:orange"}
    # Summary rows first, then the sections in file order; top to bottom on the figure.
    entries = [("overall", results["overall"])]
    for kind in ("semantic", "syntactic"):
        if results[kind]["total"]:
            entries.append((f"{kind} (all)", results[kind]))
    n_summary = len(entries)
    entries += [(s["section"], s) for s in results["sections"]]

    plt = pyplot()
    n = len(entries)
    height = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.42 * n * max(1, len(methods) / 2)))
    y = np.arange(n)[::-1].astype(float)  # first entry at the top
    for k, m in enumerate(methods):
        acc = [100.0 * (e[m]["accuracy"] or 0.0) for _, e in entries]
        offset = (k - (len(methods) - 1) / 2) * height
        ax.barh(y - offset, acc, height=height * 0.95, color=colours.get(m), label=labels.get(m, m))
        for yy, a, (_, e) in zip(y - offset, acc, entries):
            if not e["covered"]:
                ax.text(0.8, yy, "no coverage", va="center", fontsize=7, color="0.4")
            elif a > 88:  # long bars: label inside, so it never runs into the coverage column
                ax.text(a - 0.8, yy, f"{a:.1f}%", va="center", ha="right", fontsize=7, color="white")
            else:
                ax.text(a + 0.8, yy, f"{a:.1f}%", va="center", fontsize=7)
    # Coverage column just right of the axes: x in axes fraction, y in data units.
    column = ax.get_yaxis_transform()
    ax.text(1.02, y[0] + 0.7, "covered / total", transform=column, fontsize=7.5, color="0.3", va="bottom")
    for yy, (_, e) in zip(y, entries):
        share = f"{100 * e['covered'] / e['total']:.0f}%" if e["total"] else "n/a"
        ax.text(1.02, yy, f"{e['covered']}/{e['total']} ({share})", transform=column, va="center",
                fontsize=7.5, color="0.3")
    ax.set_yticks(y)
    ax.set_yticklabels([name for name, _ in entries], fontsize=8.5)
    if n_summary < n:
        ax.axhline(y[n_summary - 1] - 0.5, color="0.5", lw=0.8)  # summaries above, sections below
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel("accuracy over covered questions (%)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(methods), fontsize=8, frameon=False)
    ax.set_title(title or f"Analogy accuracy by section: {results.get('name', '')}", pad=22)
    ax.grid(True, axis="x", alpha=0.25)
    _save(fig, path)
    plt.close(fig)
    return {"path": str(path), "sections": [name for name, _ in entries]}


def _save(fig: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
