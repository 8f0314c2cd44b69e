"""``nlp-ssl eval intrinsic``: word similarity, analogies and neighbours for word vectors or a model.

Mounted under the main CLI with :func:`add_intrinsic_parser`; also runnable on its own::

    python -m nlp_ssl.eval.intrinsic_cli VECTORS [--json FILE] [--similarity FILE ...] [--analogies FILE ...]
        [--neighbours w1,w2,...] [--plots DIR] [--topn N] [--restrict-vocab N] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from nlp_ssl.errors import UserError, exit_on_user_error

__all__ = ["add_intrinsic_parser", "cmd_intrinsic", "main"]


def add_intrinsic_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``intrinsic`` sub-command to an argparse ``subparsers`` object; returns its parser.

    The parser's ``func`` default is :func:`cmd_intrinsic`.
    """
    p = subparsers.add_parser(
        "intrinsic",
        help="word similarity / analogy / neighbour evaluation of word vectors",
        description=(
            "Evaluate word vectors on WordSim353, SimLex-999 and the Google analogy set (shipped with gensim), "
            "plus any files you add. VECTORS is a .kv file, a word2vec text/binary file, a word2vec export "
            "folder, or a transformers model folder / hub id (its input embeddings are used)."
        ),
        epilog="--similarity and --analogies take several files: give VECTORS before them, or end the list with --.",
    )
    p.add_argument("vectors", metavar="VECTORS", help="vectors file, export folder, or transformers model / hub id")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument(
        "--similarity", metavar="FILE", nargs="+", action="extend", default=[],
        help="extra word-pair files ('w1 w2 score' lines) evaluated after the defaults",
    )
    p.add_argument(
        "--analogies", metavar="FILE", nargs="+", action="extend", default=[],
        help="extra analogy files (': section' headers, 'a b c d' lines) evaluated after the defaults",
    )
    p.add_argument("--neighbours", metavar="W1,W2,...", help="comma-separated words to list neighbours for")
    p.add_argument("--plots", metavar="DIR", help="write PCA / t-SNE projections and analogy bar charts to DIR")
    p.add_argument("--topn", type=int, default=10, metavar="N", help="neighbours per word (default 10)")
    p.add_argument(
        "--restrict-vocab", type=int, default=300000, metavar="N",
        help="analogies use only the first N vocabulary words (default 300000, as gensim)",
    )
    p.set_defaults(func=cmd_intrinsic)
    return p


def cmd_intrinsic(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed ``args``; print the report; write JSON and plots. Returns 0."""
    from nlp_ssl.eval.intrinsic import format_report, run_intrinsic
    from nlp_ssl.eval.vectors import load_vectors

    json_path = Path(args.json) if args.json else None
    # Refuse before the evaluation so that a forgotten --overwrite costs nothing.
    if json_path is not None:
        _check_writable(json_path, overwrite=args.overwrite)
    if args.topn < 1:
        raise UserError(f"--topn must be at least 1, got {args.topn}")
    if args.restrict_vocab < 1:
        raise UserError(f"--restrict-vocab must be at least 1, got {args.restrict_vocab}")
    neighbours = [w.strip() for w in args.neighbours.split(",") if w.strip()] if args.neighbours else None

    for extra in [*args.similarity, *args.analogies]:
        if not Path(extra).is_file():
            raise UserError(f"evaluation file not found: {extra}; check the path")
    # Load once here so the plots reuse the vectors (reloading a transformers model costs seconds).
    t0 = time.perf_counter()
    kv = load_vectors(args.vectors)
    load_seconds = time.perf_counter() - t0
    results = run_intrinsic(
        kv,
        similarity_files=args.similarity,
        analogy_files=args.analogies,
        neighbours=neighbours,
        topn=args.topn,
        restrict_vocab=args.restrict_vocab,
    )
    results["source"] = str(args.vectors)
    results["load_seconds"] = load_seconds
    results["seconds"] += load_seconds
    if args.plots:
        results["plots"] = write_plots(kv, results, Path(args.plots))
    print(format_report(results))
    if json_path is not None:
        write_json_atomic(json_path, results, overwrite=args.overwrite)
        print(f"\nwrote {json_path}")
    for item in results.get("plots", []):
        print(f"wrote {item['path']}" if "path" in item else f"note: {item['skipped_plot']}")
    return 0


def write_plots(kv: Any, results: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Projection plots (PCA, t-SNE of the default words) and one bar chart per analogy set."""
    from nlp_ssl.eval.plots import plot_analogy_categories, plot_projection

    folder.mkdir(parents=True, exist_ok=True)
    out: list[dict[str, Any]] = []
    for method in ("pca", "tsne"):
        try:
            out.append(plot_projection(kv, None, folder / f"projection_{method}.png", method=method))
        except UserError as err:
            # A vocabulary without the country/capital words should not lose the numbers already computed.
            out.append({"skipped_plot": f"{method} projection skipped: {err}"})
    seen: set[str] = set()
    for res in results.get("analogy", []):
        stem = res["name"]
        while stem in seen:
            stem += "_"
        seen.add(stem)
        out.append(plot_analogy_categories(res, folder / f"analogy_{stem}.png"))
    return out


def _check_writable(path: Path, *, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another --json file")
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a folder; pass a file name to --json")


def write_json_atomic(path: Path, data: Any, *, overwrite: bool = False) -> None:
    """Write ``data`` as JSON via a temporary file in the same folder and ``os.replace``.

    A crash mid-write leaves either the old file or none, never a truncated one; the temporary file lives in
    the target folder so the final rename cannot cross file systems.
    """
    _check_writable(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # os.open with mode 0o666 honours the umask (mkstemp would leave the result private, 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fout:
            json.dump(_jsonable(data), fout, indent=2, allow_nan=False)
            fout.write("\n")
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _jsonable(obj: Any) -> Any:
    """Tuples to lists, NaN/inf to null, numpy scalars to Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m nlp_ssl.eval.intrinsic_cli VECTORS ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m nlp_ssl.eval.intrinsic_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_intrinsic_parser(sub)
    # Accept both "intrinsic VECTORS ..." (as mounted) and plain "VECTORS ...".
    if not argv or argv[0] != "intrinsic":
        argv = ["intrinsic", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
