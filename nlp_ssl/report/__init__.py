"""``nlp-ssl report``: one self-contained HTML page (and a markdown twin) for one or several runs.

Curves come from each run's ``metrics.jsonl`` (several runs overlaid), tables from ``final/eval_results.json``
and ``final/intrinsic.json``, and every PNG the run exported under ``final/`` is shown as it is.
"""

from __future__ import annotations

from nlp_ssl.report.cli import add_report_parser, build_report, cmd_report

__all__ = ["add_report_parser", "build_report", "cmd_report"]
