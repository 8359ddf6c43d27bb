"""How fast the report reads a large results folder: synthetic complete runs, then the real report.

    python scripts/bench_report.py [--runs 10000] [--epochs 12] [--folder /tmp/bench_report]

Writes --runs complete run folders (run.json, metrics.csv, DONE in the trainer's format) spread over
the 12 paper datasets x 9 paper optimizers x as many seeds as needed, with plausible learning curves,
then times ``python -m runners.report <folder>`` in a fresh process (imports included). The goal
10,000 runs of 12 epochs in under 60 s on 2 cores. Then the page alone (``runners.report.page``), its size,
and where Debian's chromium and chromedriver are installed, how long it takes to open with every figure drawn.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from runners.train.datasets import DATASETS, PAPER_DATASETS  # noqa: E402
from thermolion import PAPER_OPTIMIZERS  # noqa: E402

COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "lr",
    "eval_loss",
    "eval_acc",
    "train_time_s",
    "epoch_time_s",
    "step_time_ms",
]


def write_runs(folder: Path, n: int, epochs: int) -> None:
    rng = np.random.default_rng(0)
    cells = [(d, o) for d in PAPER_DATASETS for o in PAPER_OPTIMIZERS]
    for i in range(n):
        dataset, opt = cells[i % len(cells)]
        seed = i // len(cells)
        run_dir = folder / "paper" / dataset / opt / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        chance = 100.0 / DATASETS[dataset].num_classes
        ceiling = rng.uniform(70, 99)
        with (run_dir / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for e in range(1, epochs + 1):
                acc = ceiling - (ceiling - chance) * np.exp(-e / 3) + rng.normal(0, 0.3)
                w.writerow([e, 5 * e, 2.3 * np.exp(-e / 4), acc + 1, 1e-3, 2 * np.exp(-e / 4), acc, 2.5, 3.0, 40.0])
        info = {
            "status": "done",
            "code_version": "0123456789ab",
            "seed": seed,
            "epochs_done": epochs,
            "sizes": {"train": 5000, "eval": 5000, "eval_split": "train"},
            "data_notes": [],
            "config": {
                "protocol": "paper",
                "seed": seed,
                "results_dir": str(folder),
                "tuned_from": None,
                "trial": None,
                "search_space": None,
                "model": {"name": "convnet"},
                "optimizer": {"name": opt, "lr": 1e-3},
                "data": {"name": dataset, "image_size": 32, "train_subset": 5000, "eval_split": "train"},
                "trainer": {"epochs": epochs, "batch_size": 1024},
            },
            "environment": {"torch": "2.14.1", "device": "cpu", "hostname": "bench"},
        }
        (run_dir / "run.json").write_text(json.dumps(info))
        (run_dir / "DONE").write_text("done\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--folder", type=Path, default=Path("/tmp/bench_report"))
    args = ap.parse_args()
    shutil.rmtree(args.folder, ignore_errors=True)
    t0 = time.perf_counter()
    write_runs(args.folder, args.runs, args.epochs)
    print(f"wrote {args.runs} runs x {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "runners.report", str(args.folder)], cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"the report failed:\n{proc.stderr}")
    print(proc.stdout.strip())
    print(f"report: {seconds:.1f} s for {args.runs} runs (goal: under 60 s on 2 cores for 10,000)")
    out = args.folder / "report"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runners.report.page", str(out)], cwd=ROOT, capture_output=True, check=True)
    page = out / "index.html"
    print(
        f"index.html alone: {time.perf_counter() - t0:.1f} s (imports included), {page.stat().st_size / 2**20:.1f} MiB"
    )
    opened = open_seconds(page)
    if opened is not None:
        print(f"index.html in headless Chromium: {opened:.1f} s from navigation to every figure drawn (goal: a few)")


def open_seconds(page: Path):
    """Seconds from navigation until every figure of ``page`` is drawn, in Debian's headless Chromium
    (None when chromium, chromedriver or selenium is missing)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        return None
    if not chromium or not driver_path:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        t0 = time.perf_counter()
        driver.get(page.as_uri())  # returns once the page and its scripts have loaded
        ready = (
            "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".every(function(g){return !!g._fullLayout;})"
        )
        while not driver.execute_script(ready):
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
