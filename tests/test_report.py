"""``nlp-ssl report``: the self-contained HTML page, its markdown twin, bad input, and a headless-browser check."""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fake_hub import ptb_lines

CHROMIUM = Path("/usr/bin/chromium")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_records(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def make_lm_run(root: Path) -> Path:
    """A masked-LM run folder in the engine's format: 40 steps, logged every 5, evaluated every 20."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    config = yaml.safe_load((REPO / "recipes/configs/mlm/debug.yaml").read_text())
    config.update(output_dir=str(root), max_steps=40)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    records = []
    for step in range(5, 41, 5):
        records.append({"step": step, "train/accuracy": 0.002 * step, "train/loss": 6.9 - 0.02 * step,
                        "train/grad_norm": 1.4 - 0.005 * step, "train/lr": 1e-3 * (40 - step) / 38,
                        "train/epoch": step / 160, "train/tokens_per_sec": 2.0e4 + 300 * step,
                        "perf/tflops": 0.004, "perf/mfu_cpu": 0.027})
        if step % 20 == 0:
            records.append({"step": step, "eval/accuracy": 0.001 * step, "eval/loss": 6.85 - 0.015 * step,
                            "eval/perplexity": 900.0 - 3 * step, "eval/items": 586.0})
    records.insert(3, dict(records[2]))  # an event logged twice, as a resumed run can leave it
    write_records(root / "metrics.jsonl", records)
    with (root / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 45, "train/lo')  # a line cut short by a kill
    final = root / "final"
    (final / "plots").mkdir(parents=True)
    (final / "eval_results.json").write_text(json.dumps({"eval/accuracy": 0.04, "eval/loss": 6.25,
                                                         "eval/perplexity": 780.0, "eval/items": 586.0}))
    (final / "trainer_state.json").write_text(json.dumps({"step": 40, "max_steps": 40, "complete": True,
                                                          "epoch": 0, "train_seconds": 3.2}))
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.hist([len(line.split()) for line in ptb_lines(3000)], bins=30)
    ax.set_title("PTB sentence lengths")
    fig.savefig(final / "plots" / "sentence_lengths.png", dpi=80)
    return root


def make_word2vec_run(root: Path) -> Path:
    """A word2vec run folder: vectors trained on PTB, the real intrinsic evaluation and its plots."""
    from gensim.models import Word2Vec

    from nlp_ssl.eval.intrinsic import run_intrinsic
    from nlp_ssl.eval.intrinsic_cli import write_plots

    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"output_dir": str(root), "data": {"corpus": "ptb"}}))
    write_records(root / "metrics.jsonl", [
        {"step": s, "train/kept_fraction": 0.7, "train/loss": 4.2 - 0.02 * s, "train/lr": 0.025 * (1 - s / 60),
         "train/epoch": s / 30, "train/words_per_sec": 3.0e5 + 1e3 * s} for s in range(5, 61, 5)])
    final = root / "final"
    final.mkdir()
    model = Word2Vec([line.split() for line in ptb_lines(3000)], vector_size=16, window=3, min_count=3, epochs=1,
                     workers=1, seed=0)
    intrinsic = run_intrinsic(model.wv)
    intrinsic["plots"] = write_plots(model.wv, intrinsic, final / "plots")
    (final / "intrinsic.json").write_text(json.dumps(intrinsic, default=str))
    similarity = intrinsic["similarity"][0]
    (final / "eval_results.json").write_text(json.dumps({"wordsim353/spearman": similarity["spearman"],
                                                         "questions-words/covered": 719.0}))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [make_lm_run(root / "mlm-small"), make_word2vec_run(root / "w2v-small")]


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values.get("src") or "")
        for key in ("src", "href"):
            if values.get(key):
                self.urls.append(values[key])


def inline_images(html_text: str) -> list[bytes]:
    parser = _Images()
    parser.feed(html_text)
    # Self-contained: every reference is an inline PNG, nothing to fetch.
    assert all(url.startswith("data:image/png;base64,") for url in parser.urls), parser.urls
    return [base64.b64decode(src.split(",", 1)[1]) for src in parser.sources]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> tuple[Path, Path]:
    from nlp_ssl.report import build_report

    return build_report(runs, tmp_path_factory.mktemp("report") / "report.html")


# ---------------------------------------------------------------------------------------------- content
def test_html_holds_every_curve_and_every_exported_png_inline(runs, report):
    html_path, _ = report
    text = html_path.read_text()
    images = inline_images(text)
    exported = [p.read_bytes() for run in runs for p in sorted((run / "final").rglob("*.png"))]
    assert len(exported) == 4  # the LM run's plot, the word2vec projections (PCA, t-SNE) and analogy chart
    # Curves: loss, learning rate, throughput (tokens/s and words/s panels), the other metrics.
    assert len(images) == 4 + len(exported)
    for data in images:
        width, height = png_size(data)
        assert width > 100 and height > 100
    for data in exported:
        assert data in images
    for caption in ("Loss.", "Learning rate.", "Throughput.", "Other logged metrics.",
                    "mlm-small: final/plots/sentence_lengths.png", "w2v-small: final/plots/projection_tsne.png"):
        assert caption in text, caption


def test_html_tables_show_runs_and_evaluations(runs, report):
    text = report[0].read_text()
    # The run summary: steps from trainer_state.json, last losses from metrics.jsonl.
    assert re.search(r"<td>mlm-small</td>.*?<td>ptb</td><td>40</td><td>3.2 s</td><td>6.1000</td><td>6.2500</td>", text)
    assert "<td>eval/perplexity</td><td>780</td><td>–</td>" in text and "<td>eval/items</td><td>586</td>" in text
    intrinsic = json.loads((runs[1] / "final" / "intrinsic.json").read_text())
    spearman = intrinsic["similarity"][0]["spearman"]
    assert f"<td>wordsim353</td><td>{spearman:.4f}</td>" in text
    assert "<td>questions-words</td><td>3cosadd</td>" in text


def test_markdown_twin_links_the_same_pngs_written_beside_it(report):
    html_path, markdown_path = report
    markdown = markdown_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    files = [markdown_path.parent / link for link in links]
    assert all(f.is_file() and f.parent == markdown_path.parent / "report_files" for f in files)
    assert sorted(f.read_bytes() for f in files) == sorted(inline_images(html_path.read_text()))
    assert "| metric | mlm-small | w2v-small |" in markdown


def test_curves_overlay_runs_and_skip_repeated_or_cut_lines(runs):
    from nlp_ssl.report.figures import loss_plot, throughput_plot
    from nlp_ssl.report.runs import discover_runs

    lm, w2v = discover_runs(runs)
    assert lm.series("train/loss")[0] == [5, 10, 15, 20, 25, 30, 35, 40]  # the repeat and the cut line are gone
    assert lm.series("eval/loss") == ([20, 40], [pytest.approx(6.55), pytest.approx(6.25)])
    both, alone = loss_plot([lm, w2v]), loss_plot([lm])
    assert both.png != alone.png and png_size(both.png)[1] == png_size(alone.png)[1]
    # Two throughput units, one panel each: the figure is about twice as tall as a one-unit figure.
    assert png_size(throughput_plot([lm, w2v]).png)[1] > 1.6 * png_size(throughput_plot([lm]).png)[1]


def test_a_fine_tuning_folder_reports_each_seed(tmp_path):
    from nlp_ssl.report.runs import discover_runs

    for seed in (1, 2):
        (tmp_path / "ft" / f"seed_{seed}").mkdir(parents=True)
        write_records(tmp_path / "ft" / f"seed_{seed}" / "metrics.jsonl", [{"step": 1, "train/loss": 1.0 / seed}])
    found = discover_runs([tmp_path / "ft"])
    assert [r.label for r in found] == ["seed_1", "seed_2"]


# ---------------------------------------------------------------------------------------------- bad input
def run_cli(argv: list[str]) -> int:
    from nlp_ssl.errors import exit_on_user_error
    from nlp_ssl.report import add_report_parser

    parser = argparse.ArgumentParser(prog="nlp-ssl")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return exit_on_user_error(args.func)(args)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize("case", ["not a run", "missing", "out is a folder"])
def test_bad_input_is_one_line(case, runs, tmp_path, capsys):
    (tmp_path / "final").mkdir()
    target = {"not a run": tmp_path, "missing": tmp_path / "nope"}.get(case, runs[0])
    out = tmp_path if case == "out is a folder" else tmp_path / "r.html"
    assert run_cli(["report", str(target), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert {"not a run": "no metrics.jsonl", "missing": "no run folder", "out is a folder": "is a folder"}[case] in err
    assert not (tmp_path / "r.html").exists()


def test_cli_writes_both_files(runs, tmp_path, capsys):
    assert run_cli(["report", str(runs[0]), "--out", str(tmp_path / "one.html")]) == 0
    assert (tmp_path / "one.html").is_file() and (tmp_path / "one.md").is_file()
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- in a browser
_PROBE = """<script>
window.addEventListener("load", () => {
  const rows = [];
  for (const img of document.images) {
    img.scrollIntoView({block: "center"});
    const box = img.getBoundingClientRect();
    const style = getComputedStyle(img);
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    rows.push([img.complete, img.naturalWidth, img.naturalHeight, Math.round(box.width), Math.round(box.height),
               style.visibility, style.display, hit === img]);
  }
  document.body.setAttribute("data-images", JSON.stringify(rows));
});
</script>"""


def test_report_figures_decode_and_show_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: apt-get update && apt-get install -y chromium")
    html_path, _ = report
    page = tmp_path / "probe.html"
    page.write_text(html_path.read_text().replace("</body>", _PROBE + "</body>"))
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=10000",
               "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=25)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'data-images="([^"]*)"', result.stdout)
    assert match, result.stdout[:2000]
    rows = json.loads(match.group(1).replace("&quot;", '"'))
    expected = [png_size(data) for data in inline_images(html_path.read_text())]
    assert len(rows) == len(expected) > 0
    for (complete, width, height, box_w, box_h, visibility, display, hit), size in zip(rows, expected):
        assert complete and (width, height) == size  # the browser decoded the very PNG that was embedded
        assert box_w > 100 and box_h > 50 and visibility == "visible" and display != "none" and hit
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
