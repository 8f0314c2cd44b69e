"""The ``report`` sub-command and :func:`build_report`."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlp_ssl.errors import UserError
from nlp_ssl.report.render import build_blocks, to_html, to_markdown
from nlp_ssl.report.runs import discover_runs


def build_report(runs: list[Path], out: Path) -> tuple[Path, Path]:
    """Write ``out`` (HTML, figures inline) and its markdown twin ``out.with_suffix('.md')``.

    The twin's PNGs go to ``<out stem>_files/`` beside it. Returns ``(html path, markdown path)``.

    Raises:
        UserError: a path that is not a run folder (no ``metrics.jsonl``), or an output that is a folder.
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out} must end in .html (the markdown twin gets the same name with .md)")
    loaded = discover_runs([Path(p) for p in runs])
    blocks = build_blocks(loaded)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = "nlp_ssl report: " + ", ".join(r.label for r in loaded)
    out.write_text(to_html(blocks, title), encoding="utf-8")
    markdown = out.with_suffix(".md")
    markdown.write_text(to_markdown(blocks, out.parent / f"{out.stem}_files", markdown), encoding="utf-8")
    return out, markdown


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="HTML report (and markdown twin) of one or several runs")
    report.add_argument("runs", nargs="+", type=Path, help="run folders (each holds metrics.jsonl)")
    report.add_argument("--out", type=Path, default=Path("report.html"),
                        help="HTML file to write (default: report.html); the markdown twin takes the .md name")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    html_path, markdown_path = build_report(args.runs, args.out)
    print(f"wrote {html_path} and {markdown_path} (figures in {markdown_path.parent / (html_path.stem + '_files')})")
    return 0
