"""index.html, the report as one page: read back without a browser here, in a real one in test_browser.py."""

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from runners.report import build_report

from .test_report import FINAL, fake_run

ROOT = Path(__file__).resolve().parents[1]


class Cells(HTMLParser):
    """The runs table's (run, status) pairs and the final tables' cells, as the page holds them."""

    def __init__(self):
        super().__init__()
        self.final, self.scripts, self.runs_json = [], [], ""
        self._cell, self._in_runs = None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td":
            self._cell = {"attrs": a, "text": ""}
        elif tag == "script":
            self.scripts.append(a.get("src"))
            self._in_runs = a.get("id") == "runs-data"

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_runs:
            self.runs_json += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            if "data-dataset" in self._cell["attrs"]:
                self.final.append(self._cell["attrs"])
            self._cell = None
        elif tag == "script":
            self._in_runs = False

    @property
    def runs(self) -> list[tuple[str, str]]:
        """(run folder, status) of every row the page's runs table draws."""
        return [(row[0], row[1]) for row in json.loads(self.runs_json)]


@pytest.fixture
def report(tmp_path):
    root = tmp_path / "results"
    for (dataset, optimizer), accs in FINAL.items():
        for seed, acc in enumerate(accs):
            fake_run(root, dataset, optimizer, seed, acc)
    fake_run(root, "mnist", "thermolion", 3, 55.0, status="diverged")
    fake_run(root, "mnist", "adam", 3, 11.0, status="running", done=False)  # its owner is gone: interrupted
    fake_run(root, "cifar10", "adam", 4, 12.0, status="failed", done=False)
    out = tmp_path / "report"
    build_report(root, out)
    return out


def _parse(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text())
    return cells


@pytest.mark.slow
def test_the_page_names_every_run_with_its_status_and_its_table_is_table_final(report):
    cells = _parse(report / "index.html")
    runs = pd.read_parquet(report / "runs.parquet")
    assert sorted(cells.runs) == sorted(zip(runs["run_dir"], runs["status"]))
    assert {"diverged", "interrupted", "failed", "done"} <= {s for _, s in cells.runs}
    table = pd.read_csv(report / "paper" / "table_final.csv")
    shown = {(c["data-dataset"], c["data-optimizer"]): c for c in cells.final}
    assert len(shown) == len(table)
    for r in table.itertuples():
        cell = shown[(r.dataset, r.optimizer)]
        assert float(cell["data-v"]) == pytest.approx(r.mean, rel=1e-6)
        assert (cell.get("class") == "best") == bool(r.best)


@pytest.mark.slow
def test_the_page_works_offline_and_rebuilds_from_the_folder_alone(report):
    page = (report / "index.html").read_text()
    script = _parse(report / "index.html").scripts[0]
    assert script == "plotly-basic.min.js" and (report / script).stat().st_size > 1e6
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://cdn" not in page
    (report / "index.html").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "runners.report.page", str(report)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (report / "index.html").read_text() == page  # summary.json and runs.parquet hold all it shows
    assert "convergence" in page and "s0-conv0" in page  # the curves came from summary.json


def test_the_vendored_plotly_js_is_the_version_the_python_package_targets():
    from plotly.offline import get_plotlyjs_version

    head = (ROOT / "runners" / "report" / "vendor" / "plotly-basic.min.js").read_text()[:200]
    assert f"plotly.js (basic - minified) v{get_plotlyjs_version()}" in head
