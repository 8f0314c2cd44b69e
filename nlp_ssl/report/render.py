"""The report as a list of blocks (headings, tables, images), rendered to HTML and to markdown.

The HTML page is self-contained: each figure is an ``<img>`` with a base64 PNG ``data:`` URI, so the file
can be mailed or attached to an issue. The markdown twin writes the same PNGs next to it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from nlp_ssl.hub.compute import format_duration
from nlp_ssl.hub.data_cards import corpora_of_config
from nlp_ssl.hub.model_card import split_metrics
from nlp_ssl.hub.portable import portable_path
from nlp_ssl.report.figures import run_plots
from nlp_ssl.report.runs import Run


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    slug: str  # file name (without .png) in the markdown twin
    caption: str
    png: bytes
    source: str = ""  # where the image came from, for exported PNGs


Block = Union[Heading, Paragraph, Table, Image]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "figure"


def _summary(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        state = run.trainer_state
        steps = state.get("step", max((r.get("step", 0) for r in run.records), default=0))
        if isinstance(state.get("max_steps"), int) and state.get("max_steps") != steps:
            steps = f"{_fmt(steps)} of {_fmt(state['max_steps'])}"
        seconds = state.get("train_seconds")
        rows.append([
            run.label, portable_path(str(run.folder.resolve())),
            ", ".join(corpora_of_config(run.config)) or "–", _fmt(steps),
            format_duration(float(seconds)) if isinstance(seconds, (int, float)) else "–",
            _fmt(run.last("train/loss")), _fmt(run.last("eval/loss")), _fmt(run.last("eval/perplexity")),
            "yes" if run.final is not None else "no",
        ])
    return Table(["run", "folder", "data", "steps", "wall time", "last train loss", "last eval loss",
                  "last eval perplexity", "exported"], rows)


def _eval_tables(runs: list[Run]) -> list[Block]:
    blocks: list[Block] = []
    with_results = [r for r in runs if r.eval_results]
    if with_results:
        scores = {r.label: split_metrics(r.eval_results) for r in with_results}
        names = list(dict.fromkeys(k for r in with_results for k in scores[r.label][0]))
        names += [k for k in dict.fromkeys(k for r in with_results for k in scores[r.label][1]) if k not in names]
        rows = [[name] + [_fmt(r.eval_results.get(name)) for r in with_results] for name in names]
        blocks += [Paragraph("Final evaluation (`final/eval_results.json`); scores first, then counts and "
                             "coverage."), Table(["metric"] + [r.label for r in with_results], rows)]
    for run in runs:
        if run.intrinsic:
            blocks += _intrinsic_tables(run)
    if not blocks:
        blocks.append(Paragraph("No run has a `final/eval_results.json` yet."))
    return blocks


def _intrinsic_tables(run: Run) -> list[Block]:
    """The headline numbers of ``final/intrinsic.json`` (word-vector similarity and analogies)."""
    intrinsic = run.intrinsic or {}
    blocks: list[Block] = [Paragraph(f"Word vectors of {run.label}: {_fmt(intrinsic.get('vocab_size'))} words x "
                                     f"{_fmt(intrinsic.get('dim'))} dimensions.")]
    similarity = [[s.get("name", "?"), _fmt(s.get("spearman")), _fmt(s.get("pearson")),
                   f"{_fmt(s.get('covered'))} / {_fmt(s.get('pairs'))}"] for s in intrinsic.get("similarity") or []]
    if similarity:
        blocks.append(Table(["word similarity", "Spearman", "Pearson", "pairs covered"], similarity))
    analogy = []
    for a in intrinsic.get("analogy") or []:
        for method in a.get("methods", []):
            cells = [a.get(part, {}).get(method, {}).get("accuracy") for part in ("overall", "semantic", "syntactic")]
            overall = a.get("overall", {})
            analogy.append([a.get("name", "?"), method, *map(_fmt, cells),
                            f"{_fmt(overall.get('covered'))} / {_fmt(overall.get('total'))}"])
    if analogy:
        blocks.append(Table(["analogies", "method", "overall", "semantic", "syntactic", "questions covered"], analogy))
    return blocks


def build_blocks(runs: list[Run]) -> list[Block]:
    """The whole report, in reading order."""
    names = ", ".join(r.label for r in runs)
    blocks: list[Block] = [
        Heading(f"nlp_ssl run report: {names}", 1),
        Paragraph(f"{len(runs)} run{'s' if len(runs) > 1 else ''}, written "
                  f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `nlp-ssl report`."),
        Heading("Runs"), _summary(runs), Heading("Training curves"),
    ]
    plots = run_plots(runs)
    blocks += [Image(p.slug, f"{p.title}. {p.caption}", p.png) for p in plots] or [
        Paragraph("No curve: metrics.jsonl holds no numeric record yet.")]
    blocks += [Heading("Evaluation"), *_eval_tables(runs)]
    exported = [(run, path) for run in runs for path in run.images]
    if exported:
        blocks.append(Heading("Figures from the runs"))
        for run, path in exported:
            relative = path.relative_to(run.folder).as_posix()
            blocks.append(Image(_slug(f"{run.label}_{relative[:-4]}"), f"{run.label}: {relative}", path.read_bytes(),
                                source=relative))
    return blocks


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escape, then render `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def to_html(blocks: list[Block], title: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<figure id="{html.escape(block.slug)}"><img alt="{html.escape(block.caption)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{_inline(block.caption)}</figcaption></figure>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- markdown
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], image_dir: Path, markdown_path: Path) -> str:
    """Markdown with each image written as ``image_dir/<slug>.png`` (linked relative to ``markdown_path``)."""
    lines: list[str] = []
    used: set[str] = set()
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            name = block.slug
            while name in used:
                name += "_"
            used.add(name)
            image_dir.mkdir(parents=True, exist_ok=True)
            (image_dir / f"{name}.png").write_bytes(block.png)
            link = (image_dir / f"{name}.png").relative_to(markdown_path.parent).as_posix()
            lines += [f"![{_md_cell(block.caption)}]({link})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)
