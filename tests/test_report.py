"""`condlabel inspect` (text, --json, --report) on a real output, and the HTML report's plots."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from pipeline_helpers import make_tagged_output

from condlabel.cli import main
from condlabel.readback import distribution, inspect_output, summarize
from condlabel.report import plot_histogram, render_report

pytestmark = pytest.mark.usefixtures("ray_local")

PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    return make_tagged_output(tmp_path_factory.mktemp("report"))


def _decode_pngs(page: str) -> list:
    images = []
    for b64 in PNG.findall(page):
        raw = base64.b64decode(b64, validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        images.append(matplotlib.image.imread(io.BytesIO(raw), format="png"))
    return images


def test_inspect_json_has_counts_tags_and_distributions(tagged, capsys):
    out, docs, table = tagged
    assert main(["inspect", str(out), "--json", "--top", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == table.num_rows
    assert info["documents"] == len(docs)
    assert info["labelers"] == {table.column("labeler")[0].as_py(): table.num_rows}
    assert info["parse_failures"] == 0 and info["parse_failure_rate"] == 0.0
    assert len(info["top_tags"]) == 5
    assert info["top_tags"][0][1] >= info["top_tags"][-1][1]
    # The keyphrase labeler does not score: the log-prob distribution is all null, not an error.
    assert info["logprob"]["count"] == 0 and info["logprob"]["null"] == table.num_rows
    assert info["logprob"]["p50"] is None
    words = table.column("num_words").to_pylist()
    assert info["num_words"]["sum"] == sum(words)
    assert info["num_words"]["p00"] == min(words) and info["num_words"]["p100"] == max(words)
    assert info["chunks_per_document"]["count"] == len(docs)
    assert info["chunks_per_document"]["sum"] == table.num_rows
    assert [s["doc_id"] for s in info["samples"]] == table.column("doc_id").to_pylist()[:2]
    assert all(s["conditional_text"].startswith("Synopsis: ") for s in info["samples"])


def test_inspect_text_output(tagged, capsys):
    out, docs, table = tagged
    assert main(["inspect", str(out), "--top", "3", "--samples", "1"]) == 0
    text = capsys.readouterr().out
    assert f"rows {table.num_rows:,}  documents {len(docs):,}" in text
    assert "logprob          all null" in text
    assert "top tags: (" in text
    assert text.count("\n--- ") == 1


def test_report_has_the_plots_and_they_decode(tagged, tmp_path, capsys):
    out, _, table = tagged
    report = tmp_path / "report.html"
    assert main(["inspect", str(out), "--json", "--report", str(report)]) == 0
    assert f"report: {report}" in capsys.readouterr().err
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page  # self-contained
    images = _decode_pngs(page)
    assert len(images) == 2  # tag frequencies and chunk lengths; no log-probs to plot here
    for image in images:
        height, width = image.shape[:2]
        assert width >= 300 and height >= 150
        assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    assert 'alt="tag frequencies"' in page and 'alt="chunk length histogram"' in page
    assert "No log-probabilities" in page
    top_tag = summarize(table)["top_tags"][0][0]
    assert f"<td>{top_tag}</td>" in page
    assert table.column("labeler")[0].as_py() in page


def test_report_plots_a_logprob_histogram_when_there_are_scores(tagged):
    _, _, table = tagged
    # Scores as a model-based labeler writes them (sums of token log-probs, some rows unscored).
    scores = [-(3.0 + (i % 17) * 1.7) for i in range(table.num_rows - 1)] + [None]
    scored = table.set_column(table.schema.get_field_index("logprob"), "logprob", [scores])
    info = summarize(scored)
    assert info["logprob"]["count"] == table.num_rows - 1 and info["logprob"]["null"] == 1
    page = render_report(info, scored, "scored-output")
    assert 'alt="log-probability histogram"' in page and "No log-probabilities" not in page
    assert len(_decode_pngs(page)) == 3
    assert plot_histogram([None, None], "t", "x") is None


def test_distribution_of_an_empty_or_null_column():
    import pyarrow as pa

    assert distribution(pa.array([], pa.float64()))["p50"] is None
    stats = distribution(pa.array([None, 2.0, 4.0]))
    assert (stats["count"], stats["null"], stats["mean"], stats["p00"], stats["p100"]) == (
        2,
        1,
        3.0,
        2.0,
        4.0,
    )


def test_inspect_output_reads_only_what_it_needs(tagged):
    out, _, table = tagged
    info, read = inspect_output(str(out), samples=1)
    assert "text" not in read.column_names and "conditional_text" not in read.column_names
    assert read.num_rows == table.num_rows == info["rows"]
    assert len(info["samples"]) == 1 and info["samples"][0]["conditional_text"]


def test_report_without_matplotlib_says_what_to_install(tagged, tmp_path):
    out, _, _ = tagged
    # A fresh interpreter in which `import matplotlib` fails, as on an install without the extra.
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from condlabel.cli import main\n"
        f"sys.exit(main(['inspect', {str(out)!r}, '--report', {str(tmp_path / 'r.html')!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 2  # a missing extra is a configuration problem (README exit codes)
    assert "pip install 'condlabel[report]'" in proc.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tagged, tmp_path):
    out, _, _ = tagged
    report = tmp_path / "report.html"
    assert main(["inspect", str(out), "--report", str(report)]) == 0
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1100,2400",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    image = matplotlib.image.imread(shot)
    assert image.shape[0] == 2400 and image.shape[1] == 1100
    # The page is not blank: the plots (coloured bars) and the text are rendered.
    assert image[..., :3].std() > 0.05
    blue = (image[..., 2] > 0.55) & (image[..., 0] < 0.45)  # the tag-frequency bars (#4C72B0)
    assert blue.sum() > 1000
    shutil.copy(shot, tmp_path / "kept.png")
