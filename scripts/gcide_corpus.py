"""Write the Collaborative International Dictionary of English (GCIDE) as a JSON-lines corpus.

    apt-get install dict-gcide
    python scripts/gcide_corpus.py gcide.jsonl
    python scripts/bench_word2vec.py --corpus gcide.jsonl --arch both --threads 1 --epochs 3

GCIDE (Webster's 1913 and later additions, GPL) is English prose that installs from Debian without the
Hub: definitions, usage notes and quotations, about 4.3M words. It is a check on text this repository does
not ship: each entry paragraph becomes one example (``{"text": ...}``), with the dictionary's markup
removed (source tags such as ``[1913 Webster]``, pronunciations between backslashes, cross-reference braces).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

DEFAULT_SOURCE = Path("/usr/share/dictd/gcide.dict.dz")  # dictzip is gzip-compatible
MIN_WORDS = 5  # headword lines and stray fragments are shorter


def paragraphs(raw: str) -> list[str]:
    """The dictionary text as paragraphs of plain prose, one per entry block."""
    raw = re.sub(r"\[[^\]]*\]", " ", raw)  # [1913 Webster], [Obs.], bracketed etymologies
    raw = re.sub(r"\\[^\\\n]*\\", " ", raw)  # pronunciations: \A*buse"\
    raw = raw.replace("{", "").replace("}", "")  # cross-references: {Abuse}
    blocks = (" ".join(block.split()) for block in re.split(r"\n\s*\n", raw))
    return [block for block in blocks if len(block.split()) >= MIN_WORDS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the JSON-lines file to write")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"GCIDE dictzip file ({DEFAULT_SOURCE})")
    args = parser.parse_args()
    if not args.source.is_file():
        print(f"error: {args.source} not found; install GCIDE with `apt-get install dict-gcide` or pass --source",
              file=sys.stderr)
        return 2
    if args.output.exists():
        print(f"error: {args.output} exists; choose another path or remove it", file=sys.stderr)
        return 2
    with gzip.open(args.source) as handle:
        texts = paragraphs(handle.read().decode("utf-8", errors="replace"))
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps({"text": text}) + "\n")
    tmp.replace(args.output)
    print(f"{args.output}: {len(texts):,} paragraphs, {sum(len(t.split()) for t in texts):,} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
