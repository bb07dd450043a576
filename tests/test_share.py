"""The shareable report (analysis/share.py): Markdown with the PNGs beside it, one self-contained HTML file
(opened in a real headless browser), data escaped, bad input one line."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from helpers import cli, h100_doc

from analysis.__main__ import main as analysis_main
from analysis.rundoc import write_atomic

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def run_with_pictures(tmp_path):
    doc = h100_doc()
    doc["errors"].append("probe collectives failed: <script>alert(1)</script> | [rank 1] gone")
    doc["health"] = [{"device": "cuda:0", "verdict": "fail", "reasons": ["fail: XID 79 during the run"]}]
    run = write_atomic(doc, tmp_path / "run.json")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([1, 2, 3], [3, 1, 2])
    fig.savefig(tmp_path / "run_bandwidth.png", dpi=100)  # stands for the plot a run writes beside itself
    plt.close(fig)
    return run


def test_markdown_has_the_tables_the_verdicts_and_the_pictures_beside_it(tmp_path, capsys):
    run = run_with_pictures(tmp_path)
    assert analysis_main(["report", str(run), "--format", "md", "-o", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Headline figures and verdicts" in text and "| figure | device | value |" in text
    assert "matmul_peak_bf16_torch" in text and "650.0 TFLOPS" in text
    assert "## Collectives" in text and "## Matmul per dtype" in text
    assert "<script>alert(1)</script> \\| [rank 1] gone" in text  # a pipe would break the table
    assert "![run_bandwidth](run_bandwidth.png)" in text


def test_html_is_one_self_contained_file_with_data_escaped(tmp_path):
    run = run_with_pictures(tmp_path)
    assert analysis_main(["report", str(run), "--format", "html"]) == 0
    page = (tmp_path / "run_report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert re.search(r'<img alt="run_bandwidth" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}">', page)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert '<td class="fail">fail</td>' in page and "XID 79 during the run" in page
    assert "NVIDIA H100 80GB HBM3" in page  # the device facts


@pytest.mark.skipif(BROWSER is None, reason="no headless browser (chromium) installed; .ci/run installs it")
def test_the_html_renders_in_a_real_headless_browser(tmp_path):
    run = run_with_pictures(tmp_path)
    assert analysis_main(["report", str(run), "--format", "html", "-o", str(tmp_path / "r.html")]) == 0
    url = (tmp_path / "r.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [BROWSER, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(np.std(pixels[..., :3])) > 0.05  # not blank: text, table rules and a plot
    dom = subprocess.run(
        [BROWSER, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert (
        "Headline figures and verdicts" in dom and "matmul_peak_bf16_torch" in dom and "650.0 TFLOPS" in dom
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--format", "pdf"], "invalid choice: 'pdf'"),
        (["-o", "x.md"], "the text report goes to the terminal"),
        (["--format", "md", "-o", "REPORT.html"], "should end in .md"),
        (["--format", "html", "-o", "/proc/self/r.html"], "/proc/self"),
    ],
)
def test_bad_report_input_is_one_line(tmp_path, capsys, extra, expected):
    run = write_atomic(h100_doc(), tmp_path / "run.json")
    argv = ["report", str(run), *[str(tmp_path / a) if a == "REPORT.html" else a for a in extra]]
    assert cli(analysis_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
