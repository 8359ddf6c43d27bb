"""Issue 42's defects, one test each, on the issue's own run sets: per-dataset blocks with misses at chance,
time to target over the grid's seeds, and a report rebuilt from its own tables (one folder or several)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from runners.report import build_report
from runners.report.blocks import grid

from .test_harness import ROOT
from .test_report import fake_run


def _issue_runs(root):
    """ThermoLion leads mnist (99 vs adam's 95) and trails fashionmnist (70 vs 90), where 2 of its 3 runs failed."""
    for seed in range(3):
        fake_run(root, "mnist", "thermolion", seed, 99.0)
        fake_run(root, "mnist", "adam", seed, 95.0)
        fake_run(root, "fashionmnist", "adam", seed, 90.0)
    fake_run(root, "fashionmnist", "thermolion", 0, 70.0)
    for seed in (1, 2):
        fake_run(root, "fashionmnist", "thermolion", seed, 0.0, status="failed", done=False)


def test_unequal_counts_do_not_bend_the_aggregate_each_dataset_weighs_once_and_a_miss_is_at_chance(tmp_path):
    _issue_runs(tmp_path / "results")
    summary = build_report(tmp_path / "results", tmp_path / "report")
    rows = {r["optimizer"]: r for r in summary["protocols"]["paper"]["aggregate"]["table"]}
    # thermolion: mnist block 99 = the best (score 1); fashionmnist block (70 + 10 + 10) / 3 = 30,
    # score (30 - 10) / (90 - 10) = 0.25; each dataset once: IQM of two = their mean. The old pooling said 1.000.
    assert rows["thermolion"]["iqm"] == pytest.approx((1 + 0.25) / 2)
    assert rows["adam"]["iqm"] == pytest.approx(((95 - 10) / (99 - 10) + 1) / 2)
    assert rows["thermolion"]["missing"] == 2 and rows["thermolion"]["iqm_low"] is None  # a bound: no interval
    assert rows["adam"]["iqm_low"] is not None and rows["adam"]["missing"] == 0
    text = (tmp_path / "report" / "paper" / "aggregate.md").read_text()
    assert "| thermolion (2 missing) | 4 (0) | 2 (fashionmnist 2) |" in text
    assert "0.625 (no CI: incomplete: 2 missing)" in text and "1.000" not in text


def test_a_seed_that_failed_never_reaches_the_target(tmp_path):
    _issue_runs(tmp_path / "results")
    fake_run(tmp_path / "results", "fashionmnist", "thermolion", 0, 95.0)  # its one run reaches 80; 2 failed
    summary = build_report(tmp_path / "results", tmp_path / "report", target=80.0)
    text = (tmp_path / "report" / "paper" / "time_to_target.md").read_text()
    assert "never (1/3, 2 missing)" in text  # the median over the grid's 3 seeds: 2 of them never arrive
    assert summary["protocols"]["paper"]["time_to_target"]["ratios"]["thermolion"]["fashionmnist"] is None
    assert "thermolion (2 missing)" in text


def test_a_dataset_where_every_run_failed_stays_in_the_grid_at_chance():
    runs = pd.DataFrame(
        [
            {"dataset": "a", "optimizer": o, "seed": 0, "final_eval_acc": 80.0, "num_classes": 10, "status": "done"}
            for o in "xy"
        ]
    )
    attempts = pd.DataFrame(
        [{"dataset": "b", "optimizer": o, "seed": 0, "num_classes": 4, "status": "failed"} for o in "xy"]
    )
    g = grid(runs, attempts).set_index(["dataset", "optimizer"])
    assert g.loc[("b", "x"), "acc"] == 25.0 and not g.loc[("b", "x"), "counted"]
    assert g.loc[("b", "x"), "status"] == "failed" and g.loc[("a", "y"), "acc"] == 80.0


def test_a_report_folder_is_rebuilt_from_its_own_tables_and_several_sources_merge(tmp_path):
    _issue_runs(tmp_path / "results")
    one = tmp_path / "results/paper/mnist/adam/seed0/run.json"  # a run that recorded an absolute data root
    info = json.loads(one.read_text())
    info["config"]["data"]["root"] = str(tmp_path / "data")
    one.write_text(json.dumps(info))
    build_report(tmp_path / "results", tmp_path / "report")
    records = " ".join(pd.read_parquet(tmp_path / "report" / "runs.parquet")["record"])
    assert f'"{tmp_path}' not in records and '"@checkout/' in records  # no absolute path in the table
    before = {p.name: p.read_bytes() for p in (tmp_path / "report" / "paper").iterdir()}
    shutil.rmtree(tmp_path / "results")  # the run folders are gone: the report's tables hold everything
    proc = subprocess.run(
        [sys.executable, "-m", "runners.report", str(tmp_path / "report")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "report" / "paper").iterdir()}
    assert before == after
    # another results folder, merged with the report: one section, the runs of both, named by source
    fake_run(tmp_path / "more", "mnist", "lion", 0, 97.0)
    summary = build_report([tmp_path / "report", tmp_path / "more"], tmp_path / "merged")
    runs = pd.read_parquet(tmp_path / "merged" / "runs.parquet")
    assert len(runs) == 13 and summary["complete_runs"] == 11
    assert any(name.endswith("more/paper/mnist/lion/seed0") for name in runs["run_dir"])
    lion = [r for r in summary["protocols"]["paper"]["aggregate"]["table"] if r["optimizer"] == "lion"]
    assert lion[0]["missing"] == 5  # owes seeds 1-2 on mnist and 0-2 on fashionmnist


def test_a_report_made_before_its_tables_held_its_runs_says_how_to_rebuild(tmp_path):
    _issue_runs(tmp_path / "results")
    build_report(tmp_path / "results", tmp_path / "report")
    runs = pd.read_parquet(tmp_path / "report" / "runs.parquet").drop(columns="record")
    runs.to_parquet(tmp_path / "report" / "runs.parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "runners.report", str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no `record` column" in proc.stderr and "Traceback" not in proc.stderr
    two = subprocess.run(
        [sys.executable, "-m", "runners.report", str(tmp_path / "report"), str(tmp_path / "results")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 2 and "--out" in two.stderr
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["complete_runs"] == 10
