"""index.html in a real browser: Debian's headless Chromium, driven by Selenium (make test-browser).

Each page is opened from disk, as a reader would: it must log no console error, every Plotly figure
must have drawn its traces (read from the DOM after the scripts ran), a click on a legend entry must
hide that optimizer's traces, and a screenshot is taken.
"""

import shutil
import time
from pathlib import Path

import pytest

from runners.report import build_report

from .test_report import FINAL, fake_run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser

EXAMPLES = sorted(p for p in (ROOT / "results").glob("**/index.html"))


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is installed by make setup (dev extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromium-driver are needed: make test-browser installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1800",
        "--allow-file-access-from-files",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


def _open(driver, page: Path) -> list[dict]:
    """Load the page and wait until every figure is drawn; return each figure's (id, traces, drawn)."""
    driver.get(page.as_uri())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        figures = driver.execute_script(
            "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function(gd){"
            "return {id: gd.id, traces: (gd.data || []).length, drawn: gd.querySelectorAll('g.trace').length,"
            "ready: !!gd._fullLayout};});"
        )
        if driver.execute_script("return document.readyState") == "complete" and all(f["ready"] for f in figures):
            return figures
        time.sleep(0.2)
    raise AssertionError(f"{page}: figures not drawn within 60 s")


def _check(driver, page: Path, shot: Path) -> list[dict]:
    figures = _open(driver, page)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    for f in figures:
        assert f["traces"] > 0 and f["drawn"] > 0, f
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    return figures


@pytest.fixture(scope="module")
def fresh_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for (dataset, optimizer), accs in FINAL.items():
        for seed, acc in enumerate(accs):
            fake_run(root, dataset, optimizer, seed, acc)
    fake_run(root, "mnist", "thermolion", 3, 55.0, status="diverged")
    out = root.parent / "report"
    build_report(root, out)
    return out / "index.html"


def test_a_fresh_report_page_draws_every_figure_and_a_legend_click_hides_its_optimizer(browser, fresh_report, tmp_path):
    figures = _check(browser, fresh_report, tmp_path / "page.png")
    convergence = [f for f in figures if "-conv" in f["id"]]
    assert len(convergence) == 3  # one per dataset
    gd = convergence[0]["id"]
    before = browser.execute_script(f"return document.getElementById('{gd}').querySelectorAll('g.trace').length")
    name = browser.execute_script(f"return document.querySelector('#{gd} .legend .traces .legendtext').textContent")
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f"#{gd} .legend .traces .legendtoggle").click()  # a real click
    time.sleep(1.0)  # Plotly waits out its double-click delay before it toggles
    hidden = browser.execute_script(
        "var name = arguments[1];"
        "return document.getElementById(arguments[0]).data"
        ".filter(function(t){return t.legendgroup === name;}).map(function(t){return t.visible;});",
        gd,
        name,
    )
    after = browser.execute_script(f"return document.getElementById('{gd}').querySelectorAll('g.trace').length")
    assert len(hidden) == 3 and all(v == "legendonly" for v in hidden), (name, hidden)  # its line and its band
    assert after < before
    rows = browser.execute_script("return document.querySelectorAll('#runs-body tr.run-row').length")
    assert rows == 19  # every run folder of the results, drawn from the page's JSON (done, diverged)


@pytest.mark.parametrize("page", EXAMPLES, ids=[str(p.parent.relative_to(ROOT)) for p in EXAMPLES])
def test_each_curated_example_page_opens_without_errors_and_draws(browser, page, tmp_path):
    _check(browser, page, tmp_path / "page.png")
