"""Command lines and texts without the absolute paths of the machine that produced them.

A model card travels: the command that trained the model must be copyable on another machine and must not
reveal the user's home folder, virtualenv or scratch disk. Paths under the working directory become
relative, the Python interpreter and the ``nlp-ssl`` console script lose their virtualenv prefix, files of
this repository become repository-relative, and any other absolute path keeps only its last component.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?(\.exe)?$")
# `key=value` overrides and `--option=value` flags: only the value can be a path.
# A POSIX absolute path inside text: "/" plus at least one name, not part of a URL or a fraction ("1/2").
# Only where a path can begin (start, whitespace, quotes, brackets, '='): "80%/10%/10%" is no path.
_ABSOLUTE = re.compile(r"(?<![^\s=(\[\"'`])/(?:[\w.@+\-]+/)*[\w.@+\-]+")
_ASSIGNMENT = re.compile(r"^(--?[\w.-]+=|[A-Za-z_][\w.]*=)(.*)$", re.S)


def _prefixes(cwd: Path | None = None) -> list[tuple[str, str]]:
    """(absolute prefix, replacement) pairs, most specific first."""
    here = Path(cwd or Path.cwd()).resolve()
    pairs: list[tuple[Path, str]] = []
    for key in ("purelib", "platlib"):
        site = sysconfig.get_paths().get(key)
        if site:
            pairs.append((Path(site), ""))
    pairs += [(here, ""), (REPO_ROOT, ""), (Path(sys.prefix), ""), (Path(sys.base_prefix), ""), (Path.home(), "~/")]
    out: list[tuple[str, str]] = []
    for path, replacement in pairs:
        text = str(path).rstrip(os.sep)
        # The file system root or a one-letter folder would eat every path; they are not worth hiding.
        if len(text) > 1 and (text + os.sep, replacement) not in out:
            out.append((text + os.sep, replacement))
    return sorted(out, key=lambda pair: len(pair[0]), reverse=True)


def portable_path(path: str, cwd: Path | None = None) -> str:
    """``path`` without machine-specific parts (relative paths are returned unchanged)."""
    if not os.path.isabs(path):
        return path
    absolute = os.path.normpath(path)
    for prefix, replacement in _prefixes(cwd):
        if absolute.startswith(prefix):
            return replacement + absolute[len(prefix):]
        if absolute == prefix.rstrip(os.sep):
            return replacement.rstrip("/") or "."
    return ".../" + os.path.basename(absolute)


def _program(argv0: str, cwd: Path | None) -> str:
    name = os.path.basename(argv0)
    normalised = argv0.replace(os.sep, "/")
    if name in ("nlp-ssl", "nlp-ssl.exe") or normalised.endswith(("nlp_ssl/cli.py", "nlp_ssl/__main__.py")):
        return "nlp-ssl"
    if _PYTHON.match(name):
        return "python"
    if argv0 == "-c":
        return "python -c"
    if name.endswith(".py"):
        return "python " + shlex.quote(portable_path(argv0, cwd))
    return name


def portable_command(argv: Sequence[str], cwd: Path | None = None) -> str:
    """A shell command line for ``argv`` (e.g. ``sys.argv``) that runs from the repository on any machine.

    For example, with the home folder ``/home/me`` and the working directory ``/home/me/project``,
    ``["/home/me/venv/bin/nlp-ssl", "run", "mlm", "output_dir=/home/me/project/runs/x", "data.corpus=/data/t.txt"]``
    becomes ``nlp-ssl run mlm output_dir=runs/x data.corpus=.../t.txt``.
    """
    if not argv:
        return ""
    parts = [_program(argv[0], cwd)]
    for arg in argv[1:]:
        match = _ASSIGNMENT.match(arg)
        if match:
            arg = match.group(1) + portable_path(match.group(2), cwd)
        else:
            arg = portable_path(arg, cwd)
        parts.append(shlex.quote(arg))
    return " ".join(parts)


def portable_command_string(command: str, cwd: Path | None = None) -> str:
    """:func:`portable_command` of a command that was already joined into one string."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return portable_text(command, cwd)
    return portable_command(argv, cwd) if argv else ""


def portable_text(text: str, cwd: Path | None = None) -> str:
    """Remove machine-specific absolute paths from free text (a YAML config, a usage snippet, a card).

    Known prefixes are replaced as in :func:`portable_path`; any other absolute path keeps its last component.
    URLs are left alone (a path right after ``:`` or ``/`` is not matched).
    """
    for prefix, replacement in _prefixes(cwd):
        text = text.replace(prefix, replacement)
    return _ABSOLUTE.sub(lambda match: portable_path(match.group(0), cwd), text)
