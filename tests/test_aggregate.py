"""Cross-dataset statistics, time-to-target and the runs table against their definitions."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from runners.report import aggregate as A
from runners.report import build_report
from runners.report import time_to_target as TT
from runners.report.aggregate_files import write_aggregate
from runners.report.runs_table import runs_frame, write_runs_table

from .test_harness import ROOT


# ------------------------------------------------------------------ rliable's statistics
def test_iqm_is_the_mean_of_the_middle_half():
    assert A.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx((3 + 4 + 5 + 6) / 4)
    assert A.iqm([0.0, 10.0, 20.0, 30.0]) == pytest.approx(15.0)
    assert A.iqm(np.array([[1, 2, 3, 4], [4, 4, 4, 40]]), axis=1) == pytest.approx([2.5, 4.0])


def test_stratified_bootstrap_resamples_within_each_dataset():
    # Dataset a always scores 0 and b always 1: any within-stratum resample keeps half 0s, half 1s,
    # so the mean is exactly 0.5 in every resample. An unstratified bootstrap would spread it.
    values, strata = [0, 0, 0, 1, 1, 1], ["a", "a", "a", "b", "b", "b"]
    assert A.stratified_bootstrap_ci(values, strata, np.mean, n_boot=500) == (0.5, 0.5)
    # With spread inside a stratum the interval brackets the point estimate, within the data's range.
    values = [0.1, 0.5, 0.9, 2.0, 2.2, 2.4]
    low, high = A.stratified_bootstrap_ci(values, strata, np.mean, n_boot=2000)
    assert 0.1 < low < np.mean(values) < high < 2.4


def test_probability_of_improvement_counts_pairs_with_ties_half_and_averages_datasets():
    x, y = [1, 2, 3], [2, 2]  # pairs: (1,2)x2 lose, (2,2)x2 tie, (3,2)x2 win -> (2 + 0.5*2) / 6 = 0.5
    point, low, high = A.probability_of_improvement({"d": x}, {"d": y}, n_boot=200)
    assert point == pytest.approx(0.5)
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic  # U of x: #{x>y} + 0.5 #{x=y}
    assert point == pytest.approx(u / (3 * 2))
    two, _, _ = A.probability_of_improvement({"d": x, "e": [5, 6]}, {"d": y, "e": [1, 7]}, n_boot=200)
    assert two == pytest.approx((0.5 + 0.5) / 2)  # e: (5>1, 5<7, 6>1, 6<7) = 2/4
    assert 0 <= low <= point <= high <= 1


def test_friedman_and_ranks_against_a_hand_computation():
    means = pd.DataFrame(
        {"a": [90.0, 80.0, 70.0, 60.0], "b": [85.0, 82.0, 65.0, 55.0], "c": [80.0, 75.0, 60.0, 50.0]},
        index=["d1", "d2", "d3", "d4"],
    )
    ranks = A.average_ranks(means)
    assert ranks.to_dict() == pytest.approx({"a": 1.25, "b": 1.75, "c": 3.0})
    n, k = 4, 3  # Friedman's statistic from the average ranks (Demšar 2006, eq. 1)
    chi2 = 12 * n / (k * (k + 1)) * (sum(r**2 for r in ranks) - k * (k + 1) ** 2 / 4)
    statistic, p = A.friedman(means)
    assert statistic == pytest.approx(chi2) and p == pytest.approx(stats.chi2.sf(chi2, k - 1))
    assert p == pytest.approx(stats.friedmanchisquare(means["a"], means["b"], means["c"]).pvalue)


def test_performance_profile_within_tau_points_of_the_best():
    means = pd.DataFrame({"a": [90.0, 80.0], "b": [89.0, 70.0]}, index=["d1", "d2"])
    prof = A.profile_within(means, taus=[0.0, 1.0, 9.9, 10.0])
    assert prof["a"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert prof["b"].tolist() == [0.0, 0.5, 0.5, 1.0]


def _runs(accs: dict, classes=10) -> pd.DataFrame:
    rows = [
        {
            "dataset": d,
            "optimizer": o,
            "seed": s,
            "final_eval_acc": a,
            "num_classes": classes,
            "run_dir": f"{d}/{o}/{s}",
        }
        for (d, o), vals in accs.items()
        for s, a in enumerate(vals)
    ]
    return pd.DataFrame(rows)


def test_normalised_score_is_one_for_the_best_mean_and_zero_at_chance():
    runs = _runs({("d", "a"): [90.0, 100.0], ("d", "b"): [10.0, 55.0]})
    assert A.scores(runs).tolist() == pytest.approx([(90 - 10) / 85, 1.0 + 5 / 85, 0.0, 45 / 85])


def test_aggregate_writes_the_cd_diagram_for_3_by_3_and_a_note_below(tmp_path):
    big = _runs(
        {
            (d, o): [60 + 10 * i + j + 3 * k for k in range(2)]
            for i, d in enumerate(["d1", "d2", "d3"])
            for j, o in enumerate(["thermolion", "adamw", "lion"])
        }
    )
    result = write_aggregate(big, tmp_path, "s", "thermolion")
    assert (tmp_path / "critical_difference.png").stat().st_size > 5000 and result["nemenyi"] is not None
    assert result["friedman"]["p"] < 1 and (tmp_path / "aggregate.png").exists()
    table = pd.read_csv(tmp_path / "aggregate.csv")
    assert set(table["optimizer"]) == {"thermolion", "adamw", "lion"} and {"iqm_low", "iqm_high"} <= set(table)
    small = tmp_path / "small"
    small.mkdir()
    two = big[big["dataset"] != "d3"]
    result = write_aggregate(two, small, "s", "thermolion")
    assert result["nemenyi"] is None and not (small / "critical_difference.png").exists()
    assert "not enough datasets" in (small / "aggregate.md").read_text()


# ------------------------------------------------------------------ time to target
def test_first_crossing_and_never():
    curve = pd.DataFrame(
        {
            "step": [5, 10, 15, 20],
            "epoch": [0.5, 1, 1.5, 2],
            "seconds": [1, 2, 3, 4],
            "eval_acc": [50, 80, 79, 90],
            "fine": True,
        }
    )
    assert TT.first_crossing(curve, 80.0) == {"steps": 10.0, "epochs": 1.0, "seconds": 2.0}
    assert TT.first_crossing(curve, 85.0)["steps"] == 20.0  # 80 at step 10, then a dip, then 90
    assert TT.first_crossing(curve, 95.0) == {"steps": math.inf, "epochs": math.inf, "seconds": math.inf}


def test_profile_and_benchmark_score_match_a_hand_computation():
    times = pd.DataFrame(
        [  # median steps per (dataset, optimizer)
            {"dataset": "d1", "optimizer": "a", "steps": 10.0},
            {"dataset": "d1", "optimizer": "b", "steps": 20.0},
            {"dataset": "d2", "optimizer": "a", "steps": 50.0},
            {"dataset": "d2", "optimizer": "b", "steps": 25.0},
            {"dataset": "d3", "optimizer": "a", "steps": math.inf},
            {"dataset": "d3", "optimizer": "b", "steps": 30.0},
            {"dataset": "d4", "optimizer": "a", "steps": math.inf},
            {"dataset": "d4", "optimizer": "b", "steps": math.inf},
        ]
    )
    ratios = TT.performance_ratios(times)
    assert ratios.loc["d1"].tolist() == [1.0, 2.0] and ratios.loc["d2"].tolist() == [2.0, 1.0]
    assert ratios.loc["d3"].tolist() == [math.inf, 1.0] and ratios.loc["d4"].tolist() == [math.inf, math.inf]
    prof = TT.profile(ratios, [1.0, 1.99, 2.0, 4.0])
    assert prof["a"].tolist() == [0.25, 0.25, 0.5, 0.5] and prof["b"].tolist() == [0.5, 0.5, 0.75, 0.75]
    # integral of rho from 1 to 4 over 3: a: d1 (4-1)/3 + d2 (4-2)/3, over 4 datasets
    score = TT.benchmark_score(ratios)
    assert score["a"] == pytest.approx((1 + 2 / 3) / 4) and score["b"] == pytest.approx((2 / 3 + 1 + 1) / 4)
    taus = np.linspace(1, 4, 30001)  # the same integral numerically
    assert np.trapezoid(TT.profile(ratios, taus)["a"], taus) / 3 == pytest.approx(score["a"], abs=1e-3)


def test_targets_default_to_the_reference_median_and_a_fixed_number_overrides():
    runs = _runs({("d", "adamw"): [90.0, 92.0, 97.0], ("d", "lion"): [50.0]})
    assert TT.targets(runs) == {"d": 92.0}
    assert TT.targets(runs, fixed=80.0) == {"d": 80.0}
    assert TT.targets(runs, reference="sgd") == {}


# ------------------------------------------------------------------ runs table and end to end
@pytest.mark.slow
def test_report_on_a_real_sweep_writes_aggregate_time_to_target_and_a_parquet_runs_table(tmp_path):
    from .test_harness import run_py

    run_py(
        "-m",
        "optimizer=thermolion,adamw,lion",
        "seed=0,1,2",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.eval_every_steps=4",
        "trainer.progress=off",
        "hydra.callbacks.sweep_summary.report=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        results=tmp_path,
    )
    (tmp_path / "rigorous" / "digits" / "bad" / "seed0").mkdir(parents=True)  # an unreadable run
    (tmp_path / "rigorous" / "digits" / "bad" / "seed0" / "run.json").write_text("{not json")
    summary = build_report(tmp_path, tmp_path / "report")
    section = tmp_path / "report" / "rigorous+epochs=2,eval_every_steps=4,image_size=16"
    for name in (
        "aggregate.md",
        "aggregate.csv",
        "aggregate.png",
        "time_to_target.md",
        "time_to_target.csv",
        "performance_profile.png",
    ):
        assert (section / name).stat().st_size > 100, name
    ttt = summary["protocols"]["rigorous+epochs=2,eval_every_steps=4,image_size=16"]["time_to_target"]
    assert ttt["fine"] and set(ttt["score"]) == {"thermolion", "adamw", "lion"}
    table = pd.read_parquet(tmp_path / "report" / "runs.parquet")
    assert len(table) == 10 and table["status"].value_counts().to_dict() == {"done": 9, "unreadable": 1}
    done = table[table["status"] == "done"]
    assert done["config.optimizer.name"].value_counts().to_dict() == {"thermolion": 3, "adamw": 3, "lion": 3}
    assert (done["best_eval_acc"] >= done["final_eval_acc"]).all() and done["ttt_steps"].notna().all()
    assert done["env.torch"].str.len().min() > 0 and done["code_version"].str.len().min() == 12
    assert json.loads(done["config.optimizer.betas"].dropna().iloc[0]) == [0.9, 0.99]


def test_runs_table_round_trips_through_parquet_and_falls_back_to_csv(tmp_path, monkeypatch):
    records = [
        {
            "run_dir": "a",
            "status": "done",
            "dataset": "d",
            "final_eval_acc": 91.5,
            "info": {
                "config": {"optimizer": {"name": "x", "betas": [0.9, 0.99]}, "seed": 0},
                "environment": {"torch": "2"},
                "code_version": "abc",
            },
        },
        {"run_dir": "b", "status": "failed", "info": {"config": {"optimizer": {"name": "y", "lr": 0.1}}}},
    ]
    frame = runs_frame(records, pd.DataFrame())
    path = write_runs_table(frame, tmp_path)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back.loc[0, "config.optimizer.betas"] == "[0.9, 0.99]" and back.loc[1, "code_version"] == "unrecorded"
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (
            (_ for _ in ()).throw(ImportError(name)) if name == "pyarrow" else real_import(name, *a, **k)
        ),
    )
    path = write_runs_table(frame, tmp_path / "csv")
    monkeypatch.undo()
    assert path.name == "runs.csv" and pd.read_csv(path)["status"].tolist() == ["done", "failed"]


@pytest.mark.slow
def test_bench_report_script_generates_runs_and_times_the_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/bench_report.py", "--runs", "30", "--folder", str(tmp_path / "b")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "30 runs" in proc.stdout and "report:" in proc.stdout
    assert (tmp_path / "b" / "report" / "runs.parquet").exists()


def test_one_run_per_dataset_and_two_datasets_give_no_interval_and_no_rank_test(tmp_path):
    runs = _runs(
        {
            (d, o): [70 + 5 * i + j]
            for i, d in enumerate(["d1", "d2"])
            for j, o in enumerate(["thermolion", "adamw", "lion"])
        }
    )
    result = write_aggregate(runs, tmp_path, "s", "thermolion")
    text = (tmp_path / "aggregate.md").read_text()
    table = text.split("## Ranks")[0]
    assert table.count("(no CI: 1 run on a dataset)") == 3 * 3 + 2  # mean, median, IQM of each; P of two
    assert not re.search(r"\[\d\.\d+, \d\.\d+\]", table)  # no interval printed
    assert result["friedman"] is None and "need ≥ 3 datasets" in text
    two = _runs(
        {
            (d, o): [70 + 5 * i + j, 72 + 5 * i + j]
            for i, d in enumerate(["d1", "d2", "d3"])
            for j, o in enumerate(["thermolion", "adamw", "lion"])
        }
    )
    (tmp_path / "two").mkdir()
    result = write_aggregate(two, tmp_path / "two", "s", "thermolion")
    assert "no CI" not in (tmp_path / "two" / "aggregate.md").read_text() and result["friedman"] is not None
