"""A screenshot of a results folder's runs in TensorBoard, taken in headless Chromium.

    python scripts/screenshot_trackers.py results/tracking_digits [--out results/tracking_digits]

Starts ``tensorboard --logdir DIR/tensorboard`` on a free port of 127.0.0.1, opens it in Debian's chromium
through selenium (``make test-browser`` installs both), waits for the charts to draw, saves
``tensorboard.png`` and stops the server. (MLflow 3.17's UI opens an experiment on its GenAI overview,
not the runs table, so a plain screenshot of it shows no run.)
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(command: list[str], url: str, timeout: float = 90.0):
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{command[0]} did not serve {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _browser(width: int, height: int):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


def _shot(url: str, out: Path, ready_css: str, size=(1600, 1000), settle: float = 4.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser(*size)
    try:
        driver.get(url)
        WebDriverWait(driver, 60).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ready_css)))
        time.sleep(settle)  # the charts animate in
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tag-filter", default="eval/acc|train/loss_step", help="TensorBoard's tag filter")
    args = parser.parse_args()
    out = args.out or args.results
    if (args.results / "tensorboard").is_dir():
        port = _free_port()
        command = [str(BIN / "tensorboard"), "--logdir", str(args.results / "tensorboard"), "--host", "127.0.0.1"]
        with _server([*command, "--port", str(port)], f"http://127.0.0.1:{port}/") as url:
            _shot(f"{url}?tagFilter={args.tag_filter}#timeseries", out / "tensorboard.png", "canvas, svg path")


if __name__ == "__main__":
    main()
