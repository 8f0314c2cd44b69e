"""scripts/gcide_corpus.py on a small file in GCIDE's dictzip text format (entries as the dictd file has them)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gcide_corpus.py"

ENTRIES = '''Abuse \\A*buse"\\, v. t. [F. abuser; L. abusus, p. p. of abuti to
   abuse, misuse.]
   1. To put to a wrong use; to misapply; to misuse; to put to a
      bad use; to use for a wrong purpose or end; to pervert.
      [1913 Webster]

            This principle (if one may so abuse the word) shoots
            rapidly into popularity.              --Froude.
      [1913 Webster]

Abuse \\A*buse"\\, n. [F. abus, L. abusus. See {Abuse}, v. t.]
      [1913 Webster]
'''


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_entries_become_plain_paragraphs(tmp_path):
    source = tmp_path / "gcide.dict.dz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        handle.write(ENTRIES)
    out = tmp_path / "gcide.jsonl"
    proc = _run(str(out), "--source", str(source))
    assert proc.returncode == 0, proc.stderr
    texts = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert texts == [
        "Abuse , v. t. 1. To put to a wrong use; to misapply; to misuse; to put to a bad use; to use for a "
        "wrong purpose or end; to pervert.",
        "This principle (if one may so abuse the word) shoots rapidly into popularity. --Froude.",
    ]  # the second headword line is under five words once its markup is gone
    again = _run(str(out), "--source", str(source))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_missing_source_names_the_package(tmp_path):
    proc = _run(str(tmp_path / "out.jsonl"), "--source", str(tmp_path / "missing.dz"))
    assert proc.returncode == 2 and "apt-get install dict-gcide" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()
